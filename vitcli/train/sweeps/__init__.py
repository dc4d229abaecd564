"""Sweeps: a grid of runs, each a normal run folder, resumable setting by setting."""
