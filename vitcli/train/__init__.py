"""Training: configs and recipes, the run, the loop, optimizers, checkpoints, run folders, distributed
training, interrupts and sweeps (`vit finetune`, `vit train`)."""
