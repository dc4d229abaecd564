"""Evaluation: what is evaluated (splits), metrics, few-shot linear probes and the report files (`vit eval`)."""
