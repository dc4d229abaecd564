"""The recipes' parts, each on a batch: RandAugment, random erasing, mixup, cutmix, label smoothing,
stochastic depth, the EMA, layer-wise lr decay, the linear-probe head (LP-FT), the step budget, the
augmentation of a budget, early stopping, DeiT's lr scaling, and exact resume with all of them on."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_colour_tree, make_tiny_vit
from vitcli.cli import app
from vitcli.errors import UsageError
from vitcli.train.run import checkpoint
from vitcli.train.run.config import resolve

DC = dict(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=1.0)
EVERYTHING = dict(
    aa="rand-m9-mstd0.5-inc1",
    mixup=0.8,
    cutmix=1.0,
    reprob=0.25,
    label_smoothing=0.1,
    drop_path=0.1,
    model_ema=True,
    ema_decay=0.99,
    layer_decay=0.75,
)


@pytest.fixture(scope="module")
def colour_ds(tmp_path_factory) -> Path:
    return make_colour_tree(tmp_path_factory.mktemp("colours"), {"train": 16, "val": 4, "test": 4})


def cfg_for(tiny_vit_dir, ds, tmp_path, **kw):
    base = dict(
        model=str(tiny_vit_dir),
        dataset=str(ds),
        recipe="quick",
        steps=6,
        batch_size=8,
        warmup=1,
        lr=0.01,
        eval_every=3,
        project=str(tmp_path / "runs"),
        workers=0,
        device="cpu",
    )
    return resolve("finetune", {**base, **kw})


def picture(seed: int = 0):
    """A 32 px RGB image with structure (gradients and a square), so geometric ops change it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32]
    arr = np.stack([x * 8, y * 8, (x + y) * 4], -1).astype(np.uint8)
    arr[8:20, 10:18] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


def seeded(transform, image, seed: int):
    """The transform of `image` as vitcli.data.loader.ImageDataset seeds it for (seed, epoch 0, item 0)."""
    from vitcli.data.loader import ImageDataset, Records

    records = Records([0], array=np.asarray(image)[None])
    return ImageDataset(records, transform=transform, augment_seed=seed)[0].image


# ------------------------------------------------------------------------------------ image level
def test_aa_applies_randaugment_and_is_seeded_per_sample():
    from vitcli.data.transforms import train_transform

    plain = train_transform(DC, crop_scale=(1.0, 1.0), hflip=0.0)
    aa = train_transform(DC, crop_scale=(1.0, 1.0), hflip=0.0, aa="rand-m9-mstd0.5-inc1")
    assert "RandAugment" in [type(t).__name__ for t in aa.transforms]
    image = picture()
    base = seeded(plain, image, 0)
    changed = [not seeded(aa, image, s).equal(base) for s in range(8)]
    assert sum(changed) >= 6  # two ops at magnitude ~9 almost always change the image
    assert seeded(aa, image, 3).equal(seeded(aa, image, 3))  # numpy, Python and torch all seeded
    with pytest.raises(UsageError, match="--aa"):
        train_transform(DC, crop_scale=(1.0, 1.0), hflip=0.0, aa="rand-q9")


def test_no_augmentation_trains_on_the_eval_transform():
    """Crops of 100 %, no flip: the images as evaluation sees them (resize + centre crop by crop_pct), not
    a 100 % random-resized crop, which resizes the whole image to another scale."""
    from vitcli.data.transforms import eval_transform, train_transform

    dc, image = dict(DC, crop_pct=0.875), picture()
    assert seeded(train_transform(dc, crop_scale=(1.0, 1.0), hflip=0.0), image, 0).equal(eval_transform(dc)(image))
    assert not seeded(train_transform(dc, crop_scale=(1.0, 1.0), hflip=0.0, reprob=1.0), image, 0).equal(
        eval_transform(dc)(image)
    )


def test_reprob_erases_one_rectangle_with_noise_at_that_rate():
    import torch

    from vitcli.data.transforms import train_transform

    image = picture()
    plain = seeded(train_transform(DC, crop_scale=(1.0, 1.0), hflip=0.0), image, 0)
    erased = seeded(train_transform(DC, crop_scale=(1.0, 1.0), hflip=0.0, reprob=1.0), image, 0)
    diff = (erased != plain).any(0)  # (H, W)
    rows, cols = diff.any(1).nonzero().flatten(), diff.any(0).nonzero().flatten()
    box = diff[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert 0.02 * 32 * 32 <= box.numel() <= 0.34 * 32 * 32 and box.float().mean() > 0.99  # one filled rectangle
    noise = erased[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert abs(noise.mean().item()) < 0.5 and 0.5 < noise.std().item() < 1.5  # per-pixel normal noise
    tf = train_transform(DC, crop_scale=(1.0, 1.0), hflip=0.0, reprob=0.25)
    rate = np.mean([not seeded(tf, image, s).equal(plain) for s in range(200)])
    assert 0.17 < rate < 0.33
    assert torch.equal(seeded(tf, image, 5), seeded(tf, image, 5))


# ------------------------------------------------------------------------------------ batch level
def batch(n=8, k=4):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % k


def test_mixup_mixes_each_image_with_its_mirror_and_the_targets_alike():
    import torch

    from vitcli.train.recipe.regularise import Regularisation

    x, y = batch()
    reg = Regularisation(SimpleNamespace(mixup=0.8, cutmix=0.0, label_smoothing=0.0), num_classes=4)
    mixed, targets = reg.mix(x.clone(), y, step=3)
    onehot = torch.nn.functional.one_hot(y, 4).float()
    lam = targets[0, y[0]].item() if y[0] != y[-1] else None
    assert lam is not None and 0 < lam < 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(targets, lam * onehot + (1 - lam) * onehot.flip(0), atol=1e-6)
    again, _ = reg.mix(x.clone(), y, step=3)
    other, _ = reg.mix(x.clone(), y, step=4)
    assert again.equal(mixed) and not other.equal(mixed)  # a function of (seed, step, micro-batch)
    assert type(reg.criterion).__name__ == "SoftTargetCrossEntropy"


def test_cutmix_pastes_a_box_of_the_mirror_image_and_weights_the_targets_by_area():
    import torch

    from vitcli.train.recipe.regularise import Regularisation

    x, y = batch()
    reg = Regularisation(SimpleNamespace(mixup=0.0, cutmix=1.0, label_smoothing=0.0), num_classes=4)
    mixed, targets = reg.mix(x.clone(), y, step=0)
    pasted = (mixed != x).any(1)[0]  # (H, W) where image 0 now holds image 7's pixels
    assert pasted.any()
    assert torch.equal(mixed[:, :, pasted], x.flip(0)[:, :, pasted])
    assert torch.equal(mixed[:, :, ~pasted], x[:, :, ~pasted])
    lam = 1 - pasted.float().mean().item()
    assert targets[0, y[0]].item() == pytest.approx(lam, abs=1e-6)
    assert targets[0, y[-1]].item() == pytest.approx(1 - lam, abs=1e-6)


def test_odd_batch_mixes_the_even_part_and_smooths_the_last():
    from vitcli.train.recipe.regularise import Regularisation

    x, y = batch(5)
    reg = Regularisation(SimpleNamespace(mixup=1.0, cutmix=0.0, label_smoothing=0.1), num_classes=4)
    mixed, targets = reg.mix(x.clone(), y, step=0)
    assert mixed[4].equal(x[4]) and not mixed[0].equal(x[0])
    assert targets[4, y[4]].item() == pytest.approx(1 - 0.1 + 0.1 / 4) and targets.sum(1).allclose(targets.new_ones(5))


def test_smoothing_is_label_smoothed_cross_entropy():
    import torch

    from vitcli.train.recipe.regularise import Regularisation

    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    reg = Regularisation(SimpleNamespace(mixup=0.0, cutmix=0.0, label_smoothing=0.2), num_classes=4)
    targets = torch.full((6, 4), 0.2 / 4).scatter_(1, y[:, None], 1 - 0.2 + 0.2 / 4)
    expected = -(targets * logits.log_softmax(-1)).sum(-1).mean()
    assert reg.criterion(logits, y).item() == pytest.approx(expected.item(), rel=1e-6)
    mixing = Regularisation(SimpleNamespace(mixup=1.0, cutmix=0.0, label_smoothing=0.2), num_classes=4)
    _, soft = mixing.mix(torch.randn(6, 3, 8, 8), y, step=1)
    assert soft.min().item() == pytest.approx(0.2 / 4, abs=1e-6) or soft.min().item() > 0.2 / 4 - 1e-6


def test_drop_path_drops_residual_branches_per_sample_in_training_only(tiny_vit_dir):
    import torch

    from vitcli.train.run.build import build_finetune_model, build_scratch_model
    from vitcli.train.run.config import FinetuneConfig, TrainConfig

    _, model = build_finetune_model(
        FinetuneConfig(model=str(tiny_vit_dir), dataset="x", drop_path=0.5), 3, torch.device("cpu")
    )
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]  # rate 0: an Identity
    assert rates == pytest.approx([0.0, 0.5])  # timm's linear rule, up to the rate in the last block
    _, scratch = build_scratch_model(
        TrainConfig(model="Ti/16", dataset="x", img_size=32, patch_size=8, drop_path=0.3), 3, torch.device("cpu")
    )
    assert scratch.blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    block = model.blocks[1]
    x = torch.randn(64, 65, 64)
    block.train()
    torch.manual_seed(0)
    out = block.drop_path1(torch.ones_like(x))  # the branch as the block adds it: 0 or 1 / keep per sample
    kept = out[:, 0, 0]
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0.2 < (kept == 0).float().mean() < 0.8
    assert all(out[i].eq(out[i, 0, 0]).all() for i in range(64))  # a whole sample at once
    block.eval()
    assert block(x).equal(block(x))


def test_ema_is_the_moving_average_with_a_warmed_up_decay():
    import torch

    from vitcli.train.recipe.regularise import make_ema

    model = make_tiny_vit(3)
    ema = make_ema(model, SimpleNamespace(model_ema=True, ema_decay=0.999))
    assert make_ema(model, SimpleNamespace(model_ema=False, ema_decay=0.999)) is None
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    decay = ema.get_decay(50)
    assert decay == pytest.approx(1 - (1 + 49) ** -0.75) and decay < 0.999
    ema.update(model, step=50)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(ema.module.state_dict()[k], decay * before[k] + (1 - decay) * v, atol=1e-6), k
    assert ema.get_decay(10**7) == 0.999


def test_layer_decay_scales_each_layers_lr():
    from vitcli.train.recipe.optim import create_optimizer, create_scheduler
    from vitcli.train.run.config import FinetuneConfig

    model = make_tiny_vit(3, depth=2)
    cfg = FinetuneConfig(dataset="x", optimizer="sgd", lr=0.1, layer_decay=0.5, warmup=0)
    opt = create_optimizer(model, cfg)
    scale = {}
    for group in opt.param_groups:
        for p in group["params"]:
            scale[p] = group["lr_scale"]
    assert scale[model.head.weight] == 1.0 and scale[model.blocks[1].mlp.fc1.weight] == 0.5
    assert scale[model.blocks[0].mlp.fc1.weight] == 0.25 and scale[model.patch_embed.proj.weight] == 0.125
    sched = create_scheduler(opt, cfg, total=10)
    sched.step_update(1)
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    assert lrs[0.25] == pytest.approx(0.25 * lrs[1.0]) and lrs[1.0] > 0


def test_a_short_schedule_reaches_zero_without_timms_cosine_warning(caplog):
    """One step after the warmup: timm warns its cosine "will have no effect"; ours still ends at 0."""
    import logging

    import torch

    from vitcli.train.recipe.optim import create_scheduler
    from vitcli.train.run.config import FinetuneConfig

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with caplog.at_level(logging.WARNING):
        sched = create_scheduler(opt, FinetuneConfig(dataset="x", lr=0.1, warmup=1, schedule="cosine"), total=2)
    lrs = []
    for t in (1, 2):
        sched.step_update(t)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [pytest.approx(0.1), 0.0] and not caplog.records


# ------------------------------------------------------------------------------------ the head first
def test_probe_head_is_the_fitted_logistic_regression(tiny_vit_dir, colour_ds):
    import torch

    from vitcli.accel.runtime import runtime
    from vitcli.data.datasets import open_dataset
    from vitcli.models.resolver import data_config_for
    from vitcli.train.recipe.probe import fit_logistic, folds, probe_head
    from vitcli.train.run.build import build_finetune_model
    from vitcli.train.run.config import FinetuneConfig

    x, y = torch.randn(40, 5, dtype=torch.float64), torch.arange(40) % 3
    w, b = fit_logistic(x, y, 3, l2=1e-2)
    w.requires_grad_(True), b.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 1e-2 * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert gw.abs().max() < 1e-6 and gb.abs().max() < 1e-6  # the optimum

    cfg = FinetuneConfig(model=str(tiny_vit_dir), dataset=str(colour_ds), workers=0)
    _, model = build_finetune_model(cfg, 3, torch.device("cpu"))
    source = open_dataset(str(colour_ds))
    info = probe_head(model, data_config_for(model), source, cfg, runtime("cpu", "fp32"))
    assert model.head.weight.abs().sum() > 0 and info["train_images"] == 48 and info["l2"] in (1e-4, 1e-3, 1e-2, 1e-1)
    from vitcli.data.transforms import eval_transform

    train = source.subset("train", eval_transform(data_config_for(model)))
    images = torch.stack([train[i].image for i in range(len(train))])
    with torch.no_grad():
        top1 = 100.0 * (model(images).argmax(1).numpy() == train.labels).mean()
    assert top1 == pytest.approx(info["train_top1"])  # the head is the probe, folded onto raw features
    assert "cv_top1" in info  # its L2 chosen by 5-fold cross-validation on the training split
    fold = folds([0] * 7 + [1] * 3, 3)
    assert sorted(fold[:7].tolist()) == [0, 0, 0, 1, 1, 2, 2] and sorted(fold[7:].tolist()) == [0, 1, 2]


def test_the_probe_leaves_the_trained_model_as_it_was_built(tiny_vit_dir, colour_ds, monkeypatch):
    """The feature extraction swaps in inference kernels (in bf16: weight copies cast once, an fp32
    head); they must never reach the model that is then trained."""
    import torch

    from vitcli.accel.runtime import Runtime
    from vitcli.data.datasets import open_dataset
    from vitcli.models.resolver import data_config_for
    from vitcli.train.recipe.probe import probe_head
    from vitcli.train.run.build import build_finetune_model
    from vitcli.train.run.config import FinetuneConfig

    monkeypatch.setenv("VIT_KERNELS", "1")  # swap wherever they apply, measured faster or not
    cfg = FinetuneConfig(model=str(tiny_vit_dir), dataset=str(colour_ds), workers=0)
    _, model = build_finetune_model(cfg, 3, torch.device("cpu"))
    kinds = [type(m) for m in model.modules()]
    assert (
        probe_head(
            model, data_config_for(model), open_dataset(str(colour_ds)), cfg, Runtime(torch.device("cpu"), "bf16")
        )
        is not None
    )
    assert [type(m) for m in model.modules()] == kinds and model.head.weight.abs().sum() > 0


# ------------------------------------------------------------------------------------ budgets
def test_auto_budget_table_and_the_augmentation_of_a_budget():
    from vitcli.train.recipe import recipes
    from vitcli.train.run import plan

    assert recipes.auto_steps(222, 37, 32) == 100 + 5 * 37  # the 37 classes x 6 images: not 18 steps
    assert recipes.auto_steps(245, 2, 32) == 110 and recipes.auto_steps(50_000, 10, 32) == 4688  # 3 epochs
    quick = resolve("finetune", {"dataset": "x", "recipe": "quick"})
    assert quick.budget == "auto" and quick.steps is None and quick.head_init == "probe"
    assert resolve("finetune", {"dataset": "x", "recipe": "quick", "steps": 7}).budget == "fixed"
    assert resolve("finetune", {"dataset": "x", "recipe": "paper"}).head_init == "zero"
    assert recipes.augmentation(2) == ((1.0, 1.0), 0.0)
    assert recipes.augmentation(30) == ((0.35, 1.0), 0.5)
    short = resolve("train", {"dataset": "x", "recipe": "quick", "epochs": 2})
    assert short.crop_scale is None and plan.augmentation(short, 1000, 10) == ((1.0, 1.0), 0.0)
    assert plan.augmentation(short.replace(hflip=0.5), 1000, 10) == ((1.0, 1.0), 0.5)
    p = plan.plan(quick, n_train=245, num_classes=2, world=1, accum=1)
    assert (p.total, p.micro, p.per_epoch, p.warmup) == (110, 32, 7, 10) and max(p.eval_at) == 110


def test_deit_recipe_scales_the_lr_with_the_batch_and_warms_up_in_epochs():
    from vitcli.train.run import plan

    deit = resolve("train", {"dataset": "x", "recipe": "deit"})
    assert (deit.batch_size, deit.lr, deit.weight_decay, deit.schedule) == (1024, 1e-3, 0.05, "cosine")
    assert (deit.aa, deit.mixup, deit.cutmix, deit.reprob, deit.label_smoothing) == (
        "rand-m9-mstd0.5-inc1",
        0.8,
        1.0,
        0.25,
        0.1,
    )
    assert deit.model_ema and deit.drop_path == 0.1 and deit.warmup_epochs == 5
    assert resolve("train", {"dataset": "x", "recipe": "deit", "batch_size": 256}).lr == pytest.approx(2.5e-4)
    given = resolve("train", {"dataset": "x", "recipe": "deit", "lr": 0.01})
    assert given.lr == 0.01 and given.lr_base is None
    assert plan.plan(deit, n_train=10_240, num_classes=10, world=1, accum=1).warmup == 50  # 5 epochs of 10
    ft = resolve("finetune", {"dataset": "x", "recipe": "deit"})
    assert ft.layer_decay == 0.75 and ft.head_init == "zero" and ft.mixup == 0.8
    with pytest.raises(UsageError, match="--layer-decay"):
        resolve("finetune", {"dataset": "x", "layer_decay": 1.5})
    with pytest.raises(UsageError, match="--aa"):
        resolve("finetune", {"dataset": "x", "aa": "randaug"})


def test_smoothing_flag_and_its_alias_set_one_setting():
    for flag in ("--smoothing", "--label-smoothing"):
        result = CliRunner().invoke(
            app,
            [
                "finetune",
                "--dataset",
                "x",
                "--steps",
                "3",
                flag,
                "0.1",
                "--mixup",
                "0.2",
                "--model-ema",
                "--drop-path",
                "0.1",
                "--dry-run",
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        cfg = json.loads(result.stdout)
        assert cfg["label_smoothing"] == 0.1 and cfg["mixup"] == 0.2 and cfg["model_ema"] and cfg["drop_path"] == 0.1


# ------------------------------------------------------------------------------------ runs
def test_patience_stops_early_keeping_the_best(tiny_vit_dir, colour_ds, tmp_path):
    from vitcli.train.run.start import finetune

    summary = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, lr=1e-12, eval_every=1, patience=2, steps=20))
    assert summary["stopped_early_at"] == 2 and summary["best_step"] == 0  # the probed head, not bettered
    assert checkpoint.load(Path(summary["run_dir"]) / "last/state.pt")["step"] == 2


def test_ema_weights_are_evaluated_and_saved_as_what_they_are(tiny_vit_dir, colour_ds, tmp_path):
    from safetensors.torch import load_file

    from vitcli.train.run.start import finetune

    summary = finetune(
        cfg_for(tiny_vit_dir, colour_ds, tmp_path, model_ema=True, ema_decay=0.5, head_init="zero", eval_every=6)
    )
    run = Path(summary["run_dir"])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {m["weights"] for m in lines if m.get("split") == "val"} == {"model", "ema"}
    which = json.loads((run / "config.json").read_text())["vitcli"]["weights"]
    assert which == summary["weights"] and which in ("model", "ema")
    state = checkpoint.load(run / "last/state.pt")
    saved = load_file(str(run / "model.safetensors"))
    held = state["ema"] if which == "ema" else state["model"]
    assert all(saved[k].equal(held[k]) for k in saved)
    assert not all(state["ema"][k].equal(state["model"][k]) for k in saved)  # two different sets of weights


def test_a_run_with_everything_on_resumes_bit_for_bit(tiny_vit_dir, colour_ds, tmp_path):
    from vitcli.train.run.start import finetune, resume_config

    def weights(path):
        from safetensors.torch import load_file

        return load_file(str(path))

    kw = dict(EVERYTHING, steps=7, accum=2, patience=5)
    a = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="all-a", **kw))
    stopped = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="all-b", **kw), stop_after=4)
    run_a, run_b = Path(a["run_dir"]), Path(stopped["run_dir"])
    b = finetune(resume_config("finetune", run_b, {"workers": 1}), resume=run_b)
    assert (a["val_top1"], a["test_top1"], a["best_step"], a["weights"]) == (
        b["val_top1"],
        b["test_top1"],
        b["best_step"],
        b["weights"],
    )
    sa, sb = checkpoint.load(run_a / "last/state.pt"), checkpoint.load(run_b / "last/state.pt")
    for part in ("model", "ema"):
        assert all(sa[part][k].equal(sb[part][k]) for k in sa[part]), part
    wa, wb = weights(run_a / "model.safetensors"), weights(run_b / "model.safetensors")
    assert all(wa[k].equal(wb[k]) for k in wa)
    strip = lambda run: [
        {k: v for k, v in json.loads(line).items() if k not in ("time", "img_s", "seconds")}  # noqa: E731
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip(run_a) == strip(run_b)


def test_stop_after_flag_then_resume(tiny_vit_dir, colour_ds, tmp_path):
    runner = CliRunner()
    args = [
        "finetune",
        "--model",
        str(tiny_vit_dir),
        "--dataset",
        str(colour_ds),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--project",
        str(tmp_path / "runs"),
        "--json",
    ]
    result = runner.invoke(app, [*args, "--stop-after", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stopped_at"] == 2 and summary["steps"] == 4
    result = runner.invoke(app, ["finetune", "--resume", summary["run_dir"], "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 4
    result = runner.invoke(app, [*args, "--stop-after", "2", "--sweep", "lr=0.1,0.2"])
    assert result.exit_code == 2 and "single run" in result.stderr
