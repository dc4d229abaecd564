"""The figures of training runs, drawn with matplotlib's Figure API (no pyplot, no global backend) and
written with `atomic_write`:

- a run's curves.png: training and held-out loss (left), held-out top-1 (middle) and the learning rate
  (right) against step, from its metrics.jsonl records (vitcli.train.report.reporting); the selected model's
  test top-1 as a star, the LP-FT probe's cross-validated top-1 as a dashed line;
- a sweep's results.png: every setting's held-out top-1 against step (left) and its best one as a bar
  (right), the winner in bold, as the sweep table ranks them.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.output import atomic_write

DPI = 120


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, facecolor="white"))


def _percent(ax) -> None:
    if ax.has_data():
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 101.0))  # a flat 100 % is not drawn up to 106


def _steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def run_curves(
    train: list[dict], held: list[dict], test: list[dict], path: Path, title: str = "", probe: dict | None = None
) -> Path:
    """curves.png of one run, from its training, selection-split and test records (and the LP-FT probe's
    record): loss, top-1 and learning rate against step. Without a held-out split the top-1 panel still
    says what the run reached: the test top-1 of the kept model, beside the probe's cross-validated top-1
    (the held-out estimate fine-tuning set out to beat)."""
    split = held[0]["split"] if held else "val"
    fig = _figure(13.5, 3.8)
    loss_ax, top1_ax, lr_ax = fig.subplots(1, 3)
    if train:
        loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", color="tab:blue")
        lr_ax.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:purple")
    if held:
        loss_ax.plot([r["step"] for r in held], [r["loss"] for r in held], "o-", label=split, color="tab:orange")
        top1_ax.plot([r["step"] for r in held], [r["top1"] for r in held], "o-", label=split, color="tab:orange")
    if probe is not None and probe.get("cv_top1") is not None:
        top1_ax.axhline(
            probe["cv_top1"],
            linestyle="--",
            color="tab:gray",
            label=f"linear probe, cross-validated {probe['cv_top1']:.2f} %",
        )
    for r in test[-1:]:
        top1_ax.plot([r["step"]], [r["top1"]], "*", markersize=12, label=f"test {r['top1']:.2f} %", color="tab:green")
    if not held:
        top1_ax.text(
            0.02,
            0.02,
            "no held-out split during the run: the last model is kept",
            transform=top1_ax.transAxes,
            fontsize=7,
            color="tab:gray",
        )
    if test or held:
        low, high = top1_ax.get_ylim()
        if high - low < 2:  # a probe at 99.7 % and a test at 99.6 %: two points apart, not stuck to the frame
            top = min((low + high) / 2 + 1, 100.5)
            top1_ax.set_ylim(top - 2, top)
        _percent(top1_ax)
    loss_ax.set(xlabel="step", ylabel="cross-entropy", title="loss")
    top1_ax.set(xlabel="step", ylabel="top-1 (%)", title="top-1")
    lr_ax.set(xlabel="step", ylabel="learning rate (peak group)", title="learning rate")
    steps = [r["step"] for r in (train + held + test)]
    for ax in (loss_ax, top1_ax, lr_ax):
        _steps(ax)
        ax.grid(alpha=0.3)
        if steps:
            ax.set_xlim(min(0, min(steps)), max(steps) + 0.5)
        if ax is not lr_ax and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if train and min(r["loss"] for r in train) > 0:
        loss_ax.set_yscale("log")  # a probed head starts near 0: a linear axis shows a flat line
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sweep_plot(settings: list[dict], split: str, path: Path) -> Path:
    """results.png of a sweep. settings: one dict per setting, in the table's order, with `label`,
    `curve` (the selection split's records), `best` (its top-1 or None), `failed`, `winner`, `test`."""
    fig = _figure(11, 4.2)
    curve_ax, bar_ax = fig.subplots(1, 2, width_ratios=[3, 2])
    for i, s in enumerate(settings):
        if s["curve"]:
            curve_ax.plot(
                [r["step"] for r in s["curve"]],
                [r["top1"] for r in s["curve"]],
                "o-",
                color=f"C{i % 10}",
                linewidth=2.5 if s["winner"] else 1.2,
                label=s["label"] + (" *" if s["winner"] else ""),
            )
    curve_ax.set(xlabel="step", ylabel=f"{split} top-1 (%)", title=f"{split} top-1 during training")
    _percent(curve_ax)
    _steps(curve_ax)
    curve_ax.grid(alpha=0.3)
    if curve_ax.has_data():
        curve_ax.legend(fontsize=7)
    positions = list(range(len(settings)))
    best = [s["best"] or 0.0 for s in settings]
    bars = bar_ax.barh(
        positions, best, color=["lightgrey" if s["failed"] else f"C{i % 10}" for i, s in enumerate(settings)]
    )
    for bar, s in zip(bars, settings):
        text = "failed" if s["failed"] else "-" if s["best"] is None else f"{s['best']:.2f}"
        if s["winner"] and s["test"] is not None:
            text += f"  (test {s['test']:.2f})"
        bar_ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + text, va="center", fontsize=8)
    bar_ax.set_yticks(positions, [s["label"] + (" *" if s["winner"] else "") for s in settings], fontsize=8)
    bar_ax.invert_yaxis()  # the table's order, top to bottom
    for tick, s in zip(bar_ax.get_yticklabels(), settings):
        if s["winner"]:
            tick.set_fontweight("bold")
    bar_ax.set(xlabel=f"best {split} top-1 (%)", title="settings (* winner)")
    bar_ax.set_xlim(0, 130)  # room for the labels right of a 100 % bar
    bar_ax.set_xticks(range(0, 101, 20))
    return _save(fig, path)
