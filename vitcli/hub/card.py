"""The model card (README.md) of a run folder, as `vit push` uploads it: the Hub metadata (library timm,
image-classification, the base model and dataset when they are Hub repositories), the results, the
recipe, the training curve and the command that made the run.

The metadata is huggingface_hub's `ModelCardData`; the rest is read from the run folder (run.json,
config.json, results.csv), so a card can be written for any finished or stopped run.
"""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

from vitcli.train import files
from vitcli.train.run import runs

MARK = "<!-- model card written by vit push; edit it freely: vit push then leaves it as it is -->"
RECIPE_KEYS = (
    "model",
    "dataset",
    "recipe",
    "steps",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup",
    "clip_grad",
    "label_smoothing",
    "img_size",
    "crop_scale",
    "hflip",
    "freeze",
    "patch_size",
    "pos_embed",
    "pool",
    "drop_path",
    "token_mixer",
    "token_mixers",
    "precision",
    "seed",
)


def base_model(spec: str | None) -> str | None:
    """The Hub repository a fine-tuned run started from, when it is one: an hf-hub: id, a timm name or
    paper code with Hub weights, or a folder of the Hugging Face cache (models--org--name/snapshots/...)."""
    if not spec:
        return None
    if spec.startswith("hf-hub:"):
        return spec[len("hf-hub:") :].split("@", 1)[0]
    if Path(spec).expanduser().exists():
        cached = [p for p in Path(spec).expanduser().resolve().parts if p.startswith("models--")]
        return "/".join(cached[-1].split("--")[1:]) if cached else None
    try:
        from timm.models import get_pretrained_cfg

        from vitcli.models.resolver import PAPER_CODES

        cfg = get_pretrained_cfg(PAPER_CODES.get(spec, spec))
    except Exception:  # noqa: BLE001 - an unknown or tagless name: no base model in the metadata
        return None
    return getattr(cfg, "hf_hub_id", None) or None


def public(value) -> str:
    """A value as a published card shows it: a local path becomes its last part (no home folders or machine
    layout on the Hub); names, Hub ids (hf-hub:org/name, hf:NAME) and numbers stay as they are."""
    text = str(value)
    if "=" in text and text.startswith("--"):  # --dataset=/data/x
        flag, _, rest = text.partition("=")
        return f"{flag}={public(rest)}"
    local = text.startswith(("/", "./", "../", "~")) or (
        "/" in text and ":" not in text and Path(text).expanduser().exists()
    )
    return (Path(text.rstrip("/")).name or text) if local else text


def command_line(argv: list | None) -> str | None:
    """`vit finetune ...` from the sys.argv recorded in run.json (whatever started the process), paths shortened."""
    if not argv:
        return None
    return shlex.join(["vit", *map(public, argv[1:])])


def _percent(value) -> str:
    return "-" if value is None else f"{float(value):.2f} %"


def _results_table(folder: Path) -> list[str]:
    path = folder / files.RESULTS
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return []
    head = ["step", "epoch", "train loss", "lr", "val top-1", "val loss", "img/s", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                r.get(k) or "-"
                for k in ("step", "epoch", "train_loss", "lr", "val_top1", "val_loss", "img_s", "seconds")
            )
            + " |"
        )
    return lines


def model_card(folder: Path, repo_id: str) -> str:
    """README.md for the run folder `folder`, to be published as `repo_id`."""
    from huggingface_hub import ModelCardData

    folder = Path(folder)
    run = runs.read_run_json(folder)
    model_config = json.loads((folder / files.CONFIG).read_text())
    cfg = run.get("config") or (model_config.get("vitcli") or {}).get("config") or {}
    command = run.get("command") or (model_config.get("vitcli") or {}).get("command")
    summary = run.get("summary") or {}
    dataset = str(cfg.get("dataset") or "")
    hub_dataset = dataset[len("hf:") :].split(":", 1)[0] if dataset.startswith("hf:") else None
    base = base_model(cfg.get("model")) if command == "finetune" else None
    data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=None,
        tags=["image-classification", "timm", "vitcli"],
        base_model=base,
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=["accuracy"],
    )
    arch = model_config.get("architecture", "a timm model")
    labels = model_config.get("label_names") or []
    how = f"fine-tuned from `{public(cfg.get('model'))}`" if command == "finetune" else "trained from scratch"
    lines = [
        "---",
        data.to_yaml(),
        "---",
        MARK,
        "",
        f"# {repo_id.rsplit('/', 1)[-1]}",
        "",
        f"`{arch}` ({summary.get('params', 0) / 1e6:.2f} M parameters, {summary.get('img_size', '?')} px) "
        f"{how} on `{public(dataset or '?')}` ({len(labels)} classes) with vitcli's `vit {command or 'finetune'}` (on "
        "top of [timm](https://github.com/huggingface/pytorch-image-models)).",
        "",
    ]
    split = summary.get("selection_split") or "val"
    best = summary.get("best_step")
    chosen = f"selects the model; best at step {best}" if best is not None else "the last model is kept"
    lines += ["## Results", "", "| split | top-1 |", "|---|---|"]
    if summary.get("val_top1") is not None:
        lines.append(f"| {split} ({chosen}) | {_percent(summary['val_top1'])} |")
    if summary.get("test_top1") is not None:
        lines.append(f"| test (the selected model, once) | {_percent(summary['test_top1'])} |")
    if run.get("status") and run["status"] != "finished":
        lines += ["", f"The run did not finish (status: {run['status']}); this is its best model so far."]
    lines += ["", "## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [
        f"| {k} | `{json.dumps(public(cfg[k]) if k in ('model', 'dataset') else cfg[k])}` |"
        for k in RECIPE_KEYS
        if cfg.get(k) is not None
    ]
    table = _results_table(folder)
    if table:
        lines += ["", "## Training", "", *table]
    if (folder / files.CURVES).is_file():
        lines += ["", f"![loss and top-1 against step]({files.CURVES})"]
    made = command_line((run.get("environment") or {}).get("argv"))
    if made:
        lines += ["", "## The command that made it", "", "```bash", made, "```"]
    versions = run.get("versions") or (model_config.get("vitcli") or {}).get("versions") or {}
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"vit predict --model hf-hub:{repo_id} image.jpg",
        "```",
        "",
        "```python",
        "import timm",
        "",
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
        "```",
        "",
    ]
    if labels:
        lines += ["Classes: " + ", ".join(f"`{n}`" for n in labels[:50]) + (" ..." if len(labels) > 50 else ""), ""]
    return "\n".join(lines)
