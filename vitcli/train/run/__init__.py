"""One run: config -> plan -> data and model -> the loop -> the run folder; resume, checkpoints, signals."""
