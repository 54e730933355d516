"""`python -m service.claims table DIR --out FILE` (service/claims/table.py): docs/claims.md is
exactly what it writes from docs/claims/, rows stored before the paired engine get the engine's
Holm p, MDE and verdict recomputed from their per-seed values (not the stored verdict), and a
bad directory or claim file is one line and exit 2. No Ray, no training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from service.claims import registry, table
from service.claims.__main__ import main
from service.claims.design import SPACES
from service.results import paired

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_DIR = ROOT / "docs" / "claims"


def test_docs_claims_md_is_the_table_command_output(tmp_path):
    out = tmp_path / "claims.md"
    proc = subprocess.run([sys.executable, "-m", "service.claims", "table", "docs/claims",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(out)
    committed = (ROOT / "docs" / "claims.md").read_bytes()
    assert out.read_bytes() == committed, (
        "docs/claims.md is not what the table command writes: run "
        "`python -m service.claims table docs/claims --out docs/claims.md`")


def test_the_table_reads_json_only_and_never_imports_torch(tmp_path):
    # Checkpoint measures (torch) load only to run or measure a claim, not to write the table.
    code = ("import sys; from service.claims.__main__ import main; "
            f"rc = main(['table', 'docs/claims', '--out', {str(tmp_path / 'c.md')!r}]); "
            "print(rc, 'torch' in sys.modules, 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.split()[-3:] == ["0", "False", "False"], proc.stdout + proc.stderr


def test_every_claim_has_its_notes_in_the_document():
    text = (ROOT / "docs" / "claims.md").read_text()
    for number in registry.CLAIMS:
        notes = sorted(SPACES.glob(f"{number:02d}_*.md"))
        assert len(notes) == 1, number
        assert notes[0].read_text().strip() in text
        assert f"`python -m service.claims run {number}`" in text
    assert (SPACES / "README.md").read_text().strip() in text


def _engine(row: dict, ratio: bool) -> paired.ArmResult:
    """service.results.paired on a stored row's per-seed values, in the paper's direction."""
    values = [math.log(v) if ratio else v for v in row["per_seed"]]
    mode: paired.Mode = "min" if row["expect"] == "-" else "max"
    return paired.contrast(row["quantity"], dict(enumerate(values)), mode)


def _check_recomputed(name: str, index: int, ratio: bool = False) -> dict:
    stored = json.loads((CLAIMS_DIR / name).read_text())
    assert all("kind" not in r and "p_holm" not in r for r in stored["rows"])  # pre-engine
    directed = [r for r in stored["rows"] if r["expect"] is not None]
    results = paired.adjusted([_engine(r, ratio and r["zero"] == 1.0) for r in directed])
    row = table.read(CLAIMS_DIR / name)["rows"][index]
    expected = results[directed.index(stored["rows"][index])]
    assert row["recomputed"] and row["n"] == expected.n
    assert row["p"] == expected.p
    assert row["p_holm"] == expected.p_adjusted
    scale = math.exp if ratio else float
    if expected.mde is None:
        assert row["mde"] is None
    else:
        assert row["mde"] == pytest.approx(scale(expected.mde), rel=1e-12)
    words = {"helps": "agrees", "hurts": "opposite", "not resolved": "inconclusive"}
    assert row["verdict"] == words[expected.verdict]
    return {"stored": stored["rows"][index], "row": row, "engine": expected}


def test_recomputed_rows_are_the_engines_not_the_stored_verdicts():
    # Claim 5 on MNIST, validation loss: the old interval rule said "agrees"; Holm across the
    # claim's two rows puts p just above 0.05.
    loss = _check_recomputed("claim_05_mnist.json", 1)
    assert loss["stored"]["verdict"] == "agrees" and loss["row"]["verdict"] == "inconclusive"
    assert loss["engine"].p < 0.05 < loss["engine"].p_adjusted
    doc = (ROOT / "docs" / "claims.md").read_text()
    line = (f"| final val loss, 3x3/2 - 2x2/2 | {table.fmt(loss['row'])} | 5 | "
            f"{loss['engine'].p:.2g} | {loss['engine'].p_adjusted:.2g} | "
            f"{loss['engine'].p_perm:.2g} | {loss['engine'].mde:.2f} | — | inconclusive |")
    assert line in doc
    # Claim 8: every seed +4 epochs, no spread: no p, no MDE, inconclusive (stored: agrees).
    settle = _check_recomputed("claim_08.json", 5)
    assert settle["stored"]["verdict"] == "agrees" and settle["row"]["verdict"] == "inconclusive"
    assert settle["row"]["p"] is None and settle["row"]["mde"] is None
    # A ratio row (claim 1, tanh / ReLU): the engine on the logs of the per-seed ratios.
    ratio = _check_recomputed("claim_01.json", 2, ratio=True)
    assert ratio["row"]["kind"] == "ratio" and ratio["row"]["verdict"] == "opposite"
    assert ratio["row"]["mean"] == pytest.approx(
        math.prod(ratio["stored"]["per_seed"]) ** (1 / 5), rel=1e-9)


def test_rows_of_the_engine_are_printed_as_stored(tmp_path):
    row = {"quantity": "q", "kind": "diff", "unit": "pts", "n": 5, "mean": 1.0, "ci_low": 0.5,
           "ci_high": 1.5, "p": 0.01, "p_holm": 0.02, "p_perm": 0.0625, "mde": 0.9,
           "paper": "+1", "expect": "+", "verdict": "agrees", "note": ""}
    path = tmp_path / "claim_04.json"
    path.write_text(json.dumps({"claim": 4, "title": "LRN", "rows": [row], "spaces": []}))
    result = table.read(path)
    assert result["rows"] == [row] and result["variant"] == "digits"
    lines = table.rows_table(result)
    assert ("| q | +1.00 [+0.50, +1.50] pts | 5 | 0.01 | 0.02 | 0.062 | 0.90 pts | +1 | "
            "**agrees** |") in lines
    assert not any("recomputed" in line for line in lines)


@pytest.mark.parametrize("content, message", [
    (None, "no claim_*.json"),
    ("{not json", "not a claim file (JSONDecodeError"),
    ('{"claim": 1, "title": "t"}', "not a claim file (ValueError: no list of rows)"),
    ('{"claim": 1, "title": "t", "rows": [{"quantity": "q"}]}', "not a claim file (KeyError"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "claim_01.json").write_text(content)
    out = tmp_path / "claims.md"
    assert main(["table", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
