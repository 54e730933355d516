"""An imagefolder tree's image files, read with PIL alone (no torch, no torchvision: the sweep's
driver imports this module for its pre-flight check).

- `load_image` is the loader `training.data` gives torchvision's ImageFolder: it decodes the
  whole file and turns any failure into one DataError line naming the file and the problem,
  e.g. `data: /trees/pets/cat/img_017.png: cannot read image (image file is truncated)`.
- `check_images` is the pre-flight check `python -m service.submit` runs before Ray starts
  (and in a dry run): it lists the files ImageFolder would read and decodes each, when the tree
  is within `CHECK_MAX_FILES` files and `CHECK_MAX_BYTES` bytes; above either it opens none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from service.config.data import DataError

# The file names torchvision's ImageFolder reads (its IMG_EXTENSIONS, compared case-blind;
# tests/test_broken_images.py checks they are the same).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The pre-flight check decodes every image of trees up to 20,000 files and 256 MiB. PIL decodes
# 25-40 MB of PNG or JPEG files a second on 2 CPU cores (32 px PNGs: 0.13 ms each; 320 px
# JPEGs: 0.7 ms; 1024 px JPEGs: 6-10 ms), so the check costs at most about 10 s there. A
# larger tree is not opened before the sweep: a broken file then fails the trials that read
# it, with the same one line. CHECK_MAX_FILES_ENV overrides the file limit (0: never check).
CHECK_MAX_FILES = 20_000
CHECK_MAX_BYTES = 256 * 2**20
CHECK_MAX_FILES_ENV = "CNN_ABLATE_IMAGE_CHECK_MAX_FILES"
SHOWN_PROBLEMS = 10  # broken files listed by name; the rest are counted


def _reason(err: Exception) -> str:
    """What is wrong with a file, in a few words, from the error reading it raised."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image file PIL can read"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror  # e.g. No such file or directory, Permission denied
    text = " ".join(str(err).split())
    return (text or type(err).__name__)[:200]


def image_problem(path: str | Path) -> str | None:
    """`PATH: cannot read image (WHY)` when PIL cannot decode the whole file, else None."""
    try:
        load_image(str(path))
    except DataError as err:
        return str(err).removeprefix("data: ")
    return None


def load_image(path: str) -> Image.Image:
    """The RGB image in `path` (torchvision's default loader, through PIL); DataError naming
    the file when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # decodes every pixel: a truncated file fails here
    except Exception as err:  # noqa: BLE001 - any failure to decode is this file's problem
        raise DataError(f"data: {path}: cannot read image ({_reason(err)})") from err


def image_folders(root: Path) -> list[Path]:
    """The folders whose class sub-folders ImageFolder reads: root/train and root/val when
    both exist, else root (service.training.data)."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        return [root / "train", root / "val"]
    return [root]


def image_files(root: Path) -> Iterator[Path]:
    """The files torchvision's ImageFolder reads from the tree at `root`, in its order: every
    file with an image extension under each class folder, symbolic links followed."""
    for folder in image_folders(root):
        try:
            classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        except OSError:
            continue  # the trial reports a root it cannot read
        for name in classes:
            for where, _, names in sorted(os.walk(folder / name, followlinks=True)):
                for fname in sorted(names):
                    if fname.lower().endswith(IMAGE_EXTENSIONS):
                        yield Path(where) / fname


@dataclass
class ImageCheck:
    """What `check_images` found: `problems` (one line per broken file) among `checked`
    files, or `skipped`, the line saying why none was opened."""

    problems: list[str] = field(default_factory=list)
    checked: int = 0
    skipped: str | None = None

    def lines(self, shown: int = SHOWN_PROBLEMS) -> list[str]:
        """The first `shown` problems, then `and N more` for the rest."""
        more = len(self.problems) - shown
        return self.problems[:shown] + ([f"and {more} more broken image files"] if more > 0 else [])


def max_files() -> int:
    """The file limit of the pre-flight check: CHECK_MAX_FILES, or CHECK_MAX_FILES_ENV's."""
    value = os.environ.get(CHECK_MAX_FILES_ENV, "").strip()
    try:
        return max(0, int(value)) if value else CHECK_MAX_FILES
    except ValueError:
        return CHECK_MAX_FILES


def check_images(root: str | Path, limit: int | None = None,
                 limit_bytes: int = CHECK_MAX_BYTES) -> ImageCheck:
    """Decode every image of the imagefolder tree at `root` (a few threads: PIL decodes
    without holding the GIL), when it has at most `limit` files (default `max_files()`) of
    at most `limit_bytes` in all; above either, none is opened and `skipped` says so."""
    root = Path(root).expanduser().resolve()
    limit = max_files() if limit is None else limit
    files: list[Path] = []
    size = 0
    for path in image_files(root):
        files.append(path)
        try:
            size += path.stat().st_size
        except OSError:
            pass  # unreadable: decoding it names the problem
        if len(files) > limit or size > limit_bytes:
            what = (f"more than {limit:,} image files" if len(files) > limit
                    else f"more than {limit_bytes / 2**20:,.0f} MiB of image files")
            return ImageCheck(skipped=f"data: {root} has {what}: not opened before the sweep "
                                      "(a broken image fails its trials with one line naming it)")
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = pool.map(image_problem, files, chunksize=32)
        return ImageCheck(problems=[p for p in found if p is not None], checked=len(files))
