"""Knowledge distillation: `--teacher MODEL --distill logit|token` (DeiT's answer to "ViT needs huge data").

    logit   loss = (1 - alpha) x label loss + alpha x T^2 x KL(softmax(teacher / T) || softmax(student / T))
            (Hinton et al.: soft targets at temperature T, `--distill-temp`, the KL averaged over the batch
            and scaled by T^2 so its gradients keep their size whatever T; DeiT's soft variant, whose
            defaults vitcli takes: T = 1, alpha = 0.5)
    token   DeiT's hard-label distillation through the distillation token, for `deit_*_distilled`
            architectures (timm's VisionTransformerDistilled: `head` on the class token, `head_dist` on the
            distillation token; `set_distilled_training(True)` makes training return both):
            loss = (1 - alpha) x label loss(head) + alpha x CE(head_dist, argmax of the teacher)

The teacher is any model the resolver opens (a timm name, hf-hub: id, local or run folder) with the
student's classes; it runs in eval mode without gradients, on the student's batch (after mixup / cutmix,
as DeiT does), moved to its own input size and normalisation when they differ. In eval mode timm's
distilled models answer the mean of the two heads, as DeiT evaluates them, so `vit eval`, `vit predict`
and the loop's own evaluation need nothing more.

Teacher logits are not cached: every training view is a new random crop / flip / RandAugment / mixup
of its image, and the student must match the teacher on that very view (Beyer et al. 2022, "a good
teacher is patient and consistent"), so a cache keyed by image would either never hit or teach the
wrong targets. Only a run without any augmentation could reuse them; it is not worth a code path.
"""

from __future__ import annotations

from vitcli.errors import UsageError

MODES = ("logit", "token")


def check(cfg) -> None:
    """The distillation settings, at config time (torch-free)."""
    teacher, mode = getattr(cfg, "teacher", None), getattr(cfg, "distill", None)
    if teacher is None and mode is None:
        return
    if mode is None:
        raise UsageError(
            "--teacher given without --distill",
            "add --distill logit (soft KL) or --distill token (DeiT's distillation token)",
        )
    if mode not in MODES:
        raise UsageError(f"unknown --distill {mode!r}", f"use {', '.join(MODES)}")
    if not teacher:
        raise UsageError(f"--distill {mode} needs --teacher MODEL", "e.g. a fine-tuned run folder of the same classes")
    plain_name = "/" not in str(cfg.model) and ":" not in str(cfg.model)  # a timm name (folders: checked at the start)
    if mode == "token" and plain_name and "distilled" not in str(cfg.model):
        raise UsageError(
            f"--distill token needs a distilled architecture, not {cfg.model}",
            "e.g. --model deit_tiny_distilled_patch16_224 (or use --distill logit)",
        )
    for name, value, ok in (
        ("--distill-temp", cfg.distill_temp, lambda v: v > 0),
        ("--distill-alpha", cfg.distill_alpha, lambda v: 0 <= v <= 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise UsageError(f"{name} {value!r}: expected {'a number > 0' if 'temp' in name else 'a number in [0, 1]'}")


class Distiller:
    """The loss of a distilled step: the label loss mixed with the teacher's."""

    def __init__(self, cfg, student, criterion, runtime, label_names: list, dist):
        import torch

        from vitcli.models.resolver import data_config_for, load_model
        from vitcli.train.scale import distributed

        self.mode, self.alpha, self.temp = cfg.distill, float(cfg.distill_alpha), float(cfg.distill_temp)
        self.criterion, self.rt = criterion, runtime
        if not dist.main:
            distributed.barrier(dist)  # rank 0 downloads the teacher first
        loaded = load_model(cfg.teacher, device=runtime.device)
        if dist.main:
            distributed.barrier(dist)
        self.teacher = loaded.model.eval().requires_grad_(False)
        classes = getattr(self.teacher, "num_classes", None)
        if classes != len(label_names):
            raise UsageError(
                f"the teacher {cfg.teacher} has {classes} classes, the dataset {len(label_names)}",
                "distil from a teacher of the dataset's classes (e.g. a run folder fine-tuned on it)",
            )
        names = list(loaded.label_names or [])
        if names and names != list(label_names):
            if sorted(names) == sorted(label_names):
                raise UsageError(
                    f"the teacher {cfg.teacher} has the dataset's classes in another order",
                    "distil from a teacher fine-tuned on this dataset (its run folder)",
                )
            if dist.main:
                from vitcli import output

                output.warn(
                    f"the teacher's class names are not the dataset's ({names[0]!r}... vs "
                    f"{label_names[0]!r}...): taking its class i as the dataset's class i"
                )
        if self.mode == "token":
            if not hasattr(student, "set_distilled_training"):
                raise UsageError(
                    f"--distill token needs a model with a distillation token, not {cfg.model}",
                    "e.g. --model deit_tiny_distilled_patch16_224",
                )
            student.set_distilled_training(True)
        s, t = data_config_for(student), loaded.data_config or data_config_for(self.teacher)
        self.size = tuple(t["input_size"][-2:]) if tuple(t["input_size"]) != tuple(s["input_size"]) else None

        def channels(values):
            return torch.tensor(values, dtype=torch.float32, device=runtime.device).view(1, 3, 1, 1)

        self.renorm = None
        if self.size or tuple(s["mean"]) != tuple(t["mean"]) or tuple(s["std"]) != tuple(t["std"]):
            self.renorm = (channels(s["mean"]), channels(s["std"]), channels(t["mean"]), channels(t["std"]))

    def teacher_logits(self, images):
        """The teacher on the student's batch, moved to its input size and normalisation."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            x = images
            if self.renorm is not None:
                s_mean, s_std, t_mean, t_std = self.renorm
                x = images.float() * s_std + s_mean  # the pixels in [0, 1]
                if self.size:
                    x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False)
                x = (x - t_mean) / t_std
            with self.rt.autocast():
                return self.teacher(x).float()

    def loss(self, images, output, targets):
        """The step's loss from the student's output (a (class, distillation) pair for `token`)."""
        import torch.nn.functional as F

        teacher = self.teacher_logits(images)
        if self.mode == "token":
            cls, dist = output
            base = self.criterion(cls.float(), targets)
            kd = F.cross_entropy(dist.float(), teacher.argmax(-1))
        else:
            base = self.criterion(output.float(), targets)
            t = self.temp
            kd = F.kl_div(
                F.log_softmax(output.float() / t, -1),
                F.log_softmax(teacher / t, -1),
                reduction="batchmean",
                log_target=True,
            ) * (t * t)
        return (1 - self.alpha) * base + self.alpha * kd


def make(cfg, student, criterion, runtime, label_names, dist) -> Distiller | None:
    """The run's Distiller, or None without --distill."""
    if not getattr(cfg, "distill", None):
        return None
    return Distiller(cfg, student, criterion, runtime, label_names, dist)
