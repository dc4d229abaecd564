"""What a recipe is made of: the papers' recipes and the auto budget, the LP-FT probe, optimizer and
schedule, regularisation (mixup/cutmix, label smoothing, EMA), distillation, multi-label training."""
