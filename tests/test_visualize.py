"""`vit visualize`: the analysis maths on constructed inputs, attention extraction on tiny ViTs, the CLI,
and the paper's observations on the real ViT-Ti (skipped without ../shared/assets)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli.analysis import maths as analysis
from vitcli.analysis.attention import (
    AttentionRecorder,
    NotAViTError,
    attention_maps,
    attention_modules,
    fused_attention,
    method_for,
    token_layout,
)
from vitcli.cli import app

runner = CliRunner()


# --- mean attention distance -------------------------------------------------------------------------


def _uniform(tokens: int, heads: int = 2, batch: int = 1):
    return torch.full((batch, heads, tokens, tokens), 1.0 / tokens)


def test_distance_of_self_attention_is_zero():
    grid, prefix = (4, 5), 1
    attn = torch.eye(prefix + 20).expand(3, 2, -1, -1)  # every token attends only to itself
    d = analysis.mean_attention_distance(attn, grid, (16, 16), prefix)
    assert d.shape == (3, 2)
    assert torch.all(d == 0)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_distance_of_uniform_attention_is_the_mean_pairwise_distance(n):
    # Analytic: offsets (dy, dx) between two cells of an n x n grid occur (n - |dy|)(n - |dx|) times.
    offsets = range(-(n - 1), n)
    expected = sum((n - abs(dy)) * (n - abs(dx)) * math.hypot(dy, dx) for dy in offsets for dx in offsets) / n**4
    patch = 16
    # uniform over the class token too: dropping it and renormalising leaves uniform over the patches
    d = analysis.mean_attention_distance(_uniform(1 + n * n), (n, n), (patch, patch), num_prefix=1)
    assert torch.allclose(d, torch.full_like(d, patch * expected), rtol=1e-9)
    if n == 2:  # by hand: 0, 1, 1, sqrt(2) from each of the four patches
        assert d[0, 0].item() == pytest.approx(patch * (2 + math.sqrt(2)) / 4)


def test_distance_uses_patch_height_and_width_and_renormalises_prefix_weight():
    # grid 1 x 2 of 4 x 8 px patches: the two centres are 8 px apart.
    # Query patch 0 gives half its weight to the class token, half to patch 1 -> after renormalising: 8 px.
    attn = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])[None, None]
    d = analysis.mean_attention_distance(attn, (1, 2), (4, 8), num_prefix=1)
    assert d.item() == pytest.approx((8.0 + 4.0) / 2)  # query 0: 8 px, query 1: half on 0 px, half on 8 px


# --- rollout -----------------------------------------------------------------------------------------


def test_rollout_of_identity_attention():
    tokens = 1 + 9
    maps = [torch.eye(tokens).expand(2, 3, -1, -1) for _ in range(4)]
    r = analysis.rollout(maps, num_prefix=1)
    assert r.shape == (2, 9) and torch.all(r == 0)  # the class token only ever looked at itself
    r = analysis.rollout([torch.eye(9).expand(1, 3, -1, -1)] * 3, num_prefix=0, has_class_token=False)
    assert torch.allclose(r, torch.full((1, 9), 1 / 9, dtype=r.dtype))  # no class token: mean of patch rows


def test_rollout_residual_and_layer_order():
    # tokens: cls, p1, p2. Layer 1: p1 looks at p2. Layer 2: cls looks at p1.
    a1 = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    a2 = torch.tensor([[0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    r = analysis.rollout([a1[None, None], a2[None, None]], num_prefix=1)
    # (A2+I)/2 @ (A1+I)/2, class row: [0.5, 0.25, 0.25] -> patches [0.25, 0.25]; the other order gives [0.5, 0]
    assert torch.allclose(r, torch.tensor([[0.25, 0.25]], dtype=r.dtype))


def test_head_fusion_and_discard_ratio():
    attn = torch.tensor([[[0.2, 0.8], [0.5, 0.5]], [[0.6, 0.4], [0.1, 0.9]]])[None]  # (1, 2 heads, 2, 2)
    assert torch.allclose(analysis.fuse_heads(attn, "max")[0], torch.tensor([[0.6, 0.8], [0.5, 0.9]]))
    assert torch.allclose(analysis.fuse_heads(attn, "min")[0], torch.tensor([[0.2, 0.4], [0.1, 0.5]]))
    with pytest.raises(ValueError):
        analysis.fuse_heads(attn, "median")
    a = torch.tensor([[[0.05, 0.5, 0.45], [0.3, 0.01, 0.69], [0.2, 0.3, 0.5]]])
    kept = analysis.discard_weakest(a, 0.34)  # the 3 smallest: 0.01 and 0.05 (diagonal: kept), 0.2
    assert kept[0, 1, 1] == pytest.approx(0.01) and kept[0, 0, 0] == pytest.approx(0.05)
    assert kept[0, 2, 0] == 0 and (kept == 0).sum() == 1


# --- position embeddings and filters -----------------------------------------------------------------


def test_pos_embed_similarity_has_unit_diagonal_and_finds_neighbours():
    sim = analysis.cosine_similarity_matrix(torch.randn(30, 16))
    assert torch.allclose(sim.diagonal(), torch.ones(30, dtype=sim.dtype))
    assert torch.allclose(sim, sim.T) and sim.abs().max() <= 1 + 1e-9
    # smooth embeddings of a 6 x 5 grid: Gaussian bumps around each cell -> the nearest cell is most similar
    rows, cols = 6, 5
    yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    cells = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    emb = np.exp(-((cells[:, None] - cells[None]) ** 2).sum(-1) / 2.0)
    near = analysis.most_similar_is_neighbour(analysis.cosine_similarity_matrix(torch.tensor(emb)), (rows, cols))
    assert near.all()
    shuffled = analysis.cosine_similarity_matrix(torch.tensor(emb[np.random.default_rng(0).permutation(30)]))
    assert analysis.most_similar_is_neighbour(shuffled, (rows, cols)).float().mean() < 0.9


def test_pca_recovers_constructed_filters():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(3 * 4 * 4, 3)))  # 3 orthonormal filters of shape (3, 4, 4)
    coeff = rng.normal(size=(500, 3)) * np.array([5.0, 2.0, 1.0])
    filters = coeff @ basis.T + 0.01 * rng.normal(size=(500, 48)) + 0.3  # plus a common offset
    comps, ratio = analysis.principal_components(torch.tensor(filters.reshape(500, 3, 4, 4)), 3)
    assert comps.shape == (3, 3, 4, 4)
    overlap = np.abs(comps.reshape(3, -1).numpy() @ basis)
    assert np.allclose(overlap, np.eye(3), atol=0.02)  # component i is basis filter i, up to sign
    assert ratio[0] > ratio[1] > ratio[2] and ratio.sum() > 0.99
    assert torch.all(comps.reshape(3, -1).sum(-1) >= 0)  # the sign convention


# --- attention extraction on tiny ViTs ----------------------------------------------------------------


def test_fused_attention_outputs_equal_explicit_and_hooks_change_nothing():
    model = make_tiny_vit()
    assert all(m.fused_attn for m in attention_modules(model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        with fused_attention(model, False):
            explicit = model(x)
        with AttentionRecorder(model) as rec:
            hooked = model(x)
        assert all(m.fused_attn for m in attention_modules(model))  # restored
        assert torch.allclose(fused, explicit, atol=1e-5)
        assert torch.equal(fused, hooked)  # the hooks only read
        assert len(rec.maps) == 2 and rec.maps[0].shape == (2, 2, 65, 65)
        assert torch.allclose(rec.maps[0].sum(-1), torch.ones(2, 2, 65))
        # the recomputed weights are timm's own explicit softmax (AttentionExtract, fused off)
        extracted = attention_maps(model, x, method="extract")
        assert all(m.fused_attn for m in attention_modules(model))
        for a, b in zip(rec.maps, extracted):
            assert torch.allclose(a, b, atol=1e-6)
        assert torch.equal(model(x), fused)  # no hook left behind


@pytest.mark.parametrize("kind", ["registers", "distilled", "no_class_token_non_square"])
def test_prefix_tokens_and_grids(kind):
    import timm

    torch.manual_seed(0)
    if kind == "registers":
        model, size, prefix, cls = make_tiny_vit(reg_tokens=2, no_embed_class=True), (32, 32), 3, True
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
        size, prefix, cls = (32, 32), 2, True
    else:
        model = make_tiny_vit(img_size=(32, 48), class_token=False, global_pool="avg")
        size, prefix, cls = (32, 48), 0, False
    layout = token_layout(model, size)
    assert (layout.num_prefix, layout.has_class_token) == (prefix, cls)
    assert layout.grid == (size[0] // 4, size[1] // 4) and layout.patch_size == (4, 4)
    assert method_for(model) == "recompute"
    with torch.no_grad():
        maps = attention_maps(model, torch.randn(1, 3, *size))
    assert maps[0].shape[-1] == layout.num_tokens
    r = analysis.rollout(maps, layout.num_prefix, layout.has_class_token).reshape(1, *layout.grid)
    assert torch.isfinite(r).all() and r.sum() > 0
    d = analysis.mean_attention_distance(maps[0], layout.grid, layout.patch_size, layout.num_prefix)
    assert torch.all(d > 0)
    from vitcli.analysis.embeddings import patch_position_embeddings

    pe, grid = patch_position_embeddings(model)
    assert grid == layout.grid and pe.shape == (layout.num_patches, 64)


def test_poolformer_gets_a_clear_error():
    from timm.models.metaformer import MetaFormer

    model = MetaFormer(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=10)
    with pytest.raises(NotAViTError, match="no self-attention.*Pooling"):
        attention_modules(model)


# --- the command ---------------------------------------------------------------------------------------


def test_cli_writes_every_artefact(tiny_vit_dir, make_images, tmp_path):
    images = make_images(3, size=(48, 40))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "visualize",
            "--attention-distance",
            "--attention-map",
            "--pos-embed-similarity",
            "--filters",
            "--model",
            str(tiny_vit_dir),
            "--out-dir",
            str(out),
            "--num-components",
            "8",
            "--json",
            *map(str, images),
        ],
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    names = {
        "attention_distance.png",
        "attention_distance.json",
        "pos_embed_similarity.png",
        "pos_embed_similarity.npy",
        "filters.png",
    }
    names |= {f"rollout/img00{i}.{ext}" for i in range(3) for ext in ("png", "npy")}
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == names
    assert sorted(report["files"]) == sorted(str(out / n) for n in names)
    table = json.loads((out / "attention_distance.json").read_text())
    assert table["patch_size"] == 4 and table["grid"] == [8, 8] and table["num_images"] == 3
    assert np.array(table["distance"]).shape == (2, 2)  # layers x heads
    assert report["attention_distance"]["distance"] == table["distance"]
    assert np.load(out / "rollout" / "img001.npy").shape == (8, 8)
    sim = np.load(out / "pos_embed_similarity.npy")
    assert sim.shape == (64, 64) and np.allclose(np.diag(sim), 1, atol=1e-5)
    assert len(report["filters"]["explained_variance_ratio"]) == 8
    for png in out.rglob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_numbers_runs_and_needs_something_to_do(tiny_vit_dir, make_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["visualize", "--model", str(tiny_vit_dir)])
    assert result.exit_code == 2 and "nothing to draw" in result.stderr
    result = runner.invoke(app, ["visualize", "--attention-distance", "--model", str(tiny_vit_dir)])
    assert result.exit_code == 2 and "needs images" in result.stderr
    for _ in range(2):
        result = runner.invoke(app, ["visualize", "--pos-embed-similarity", "--model", str(tiny_vit_dir)])
        assert result.exit_code == 0, result.stderr
    assert (tmp_path / "runs/visualize/1/pos_embed_similarity.png").is_file()
    assert (tmp_path / "runs/visualize/2/pos_embed_similarity.png").is_file()
    assert "of the patches of the 8x8 grid" in result.stdout


def test_cli_reports_unreadable_images_and_keeps_going(tiny_vit_dir, make_images, tmp_path):
    good = make_images(1)[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["visualize", "--attention-map", str(good), str(bad), "--model", str(tiny_vit_dir), "--out-dir", str(out)]
    )
    assert result.exit_code == 1
    assert "bad.jpg" in result.stderr and "Traceback" not in result.stderr
    assert (out / "rollout" / "img000.png").is_file() and not (out / "rollout" / "bad.png").exists()


def test_cli_non_square_model(make_images, tmp_path):
    folder = save_hub_layout(make_tiny_vit(img_size=(32, 48)), tmp_path / "wide")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "visualize",
            "--attention-map",
            "--pos-embed-similarity",
            str(make_images(1)[0]),
            "--model",
            str(folder),
            "--out-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert np.load(out / "rollout" / "img000.npy").shape == (8, 12)
    assert np.load(out / "pos_embed_similarity.npy").shape == (96, 96)


def test_cli_poolformer_attention_is_a_one_line_error(make_images, tmp_path, monkeypatch):
    from timm.models.metaformer import MetaFormer

    import vitcli.models.resolver

    model = MetaFormer(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=10).eval()
    model.pretrained_cfg = {"architecture": "poolformer_s12"}
    loaded = vitcli.models.resolver.LoadedModel(
        model,
        vitcli.models.resolver.parse_spec("poolformer_s12"),
        "poolformer_s12",
        {
            "input_size": (3, 32, 32),
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
        },
        [str(i) for i in range(10)],
    )
    monkeypatch.setattr(vitcli.models.resolver, "load_model", lambda *a, **k: loaded)
    result = runner.invoke(
        app,
        [
            "visualize",
            "--attention-distance",
            str(make_images(1)[0]),
            "--model",
            "poolformer_s12",
            "--out-dir",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1
    assert "poolformer_s12 has no self-attention blocks" in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(
        app, ["visualize", "--filters", "--model", "poolformer_s12", "--out-dir", str(tmp_path / "out")]
    )
    assert result.exit_code == 0 and (tmp_path / "out" / "filters.png").is_file()


# --- the paper's observations on the real ViT-Ti ---------------------------------------------------------


@pytest.mark.assets
def test_real_vit_tiny_matches_the_paper(assets, tmp_path):
    import json

    from typer.testing import CliRunner

    from vitcli.cli.app import app

    images = assets / "images" / "imagenet-val-100" / "images"
    invoked = CliRunner().invoke(
        app,
        [
            "visualize",
            str(images),
            "--model",
            str(assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
            "--attention-distance",
            "--pos-embed-similarity",
            "--num-images",
            "50",
            "--out-dir",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--batch-size",
            "25",
            "--json",
        ],
    )
    assert invoked.exit_code == 0, invoked.stderr
    result = json.loads(invoked.stdout)
    d = np.array(result["attention_distance"]["distance"])  # (12 layers, 3 heads)
    assert d.shape == (12, 3)
    assert d[0].max() >= 2 * d[0].min()  # the first layer has local and global heads
    assert d[-3:].mean() >= 1.8 * d[:3].mean()  # deeper layers look farther
    assert result["pos_embed_similarity"]["neighbour_fraction"] >= 0.9
