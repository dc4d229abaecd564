"""A run's records (metrics.jsonl, results.csv, TensorBoard / W&B), its figures and its progress display."""
