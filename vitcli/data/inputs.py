"""What a user names as images: files, folders, globs, http(s) URLs, `-` (an image on stdin) and
list files (`--list FILE`: one path or URL per line), expanded into the images to read.

Folders are searched recursively and globs may use `**`; both follow symbolic links, but each real
directory is entered once and each real file kept once, so a link to `.` or two links to each other
can neither repeat an image nor hang the walk. Hidden files and folders (`.name`) are left out, as
glob does. A file named explicitly is kept whatever its extension (so a bad file is reported, not
skipped); folders and globs keep files with image extensions, and one that holds none is reported.
A URL is kept as it is (vitcli.data.urls fetches it when the image is read) and shown as the path.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from pathlib import Path

from vitcli.errors import UsageError

EMPTY_FOLDER = "the folder holds no image files"
IMAGE_EXTENSIONS = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".jfif",
    ".heic",
    ".heif",
    ".avif",
}


class StdinImage(str):
    """`-`: the image read from standard input, carried with its bytes."""

    def __new__(cls, data: bytes):
        item = super().__new__(cls, "-")
        item.data = data
        return item

    def __reduce__(self):  # into DataLoader workers, bytes and all
        return StdinImage, (self.data,)


def read_list(path: Path) -> list[str]:
    """The paths and URLs of a list file, one per line (blank lines and # comments left out)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise UsageError(f"--list {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--list {path} is not UTF-8 text", "one path or URL per line") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def walk(root: Path):
    """Every file below `root` (links followed, each real directory once), as paths under `root`."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # a loop, or a second link to a folder already walked
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            yield Path(folder) / name


def _matches(parts: list[str], pattern: list[str]) -> bool:
    """Path components against glob components; `**` matches any number of components."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def glob_files(pattern: str) -> list[Path]:
    """The files a glob names. Without `**`, glob's own one-level expansion; with it, one safe walk
    from the pattern's fixed prefix."""
    pattern = os.path.expanduser(pattern)
    if "**" not in pattern:
        return [Path(m) for m in glob.glob(pattern) if os.path.isfile(m)]
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    rest = list(parts[fixed:])
    return [f for f in walk(root) if _matches(list(f.relative_to(root).parts), rest)]


def expand_inputs(inputs: list[str], list_file: Path | None = None) -> tuple[list, list[tuple[str, str]]]:
    """Files, folders (recursive, sorted), globs, URLs, `-` and the lines of `list_file` -> (the images in
    the order given, each real file once: Paths, URL strings, a StdinImage; the inputs that name no
    image, with the reason)."""
    import sys

    from vitcli.data.urls import is_url

    paths: list = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p) -> None:
        real = p if isinstance(p, str) else os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            paths.append(p)

    for item in list(inputs) + (read_list(list_file) if list_file is not None else []):
        if is_url(item):
            add(item)
            continue
        if item == "-":
            if "-" not in seen:
                add(StdinImage(sys.stdin.buffer.read()))
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in walk(p) if is_image_file(f) and f.is_file())
            if not found:
                missing.append((item, EMPTY_FOLDER))
            for f in found:
                add(f)
        elif p.exists():
            add(p)
        elif glob.has_magic(item):
            found = sorted(f for f in glob_files(item) if is_image_file(f))
            if not found:
                missing.append((item, "the pattern matches no image files"))
            for f in found:
                add(f)
        else:
            missing.append((item, "no such file or folder"))
    if not paths and all(reason == EMPTY_FOLDER for _, reason in missing):
        raise UsageError("no images found in the given inputs", "give image files, folders or globs")
    return paths, missing
