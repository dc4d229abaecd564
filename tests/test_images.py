"""Image loading: every awkward case a user's folder of photos contains."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitcli.data.images import load_image
from vitcli.data.inputs import expand_inputs
from vitcli.errors import ImageError


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # stored landscape 40x20
    arr[:, :20] = 255  # left half white
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)  # displayed portrait
    top = np.asarray(out)[:5].mean()
    bottom = np.asarray(out)[-5:].mean()
    assert top > 200 and bottom < 50  # the white left half is now at the top


def test_rgba_transparent_pixels_become_background_not_black(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    arr[:4, :, :] = (255, 0, 0, 255)  # opaque red top half
    path = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3)
    assert (out[:4] == (255, 0, 0)).all()
    assert (out[4:] == (255, 255, 255)).all()


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (6, 6), 0)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 3, 6))
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    out = np.asarray(load_image(path))
    assert (out[:, :3] == (0, 255, 0)).all()
    assert (out[:, 3:] == (255, 255, 255)).all()  # index 0 is transparent -> background


def test_cmyk_and_greyscale_convert_to_rgb(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(cmyk)  # red in CMYK
    out = np.asarray(load_image(cmyk)).astype(int)
    assert out.shape == (10, 10, 3) and out[..., 0].mean() > 200 and out[..., 1].mean() < 60
    grey = tmp_path / "grey.png"
    Image.new("L", (10, 10), 128).save(grey)
    assert np.asarray(load_image(grey)).mean() == pytest.approx(128, abs=1)


def test_16bit_greyscale_is_rescaled_not_clipped(tmp_path):
    arr = np.full((10, 10), 32768, np.uint16)  # mid grey in 16 bits
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).convert("RGB").getpixel((0, 0))[0] == 255  # what PIL alone does
    out = np.asarray(load_image(path))
    assert out.mean() == pytest.approx(128, abs=1)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = np.asarray(load_image(path))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


@pytest.mark.parametrize("side", [11, 20])  # 121 px: between 1x and 2x the limit; 400 px: above 2x
def test_decompression_bombs_are_refused_at_any_size(tmp_path, monkeypatch, side):
    monkeypatch.setenv("VIT_MAX_IMAGE_PIXELS", "100")
    path = tmp_path / "big.png"
    Image.new("RGB", (side, side)).save(path)
    with pytest.raises(ImageError, match="over the limit of 100"):
        load_image(path)
    monkeypatch.setenv("VIT_MAX_IMAGE_PIXELS", "1000")
    assert load_image(path).size == (side, side)


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not an image"),
    ],
)
def test_bad_files_give_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "t.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(path)


def test_heic_names_the_optional_extra(tmp_path):
    path = tmp_path / "photo.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32)
    try:
        import pillow_heif  # noqa: F401

        pytest.skip("pillow-heif is installed")
    except ImportError:
        pass
    with pytest.raises(ImageError, match="pillow-heif") as info:
        load_image(path)
    assert "vitcli[heif]" in info.value.hint


def test_expand_inputs_files_folders_globs(tmp_path, make_images):
    a = make_images(2, folder=tmp_path / "a")
    b = make_images(2, folder=tmp_path / "a" / "sub", fmt="jpg")
    (tmp_path / "a" / "notes.txt").write_text("x")
    paths, missing = expand_inputs(
        [str(tmp_path / "a"), str(tmp_path / "a" / "*.png"), "nope.jpg", str(tmp_path / "*.gif")]
    )
    assert paths == sorted(a + b)  # folder recursive, de-duplicated, no .txt
    assert [m[0] for m in missing] == ["nope.jpg", str(tmp_path / "*.gif")]
