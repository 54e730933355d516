"""Hundreds of malformed search spaces, each refused with exit code 2, one line per problem that
names the field by its full path (`search.conv1_kernel.values[1]`, not only `search`), no
traceback, and without Ray ever being imported (so no Ray process starts).

The cases are generated from the shipped default space by a table of mutations (wrong types,
unknown keys, empty choices, inverted ranges, absurd resources, infeasible kernel/stride/size
combinations) plus raw-byte cases (non-YAML, huge files, alias bombs)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "searchspaces" / "default.yaml").read_text())

# (path into the spec, value to put there, the field path the message must name)
WRONG_VALUES = {
    ("name",): ["has space", "../up", "", 7, None, ["a"]],
    ("data", "dataset"): ["imagenet21k", 3, "", None],
    ("data", "image_size"): [0, -67, "67px", 2.5, 10**9],
    ("data", "val_fraction"): [0, 1, 1.5, -0.1, "a fifth"],
    ("data", "download"): ["maybe", 3],
    ("data", "augmentation", "crop"): ["center", 1],
    ("data", "augmentation", "lighting"): [-0.1, "paper"],
    ("model", "family"): ["vgg16", "", 5, None],
    ("model", "knobs", "width_mult"): [0, -1, "big", 100],
    ("model", "knobs", "groups"): [0, "two", 1.5],
    ("train", "optimizer"): ["adam", "SGD", 1],
    ("train", "lr"): [0, -0.1, "fast"],
    ("train", "momentum"): [1.0, -0.5],
    ("train", "batch_size"): [0, -64, 3.5, "big"],
    ("train", "schedule"): ["linear", None],
    ("budget", "max_epochs"): [0, -1, 2.5, "ten"],
    ("budget", "num_samples"): [0, -8, "all"],
    ("budget", "metric"): ["accuracy", "", 1],
    ("budget", "mode"): ["min", "maximum"],
    ("budget", "seeds"): [0, -2],
    ("searcher", "type"): ["bayes", "", 3],
    ("searcher", "n_startup_trials"): [0, "ten"],
    ("scheduler", "type"): ["pbt", ""],
    ("scheduler", "grace_period"): [0, 100, "two"],
    ("scheduler", "reduction_factor"): [1, 0.5, "half"],
    ("resources", "workers_per_trial"): [0, -1, 1.5],
    ("resources", "cpus_per_worker"): [0, -2, "all"],
    ("resources", "gpus_per_worker"): [-1, 1.5, "one"],
    ("resources", "max_concurrent_trials"): [0, -3],
    ("resources", "backend"): ["mpi", "nccl"],
    ("storage",): ["", "ftp://host/results", 5],
    ("search", "conv1_kernel", "values"): [[], [11, "eleven"], [11, 0], "11,7", None],
    ("search", "conv1_kernel", "type"): ["categorical", None],
    ("search", "conv1_stride", "values"): [[], [4, -2], [4, 4.5]],
    ("search", "fc_width", "values"): [[0], ["wide"], [256, 256]],
    ("search", "dropout", "low"): [0.9, 1.0, "none", -0.5],
    ("search", "dropout", "high"): [0.0, 1.0, 5, None],
    ("search", "lrn", "values"): [[], ["yes", "no"]],
}
UNKNOWN_KEYS = [(("nmae",), "x"), (("data", "datset"), "digits"), (("model", "knobs", "kernel"), 7),
                (("train", "learning_rate"), 0.1), (("budget", "epochs"), 3),
                (("searcher", "sed"), 1), (("resources", "gpus"), 1), (("search", "conv1_kernal"),
                {"type": "choice", "values": [7]}), (("search", "lr", "logg"), True),
                (("scheduler", "grace"), 1)]


# Where the message names another field than the mutated one: a list's bad item by its index,
# or the range check that compares high with low. Every other case names the mutated field.
FIELD: dict[tuple[tuple, str], str] = {
    **{(("search", k, "values"), "[[1, 2]]"): f"search.{k}.values[0]:"
       for k in ("conv1_kernel", "conv1_stride", "fc_width", "lrn")},
    (("search", "conv1_kernel", "values"), "[11, 'eleven']"): "search.conv1_kernel.values[1]:",
    (("search", "conv1_kernel", "values"), "[11, 0]"): "search.conv1_kernel.values[1]:",
    (("search", "conv1_stride", "values"), "[4, -2]"): "search.conv1_stride.values[1]:",
    (("search", "conv1_stride", "values"), "[4, 4.5]"): "search.conv1_stride.values[1]:",
    (("search", "fc_width", "values"), "[0]"): "search.fc_width.values[0]:",
    (("search", "fc_width", "values"), "['wide']"): "search.fc_width.values[0]:",
    (("search", "lrn", "values"), "['yes', 'no']"): "search.lrn.values[1]:",
    (("search", "dropout", "low"), "0.9"): "search.dropout.high: 0.5 → high must be greater "
                                          "than low (0.9)",
    (("search", "dropout", "low"), "1.0"): "search.dropout.high: 0.5 → high must be greater "
                                          "than low (1.0)",
}


def _set(spec: dict, path: tuple, value) -> dict:
    spec = copy.deepcopy(spec)
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict | None) else node[key]
    node[path[-1]] = value
    return spec


def leaves(node: dict, prefix: tuple = ()) -> list[tuple]:
    """Every path to a scalar or list in the spec."""
    out = []
    for key, value in node.items():
        path = (*prefix, key)
        out += leaves(value, path) if isinstance(value, dict) and value else [path]
    return out


def cases() -> list[tuple[str, bytes, str]]:
    """(case id, file bytes, the text the error must contain)."""
    out = []
    for path in leaves(DEFAULT):  # a mapping or a nested list where a value belongs
        for wrong in ({"nested": 1}, [[1, 2]]):
            spec = _set(DEFAULT, path, wrong)
            out.append((f"{'.'.join(map(str, path))}={wrong!r}", yaml.safe_dump(spec).encode(),
                        FIELD.get((path, repr(wrong)), ".".join(map(str, path)) + ":")))
    for path, values in WRONG_VALUES.items():
        for v in values:
            spec = _set(DEFAULT, path, v)
            if path[0] == "search" and path[1] == "lr":
                spec["search"]["lr"] = {"type": "float", "low": 0.01, "high": 0.1}
            out.append((f"{'.'.join(path)}={v!r}", yaml.safe_dump(spec).encode(),
                        FIELD.get((path, repr(v)), ".".join(path) + ":")))
    for path, v in UNKNOWN_KEYS:
        spec = copy.deepcopy(DEFAULT)
        spec.setdefault("search", {})["lr"] = {"type": "float", "low": 0.01, "high": 0.1}
        out.append((f"unknown {'.'.join(path)}", yaml.safe_dump(_set(spec, path, v)).encode(),
                    path[-1]))
    for missing in ("name", "model"):
        spec = {k: v for k, v in DEFAULT.items() if k != missing}
        out.append((f"missing {missing}", yaml.safe_dump(spec).encode(), missing))
    # infeasible corners: 11x11/4 needs at least 67 px with AlexNet's pools
    for size in (32, 48, 63, 66):
        spec = _set(DEFAULT, ("data", "image_size"), size)
        out.append((f"infeasible at {size}px", yaml.safe_dump(spec).encode(), "image_size"))
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           b"c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    raw = [("non-yaml bytes", b"\x89PNG\r\n\x1a\n\x00\x00", "UTF-8"),
           ("tabs and colons", b"name: x\n\tmodel: : :\n", "YAML"),
           ("a list", b"- name: x\n", "mapping"), ("empty file", b"", "mapping"),
           ("just a string", b"hello", "mapping"), ("alias bomb", bomb, "alias"),
           ("huge file", b"name: x\n" + b"#" * (2 << 20), "1 MiB"),
           ("duplicate key", b"name: a\nname: b\nmodel: {family: lenet5}\n", "duplicate"),
           ("unclosed bracket", b"name: [x\n", "YAML")]
    return out + raw


# One interpreter runs submit's main on every command line (a process per case would spend
# minutes importing torch) and reports each exit code, its stderr and whether Ray got imported.
RUN_MAIN = """
import contextlib, io, json, sys
from service.submit import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException as e:
            rc, err = "raised", io.StringIO(repr(e))
    out.append([rc, err.getvalue()])
print(json.dumps({"results": out, "ray": "ray" in sys.modules}))
"""


def run_main(argvs: list[list[str]]) -> dict:
    """{"results": [[exit code, stderr], ...], "ray": imported?} for each command line."""
    proc = subprocess.run([sys.executable, "-c", RUN_MAIN, json.dumps(argvs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_at_least_200_malformed_spaces_are_each_refused_cleanly(tmp_path):
    all_cases = cases()
    assert len(all_cases) >= 200
    paths = []
    for i, (_, data, _) in enumerate(all_cases):
        path = tmp_path / f"case{i:03d}.yaml"
        path.write_bytes(data)
        paths.append(str(path))
    report = run_main([[path, "--dry-run"] for path in paths])
    assert report["ray"] is False
    for (case, _, needle), path, (rc, err) in zip(all_cases, paths, report["results"],
                                                   strict=True):
        assert rc == 2, f"{case}: exit {rc}\n{err}"
        lines = err.strip().splitlines()
        assert lines, case
        assert "Traceback" not in err, f"{case}\n{err}"
        assert all(line.startswith(path) for line in lines), f"{case}\n{err}"
        assert needle in err, f"{case}: {needle!r} not in\n{err}"


@pytest.mark.slow  # seconds in a subprocess
def test_bad_flags_and_unwritable_results_are_refused_in_one_line(tmp_path):
    space = str(ROOT / "searchspaces" / "default.yaml")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    flag_cases = [  # (argv, a piece of the one line that must name the problem)
        (["--max-epochs", "many"], "--max-epochs"),
        (["--max-epochs"], "--max-epochs"),
        (["--num-samples", "1e9"], "--num-samples"),
        (["--max-epochs", "0", "--dry-run"], "budget.max_epochs"),
        (["--num-samples", "-3", "--dry-run"], "budget.num_samples"),
        (["--bogus"], "--bogus"),
        (["--address"], "--address"),
        ([space, "extra-positional"], "extra-positional"),
        ([str(tmp_path / "missing.yaml"), "--dry-run"], "missing.yaml"),
        ([str(tmp_path), "--dry-run"], str(tmp_path)),
        ([space, "--resume", "no-such-run", "--results", str(tmp_path)], "no-such-run"),
        ([space, "--results", str(a_file)], str(a_file)),
        ([space, "--results", str(a_file / "below-a-file")], str(a_file)),
    ]
    report = run_main([a for a, _ in flag_cases])
    assert report["ray"] is False  # refused before Ray could start
    for (argv, needle), (rc, err) in zip(flag_cases, report["results"], strict=True):
        assert rc == 2, f"{argv}: exit {rc}\n{err}"
        assert len(err.strip().splitlines()) == 1, f"{argv}\n{err}"
        assert "Traceback" not in err and needle in err, f"{argv}: {needle!r} not in\n{err}"
