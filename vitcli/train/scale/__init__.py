"""More than one process: torchrun's world (DDP), FSDP2 per block, the world layout of --dry-run."""
