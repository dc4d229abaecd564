"""Training (`vit finetune`, `vit train`), in parts:

- `launch.py`: what the flags ask for, a new run, a resumed run or a sweep;
- `run/`: one run, config -> plan -> loop -> run folder, and its one resume path;
- `recipe/`: what a recipe is made of: the papers' recipes, the auto budget, the LP-FT probe, the
  optimizer and schedule, regularisation, distillation, multi-label training;
- `report/`: a run's records, figures and progress display;
- `sweeps/`: grids of runs;
- `scale/`: more than one process: DDP, FSDP2, the torchrun world.
"""
