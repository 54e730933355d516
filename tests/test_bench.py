"""The benchmarks' --quick modes keep working (their numbers belong in docs, not in asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_quick_prints_a_row_per_preset_and_a_headline():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    headline = dict(pair.split("=") for pair in lines[-1].split())
    for name in ("lenet5", "lenet5-1998", "alexnet", "zfnet", "alexnet-torchvision"):
        assert float(headline[f"{name}_fp32_img_s"]) > 0
        assert any(line.startswith(name + " ") for line in lines)
