"""Reading images the way a user expects, for every command.

PIL's defaults get several things wrong for model input: EXIF orientation is ignored, transparent
pixels become black, 16-bit greyscale is clipped to near white by `convert("RGB")`, and decompression
bombs only warn between 1x and 2x the pixel limit. `load_image` fixes each, and turns every failure
into an `ImageError` that says why, so callers can report that file and carry on with the rest.

The pixel limit (VIT_MAX_IMAGE_PIXELS, default PIL's own) is one limit, always an error, checked by
`load_image` on each call; PIL's global setting is left as it was.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitcli import env
from vitcli.errors import ImageError
from vitcli.output import display

# The raster formats vitcli lets PIL open (whatever the file's name says). Anything else (EPS, which
# PIL hands to Ghostscript, PSD, ICO, the scientific formats...) is "not a supported image format".
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF", "HEIF")  # JPEG's opener reads MPO too
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, PPM; HEIC and AVIF"
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")

_PIL_LIMIT = threading.Lock()


@contextmanager
def _without_pil_limit():
    """PIL checks `Image.MAX_IMAGE_PIXELS` inside `Image.open` (a warning between 1x and 2x): vitcli checks
    the size itself, always as an error, so PIL's check is off for that one call."""
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _formats() -> list[str]:
    """FORMATS that this PIL can open (HEIF once pillow-heif is registered, AVIF in Pillow >= 11.3)."""
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


def _register_heif() -> bool:
    try:
        import pillow_heif  # type: ignore

        pillow_heif.register_heif_opener()
        return True
    except ImportError:
        return False


def _is_heif(suffix: str, head: bytes) -> bool:
    return (len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS) or suffix.lower() in {
        ".heic",
        ".heif",
    }


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit int) greyscale: rescale the full range to 8 bits instead of clipping.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = (
        mode in ("RGBA", "LA", "PA", "La", "RGBa")
        or (mode == "P" and "transparency" in im.info)
        or (mode in ("L", "RGB") and "transparency" in im.info)
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return im
    return im.convert("RGB")  # L, 1, P, CMYK (inverted Adobe JPEGs handled by PIL), YCbCr, LAB, HSV


def load_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Open `path` as an upright RGB image, or raise `ImageError` naming the reason.

    `draft_size`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (PIL's `draft`, done in the DCT, much
    faster) as long as both sides stay at least this many pixels; callers pass the short side their
    resize step produces. Other formats ignore it.
    """
    path = Path(path)
    shown = display(path)
    try:
        _check_regular(path)
        with open(path, "rb") as fh:
            head = fh.read(32)
    except IsADirectoryError:
        raise ImageError(shown, "is a folder, not an image") from None
    except FileNotFoundError:
        raise ImageError(shown, "no such file") from None
    except OSError as e:
        raise ImageError(shown, f"cannot read ({e.strerror or e})") from None
    return _decode(path, shown, head, path.suffix, draft_size)


def _check_regular(path: Path) -> None:
    """Only regular files are read: a FIFO, a socket or a device (`/dev/zero`, `/dev/stdin`) would block
    or never end. Checked on the opened file (non-blocking, so a FIFO without a writer cannot hang)."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ImageError(display(path), f"{kind}, not a regular file", "give an image file (for a stream, use -)")


def decode_image(data: bytes, name: str, draft_size: int | None = None) -> Image.Image:
    """`load_image` for an image held in memory (a URL's body, stdin, a dataset row's encoded image);
    `name` is how it is shown. Decoded exactly as the file would be."""
    import io

    return _decode(io.BytesIO(data), name, data[:32], Path(name.split("?")[0]).suffix, draft_size)


def _decode(source, shown: str, head: bytes, suffix: str, draft_size: int | None) -> Image.Image:
    if not head:
        raise ImageError(shown, "empty file")
    if _is_heif(suffix, head) and not _register_heif():
        raise ImageError(shown, "HEIC/HEIF images need the optional pillow-heif package", "pip install 'vitcli[heif]'")
    limit = env.max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _without_pil_limit():  # our check below is the one limit
                im = Image.open(source, formats=_formats())
            width, height = im.size
            if width * height > limit:
                raise ImageError(
                    shown,
                    f"{width}x{height} = {width * height:,} pixels is over the limit of {limit:,} "
                    "(possible decompression bomb)",
                    "raise VIT_MAX_IMAGE_PIXELS if you trust the file",
                )
            if getattr(im, "is_animated", False):
                im.seek(0)  # animated GIF/WebP/APNG: the first frame
            if draft_size and im.format in ("JPEG", "MPO"):
                im.draft(None, (draft_size, draft_size))
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return _to_rgb(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(shown, f"not an image in a supported format ({FORMAT_NAMES})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(shown, str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower() or isinstance(e, EOFError):
            reason = f"truncated or corrupt image data ({reason})"
        raise ImageError(shown, reason) from None
