"""A broken image in an imagefolder tree, on real PNG files: the dataset's item names the file
in one DataError line; `python -m service.submit` refuses the tree before Ray starts (exit 2,
one line per broken file); above the pre-flight limit a sweep's trials fail with that line,
printed once for all of them and kept per trial in summary.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import lenet_space
from PIL import Image

from service.cli import Exit
from service.config.data import DataConfig, DataError
from service.config.spec import load_spec
from service.results.records import TrialRecord
from service.submit import check_data
from service.training.data import build_datasets
from service.training.images import (
    CHECK_MAX_FILES_ENV,
    IMAGE_EXTENSIONS,
    SHOWN_PROBLEMS,
    check_images,
    image_files,
    load_image,
)
from service.tune.console import error_lines
from service.tune.summary import error_line

ROOT = Path(__file__).resolve().parents[1]
TRUNCATED = "cannot read image (image file is truncated)"


def write_tree(root: Path, classes: tuple[str, ...] = ("class_a", "class_b"),
               per_class: int = 12, seed: int = 0) -> list[Path]:
    """`per_class` 32x32 RGB PNGs in one folder per class under `root`; their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            path = root / c / f"img_{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def truncate(path: Path) -> Path:
    """Keep only the first half of the file's bytes, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def broken_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A 2-class tree of 24 PNGs in which class_a/img_005.png is cut in half: (root, file)."""
    root = (tmp_path / "tree").resolve()  # the paths ImageFolder names
    paths = write_tree(root)
    return root, truncate(paths[5])


def test_the_item_of_a_truncated_image_raises_one_line_naming_the_file(broken_tree) -> None:
    root, broken = broken_tree
    cfg = DataConfig(dataset="imagefolder", root=str(root), val_fraction=0.25)
    d = build_datasets(cfg, image_size=32, in_channels=3)
    raised = []
    for split in (d.train, d.val):
        for i in range(len(split)):
            path = split.base.samples[int(split.indices[i])][0]
            try:
                x, _ = split[i]
            except DataError as err:
                raised.append((path, str(err)))
            else:
                assert x.shape == (3, 32, 32)
    assert raised == [(str(broken), f"data: {broken}: {TRUNCATED}")]


def test_the_pre_flight_check_lists_broken_files_and_stops_at_its_limit(tmp_path) -> None:
    root = tmp_path / "tree"
    paths = write_tree(root, per_class=8)
    # 12 broken files: 10 named, then the count of the rest
    for p in paths[:11]:
        truncate(p)
    paths[11].write_bytes(b"not a png at all")
    found = check_images(root)
    assert found.checked == 16 and found.skipped is None and len(found.problems) == 12
    assert found.problems[0] == f"{paths[0]}: {TRUNCATED}"
    assert f"{paths[11]}: cannot read image (not an image file PIL can read)" in found.problems
    lines = found.lines()
    assert len(lines) == SHOWN_PROBLEMS + 1 and lines[-1] == "and 2 more broken image files"
    above = check_images(root, limit=15)
    assert not above.problems and "more than 15 image files" in above.skipped
    assert check_images(root, limit_bytes=100).skipped  # the byte budget too


def test_the_check_reads_the_files_imagefolder_reads(tmp_path) -> None:
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS
    write_tree(tmp_path / "flat", per_class=3)
    (tmp_path / "flat" / "class_a" / "notes.txt").write_text("not an image")
    (tmp_path / "flat" / "class_b" / "deeper").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "class_b" / "deeper" / "UPPER.PNG")
    for split in ("train", "val"):
        write_tree(tmp_path / "split" / split, per_class=2)
    for root, folders in ((tmp_path / "flat", [""]), (tmp_path / "split", ["train", "val"])):
        expected = [Path(p) for f in folders for p, _ in ImageFolder(root / f).samples]
        assert list(image_files(root)) == expected


def test_an_error_line_is_the_data_errors_own_message_once_per_distinct_error(
        broken_tree) -> None:
    _, broken = broken_tree
    with pytest.raises(DataError) as caught:
        load_image(str(broken))
    text = "".join(traceback.format_exception(caught.value))  # what Ray's task error ends with
    assert text.splitlines()[-1].endswith(f"DataError: data: {broken}: {TRUNCATED}")
    assert error_line(text) == f"data: {broken}: {TRUNCATED}"
    assert error_line("Traceback ...\nOSError: [Errno 28] No space left on device\n") == (
        "OSError: [Errno 28] No space left on device")
    trials = [TrialRecord.from_history(f"t{i}", {}, "error", [], error_line(text))
              for i in range(5)]
    trials.append(TrialRecord.from_history("t5", {}, "error", [], "RuntimeError: other"))
    trials.append(TrialRecord.from_history("t6", {}, "completed", [{"epoch": 1}]))
    assert error_lines(trials) == [f"5 trials (t0, t1, t2 and 2 more): data: {broken}: "
                                   f"{TRUNCATED}", "t5: RuntimeError: other"]


def submit(space: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.submit", str(space), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def broken_space(tmp_path: Path, root: Path) -> Path:
    """A 2-trial, 1-epoch LeNet-5 grid over the imagefolder tree at `root`, at 32 px."""
    spec = lenet_space("broken", {"lr": {"type": "choice", "values": [0.05, 0.01]}}, 1)
    spec["data"] = {"dataset": "imagefolder", "root": str(root), "image_size": 32}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow  # seconds in a subprocess
@pytest.mark.parametrize("dry_run", [True, False])
def test_submit_refuses_a_broken_tree_before_ray_starts(tmp_path, broken_tree, dry_run) -> None:
    root, broken = broken_tree
    space = broken_space(tmp_path, root)
    proc = submit(space, *(["--dry-run"] if dry_run else []), "--results",
                  str(tmp_path / "results"))
    assert proc.returncode == Exit.BAD_INPUT, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"{space}: data: {broken}: {TRUNCATED}"]
    assert not (tmp_path / "results").exists()  # nothing started


def test_a_tree_above_the_limit_is_not_opened_and_says_so(tmp_path, broken_tree, capsys,
                                                           monkeypatch) -> None:
    root, _ = broken_tree
    space = broken_space(tmp_path, root)
    spec = load_spec(str(space))
    monkeypatch.setenv(CHECK_MAX_FILES_ENV, "10")
    assert check_data(spec, str(space), quiet=False) is None
    assert capsys.readouterr().out.splitlines() == [
        f"data: {root} has more than 10 image files: not opened before the sweep (a broken "
        "image fails its trials with one line naming it)"]
    assert check_data(spec, str(space), quiet=True) is None
    assert capsys.readouterr().out == ""  # -q: only the final table
    monkeypatch.delenv(CHECK_MAX_FILES_ENV)
    assert check_data(spec, str(space), quiet=True) == Exit.BAD_INPUT


@pytest.mark.slow
def test_a_sweep_over_a_broken_tree_prints_its_error_once(tmp_path, broken_tree) -> None:
    root, broken = broken_tree
    proc = submit(broken_space(tmp_path, root), "-q", "--no-report", "--results",
                  str(tmp_path / "results"), env={CHECK_MAX_FILES_ENV: "0"}, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == Exit.TRIALS_FAILED, out
    assert out.count(str(broken)) == 1, out
    assert "2 trials (" in out and f"): data: {broken}: {TRUNCATED}" in out, out
    assert "Traceback" not in out and "Trial task failed" not in out, out
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    assert [(t["status"], t["error"]) for t in summary["trials"]] == (
        [("error", f"data: {broken}: {TRUNCATED}")] * 2)
