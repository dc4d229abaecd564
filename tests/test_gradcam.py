"""`vit visualize --gradcam` and `--faithfulness`: the ViT reshape and target layers, the target class, a
model whose right answer is known by construction, the deletion/insertion maths, the CLI, and the real
ViT-Ti (skipped without ../shared/assets)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli.analysis import faithfulness as faith
from vitcli.analysis.gradcam import CamLayerError, TokensToGrid, cam_layer, resolve_target
from vitcli.cli import app
from vitcli.errors import UsageError

pytest.importorskip("pytorch_grad_cam")
runner = CliRunner()
CONFIG = {
    "input_size": (3, 32, 32),
    "mean": (0.5,) * 3,
    "std": (0.5,) * 3,
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "crop_mode": "center",
}


def _loaded(model, labels, arch="custom"):
    from vitcli.models.resolver import LoadedModel, parse_spec

    return LoadedModel(model.eval(), parse_spec(arch), arch, dict(CONFIG), list(labels))


# --- the layer and the reshape ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix,grid", [(1, (8, 8)), (5, (8, 8)), (2, (8, 12)), (0, (8, 12))])
def test_tokens_land_in_their_grid_cells(prefix, grid):
    rows, cols = grid
    tokens = torch.zeros(2, prefix + rows * cols, 3)
    tokens[:, :prefix] = -1.0  # prefix tokens must not appear in the map
    tokens[:, prefix:] = torch.arange(rows * cols, dtype=torch.float32)[None, :, None] + 1000 * torch.arange(3.0)
    out = TokensToGrid(prefix, grid)(tokens)  # (B, C, rows, cols)
    assert out.shape == (2, 3, rows, cols)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    for ch in range(3):
        assert torch.equal(out[1, ch], (r * cols + c).float() + 1000 * ch)
    with pytest.raises(CamLayerError, match="do not match"):
        TokensToGrid(prefix + 1, grid)(tokens)


@pytest.mark.parametrize("kind", ["registers", "distilled", "no_class_token_non_square"])
def test_vit_layer_and_grid_come_from_the_model(kind, tmp_path, make_images):
    import timm
    from PIL import Image

    from vitcli.accel.runtime import runtime
    from vitcli.analysis.gradcam import gradcam_figures
    from vitcli.data.transforms import eval_transform

    torch.manual_seed(0)
    size = (32, 32)
    if kind == "registers":
        model, prefix = make_tiny_vit(reg_tokens=4, no_embed_class=True), 5
    elif kind == "distilled":
        model = timm.create_model(
            "deit_tiny_distilled_patch16_224",
            img_size=32,
            patch_size=4,
            embed_dim=64,
            depth=2,
            num_heads=2,
            num_classes=10,
        ).eval()
        prefix = 2
    else:
        model, prefix, size = make_tiny_vit(img_size=(32, 48), class_token=False, global_pool="avg"), 0, (32, 48)
    layer = cam_layer(model)
    assert (layer.name, layer.kind, layer.num_prefix) == ("blocks.1.norm1", "tokens", prefix)
    loaded = _loaded(model, [f"c{i}" for i in range(10)])
    loaded.data_config["input_size"] = (3, *size)
    result = {"files": [], "errors": []}
    paths = make_images(2, size=(size[1], size[0]))
    found = gradcam_figures(
        loaded,
        runtime("cpu", "fp32"),
        paths,
        ["a", "b"],
        tmp_path,
        method="gradcam",
        target=None,
        batch_size=2,
        arch="tiny",
        result=result,
    )
    assert found.grid == (size[0] // 4, size[1] // 4) and result["gradcam"]["grid"] == list(found.grid)
    assert result["gradcam"]["num_prefix_tokens"] == prefix
    m = np.load(tmp_path / "gradcam" / "a.npy")
    assert m.shape == size and np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    transform = eval_transform(loaded.data_config)
    with torch.no_grad():
        predicted = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths]))
    assert [found.targets[i] for i in range(2)] == predicted.argmax(-1).tolist()  # default: the predicted class
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def test_feature_map_layers_from_timm_feature_info():
    import timm
    from timm.models.metaformer import MetaFormer

    pool = MetaFormer(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=10)
    layer = cam_layer(pool)
    assert (layer.name, layer.kind) == ("stages.3", "feature map")
    x = torch.randn(1, 64, 2, 2)
    assert layer.reshape(pool, (64, 64))(x) is x  # channels-first passes through
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=32,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        window_size=4,
        num_classes=10,
    )
    layer = cam_layer(swin)
    assert layer.name == "layers.1"
    assert layer.reshape(swin, (32, 32))(torch.randn(1, 4, 4, 32)).shape == (1, 32, 4, 4)  # NHWC -> NCHW
    with pytest.raises(CamLayerError, match="no layer to take a Grad-CAM map from"):
        cam_layer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2)))


# --- the target class -------------------------------------------------------------------------------------


def test_target_is_an_index_or_a_label_name():
    names = ["tench, Tinca tinca", "goldfish", "crane", "crane", "espresso"]
    assert resolve_target(None, names) is None
    assert resolve_target("4", names) == 4
    assert resolve_target("goldfish", names) == 1
    assert resolve_target("ESPRESSO", names) == 4
    assert resolve_target("tinca tinca", names) == 0  # a synonym
    for bad, why in (("5", "has 5 classes"), ("crane", "names 2 classes"), ("bagel", "no class"), ("-1", "no class")):
        with pytest.raises(UsageError, match=why):
            resolve_target(bad, names)


# --- a model whose right answer is known ----------------------------------------------------------------


class RedBlue(torch.nn.Module):
    """Class 0 is the amount of red, class 1 the amount of blue: logits = 10 * mean(relu(R)), 10 * mean(relu(B))
    of the normalised input. Its feature map is the input's R and B channels (a 1x1 convolution)."""

    def __init__(self):
        super().__init__()
        self.stages = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1, bias=False))
        with torch.no_grad():
            self.stages[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])[:, :, None, None])
        self.feature_info = [{"num_chs": 2, "reduction": 1, "module": "stages"}]

    def forward(self, x):
        return 10 * torch.relu(self.stages(x)).mean(dim=(2, 3))


@pytest.fixture
def red_blue_images(tmp_path):
    from PIL import Image

    paths = []
    for i, red_cols in enumerate((24, 20)):  # red on the left, blue on the right: mostly red
        arr = np.zeros((32, 32, 3), dtype=np.uint8)
        arr[:, :red_cols, 0] = 255
        arr[:, red_cols:, 2] = 255
        paths.append(tmp_path / f"rb{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def test_gradcam_points_at_the_evidence_of_the_class_asked_for(red_blue_images, tmp_path):
    from vitcli.accel.runtime import runtime
    from vitcli.analysis.gradcam import gradcam_figures

    loaded = _loaded(RedBlue(), ["red", "blue"])
    maps = {}
    for target in (None, 1):
        result = {"files": [], "errors": []}
        found = gradcam_figures(
            loaded,
            runtime("cpu", "fp32"),
            red_blue_images,
            ["a", "b"],
            tmp_path / str(target),
            method="gradcam",
            target=target,
            batch_size=2,
            arch="redblue",
            result=result,
        )
        maps[target] = found.maps[0]
        assert found.targets == {0: target or 0, 1: target or 0}  # None: the predicted class, red
        assert result["gradcam"]["layer"] == "stages" and result["gradcam"]["grid"] == [32, 32]
    red, blue = maps[None], maps[1]
    assert red[:, :24].min() > 0.99 and red[:, 24:].max() < 0.01  # red's evidence: the red columns
    assert blue[:, 24:].min() > 0.99 and blue[:, :24].max() < 0.01


@pytest.mark.parametrize(
    "method",
    ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam", "eigengradcam", "gradcam-elementwise"],
)
def test_every_method_draws_a_map(method, red_blue_images, tmp_path):
    from vitcli.accel.runtime import runtime
    from vitcli.analysis.gradcam import METHODS, gradcam_figures

    assert method in METHODS
    result = {"files": [], "errors": []}
    found = gradcam_figures(
        _loaded(RedBlue(), ["red", "blue"]),
        runtime("cpu", "fp32"),
        red_blue_images[:1],
        ["a"],
        tmp_path,
        method=method,
        target=1,
        batch_size=1,
        arch="redblue",
        result=result,
    )
    m = found.maps[0]
    assert m.shape == (32, 32) and np.isfinite(m).all() and 0 <= m.min() and m.max() <= 1 + 1e-6
    if method in ("gradcam", "hirescam", "layercam", "gradcam-elementwise"):
        assert m[:, 24:].min() > 0.99 and m[:, :24].max() < 0.01  # blue's evidence
    # gradcam++ and xgradcam divide by the sum of the activations, which assumes they are non-negative
    # (post-ReLU CNN maps): on this signed map they point at red, as they may on a ViT's LayerNorm output;
    # eigencam is class-agnostic.


def test_deletion_and_insertion_rank_the_true_map_above_random_above_the_inverted(red_blue_images, tmp_path):
    from vitcli.accel.runtime import runtime

    true = {i: np.tile((np.arange(32) < c).astype(np.float32), (32, 1)) for i, c in enumerate((24, 20))}
    maps = {"true": true, "inverted": {i: 1 - m for i, m in true.items()}}
    result = {"files": [], "errors": []}
    scores = faith.faithfulness_figures(
        _loaded(RedBlue(), ["red", "blue"]),
        runtime("cpu", "fp32"),
        red_blue_images,
        maps,
        tmp_path,
        grid=(4, 4),
        targets=None,
        target=None,
        steps=8,
        batch_size=2,
        arch="redblue",
        result=result,
    )
    assert list(scores) == ["true", "inverted", "random"]
    d = {k: v["deletion_auc"] for k, v in scores.items()}
    i = {k: v["insertion_auc"] for k, v in scores.items()}
    assert d["true"] < d["random"] < d["inverted"]
    assert i["true"] > i["random"] > i["inverted"]
    saved = json.loads((tmp_path / "faithfulness.json").read_text())
    assert saved["fractions"][0] == 0 and saved["fractions"][-1] == 1 and len(saved["fractions"]) == 9
    curve = saved["maps"]["true"]["deletion_curve"]
    assert curve[-1] == pytest.approx(0.5, abs=1e-4)  # all grey: no red, no blue, a tie
    assert faith.auc(curve) == pytest.approx(d["true"], abs=1e-3)
    assert (tmp_path / "faithfulness.png").read_bytes()[:4] == b"\x89PNG"


# --- the deletion/insertion maths -------------------------------------------------------------------------


def test_auc_and_ranks():
    assert faith.auc([1, 1, 1]) == 1.0 and faith.auc([1, 0]) == 0.5
    assert faith.auc(np.linspace(1, 0, 11)) == pytest.approx(0.5)
    assert faith.auc([0.9, 0.2, 0.1, 0.0]) == pytest.approx(np.trapezoid([0.9, 0.2, 0.1, 0.0], dx=1 / 3))
    s = np.zeros((16, 16))
    s[0, :4] = [4, 3, 2, 1]  # four salient pixels, then 252 ties
    ranks = faith.salience_ranks(s, seed=0)
    assert sorted(ranks.ravel().tolist()) == list(range(256))  # a permutation: each step changes exactly k pixels
    assert ranks[0, :4].tolist() == [0, 1, 2, 3]
    next_ten = np.argwhere((ranks >= 4) & (ranks < 14))
    assert not (next_ten[:, 0] == 0).all()  # ties in a random order, not raster order from the top row
    assert np.array_equal(faith.salience_ranks(s, seed=0), ranks)
    a, b = faith.random_map((4, 5), 3), faith.random_map((4, 5), 3)
    assert a.shape == (4, 5) and np.array_equal(a, b) and not np.array_equal(a, faith.random_map((4, 5), 4))
    assert faith.at_size(a, (8, 10)).shape == (8, 10)


def test_perturbations_change_exactly_the_ranked_pixels():
    image = torch.rand(3, 8, 8) + 1
    ranks = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    deleted = faith.RankPerturbation(16, "deletion")(image, ranks)
    assert (deleted[:, :2] == 0).all() and torch.equal(deleted[:, 2:], image[:, 2:])
    inserted = faith.RankPerturbation(16, "insertion")(image, ranks)
    assert torch.equal(inserted[:, :2], image[:, :2])
    assert torch.allclose(inserted[:, 2:], faith.blur(image[None])[0, :, 2:])


# --- the command --------------------------------------------------------------------------------------------


def test_cli_gradcam_rollout_and_faithfulness(tiny_vit_dir, make_images, tmp_path):
    images = make_images(2)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "visualize",
            "--gradcam",
            "--attention-map",
            "--faithfulness",
            "--faithfulness-steps",
            "3",
            "--model",
            str(tiny_vit_dir),
            "--out-dir",
            str(out),
            "--json",
            *map(str, images),
        ],
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    names = {f"{d}/img00{i}.{ext}" for d in ("rollout", "gradcam") for i in range(2) for ext in ("png", "npy")}
    names |= {"faithfulness.png", "faithfulness.json"}
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == names
    g = report["gradcam"]
    assert (g["layer"], g["layer_kind"], g["grid"], g["num_prefix_tokens"]) == ("blocks.1.norm1", "tokens", [8, 8], 1)
    assert [im["target"] for im in g["images"]] == [im["predicted"] for im in g["images"]]
    assert np.load(out / "gradcam" / "img000.npy").shape == (32, 32)
    assert list(report["faithfulness"]) == ["gradcam", "rollout", "random"]
    for s in report["faithfulness"].values():
        assert set(s) == {"deletion_auc", "insertion_auc"} and all(0 <= v <= 1 for v in s.values())
    assert report["faithfulness_setup"]["num_images"] == 2
    assert "deletion AUC" not in result.stdout + result.stderr  # --json: the numbers are in the JSON only


def test_cli_target_by_name_or_index_and_usage_errors(tiny_vit_dir, make_images, tmp_path):
    image = str(make_images(1)[0])
    base = ["visualize", "--gradcam", "--model", str(tiny_vit_dir), image]
    for i, target in enumerate(("class3", "3")):
        result = runner.invoke(app, [*base, "--target", target, "--json", "--out-dir", str(tmp_path / str(i))])
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["gradcam"]["images"][0]["target"] == 3
    assert np.array_equal(np.load(tmp_path / "0/gradcam/img000.npy"), np.load(tmp_path / "1/gradcam/img000.npy"))
    for args, message in (
        (["--target", "class99"], "no class of the model has that name"),
        (["--target", "10"], "the model has 10 classes"),
        (["--method", "gradcam+++"], "--method 'gradcam+++'"),
    ):
        result = runner.invoke(app, [*base, *args, "--out-dir", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(app, ["visualize", "--faithfulness", "--filters", "--model", str(tiny_vit_dir), image])
    assert result.exit_code == 2 and "--faithfulness scores the maps of --gradcam and --attention-map" in result.stderr
    result = runner.invoke(app, ["visualize", "--filters", "--target", "3", "--model", str(tiny_vit_dir)])
    assert result.exit_code == 2 and "--target" in result.stderr
    result = runner.invoke(app, ["visualize", "--gradcam", "--model", str(tiny_vit_dir)])
    assert result.exit_code == 2 and "--gradcam needs images" in result.stderr


def test_cli_without_the_package_is_one_line_with_the_install_hint(tiny_vit_dir, make_images, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import pytorch_grad_cam -> ImportError
    result = runner.invoke(app, ["visualize", "--gradcam", "--model", str(tiny_vit_dir), str(make_images(1)[0])])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "need the optional grad-cam package" in result.stderr and "pip install 'vitcli[gradcam]'" in result.stderr


def test_cli_random_init(make_images, tmp_path):
    folder = save_hub_layout(make_tiny_vit(seed=1), tmp_path / "vit")  # --random-init draws with seed 0
    image = str(make_images(1)[0])
    npys = []
    for i, extra in enumerate(([], ["--random-init"], ["--random-init"])):
        result = runner.invoke(
            app,
            [
                "visualize",
                "--gradcam",
                "--model",
                str(folder),
                image,
                *extra,
                "--json",
                "--out-dir",
                str(tmp_path / str(i)),
            ],
        )
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["random_init"] is bool(extra)
        npys.append(np.load(tmp_path / str(i) / "gradcam" / "img000.npy"))
    assert not np.array_equal(npys[0], npys[1])  # not the trained weights
    assert np.array_equal(npys[1], npys[2])  # the same random weights every run


def test_cli_poolformer_s12_random_init(tmp_path):
    from PIL import Image

    image = tmp_path / "stripes.png"
    stripes = np.zeros((240, 240, 3), dtype=np.uint8)
    stripes[:, ::40] = 255
    Image.fromarray(stripes).save(image)
    result = runner.invoke(
        app,
        [
            "visualize",
            "--gradcam",
            "--model",
            "poolformer_s12",
            "--random-init",
            str(image),
            "--json",
            "--out-dir",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    g = json.loads(result.stdout)["gradcam"]
    assert (g["layer"], g["layer_kind"], g["grid"]) == ("stages.3", "feature map", [7, 7])
    assert np.load(tmp_path / "out" / "gradcam" / "stripes.npy").shape == (224, 224)
    assert (tmp_path / "out" / "gradcam" / "stripes.png").read_bytes()[:4] == b"\x89PNG"


# --- the real ViT-Ti ------------------------------------------------------------------------------------------


@pytest.mark.assets
@pytest.mark.slow
def test_real_vit_tiny_gradcam_is_more_faithful_than_a_random_map(assets, tmp_path):
    import json

    from typer.testing import CliRunner

    from vitcli.cli.app import app

    images = sorted((assets / "images" / "imagenet-val-100" / "images").glob("*.JPEG"))[:20]
    invoked = CliRunner().invoke(
        app,
        [
            "visualize",
            *map(str, images),
            "--model",
            str(assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
            "--gradcam",
            "--faithfulness",
            "--faithfulness-steps",
            "10",
            "--out-dir",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--batch-size",
            "20",
            "--json",
        ],
    )
    assert invoked.exit_code == 0, invoked.stderr
    result = json.loads(invoked.stdout)
    f = result["faithfulness"]
    assert result["faithfulness_setup"]["num_images"] == 20
    assert f["gradcam"]["deletion_auc"] < f["random"]["deletion_auc"]
    assert f["gradcam"]["insertion_auc"] > f["random"]["insertion_auc"]
