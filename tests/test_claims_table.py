"""`python -m service.claims table DIR --out FILE` (service/claims/table.py): docs/claims.md is
exactly what it writes from docs/claims/, every committed effect is the paired engine's on the
per-seed values its file keeps (p, Holm p, the seeds the paper's effect needs), the seeds column
is priced at the runs' own cost, and a bad directory or claim file is one line and exit 2. No
Ray, no training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from service.claims import measures, registry, table
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


def _stored_effects(path: Path) -> list[dict]:
    return [r for r in json.loads(path.read_text())["rows"] if r["kind"] in table.EFFECTS]


@pytest.mark.parametrize("path", sorted(CLAIMS_DIR.glob("claim_*.json")), ids=lambda p: p.name)
def test_every_committed_effect_is_the_engines_on_its_own_per_seed_values(path):
    # What docs/claims.md prints is service.results.paired on the per-seed pairs the file
    # keeps: the t-test p, Holm across the claim's directed rows, the MDE, and the seeds that
    # the paper's effect (`target`) needs at the spread of those differences.
    rows = _stored_effects(path)
    directed = []
    for r in rows:
        if r["n"] is None:
            continue
        ratio = r["kind"] == "ratio"
        f = math.log if ratio else float
        # the stored per-seed values are rounded to 5 decimals: compare to that precision
        base = {x["seed"]: f(x["baseline"]) for x in r["per_seed"]}
        arm = {x["seed"]: f(x["arm"]) for x in r["per_seed"]}
        result = paired.compare(r["quantity"], base, arm, "min" if r["expect"] == "-" else "max")
        assert r["n"] == result.n == len(r["per_seed"])
        g = math.exp if ratio else float
        assert r["mean"] == pytest.approx(g(result.effect), rel=1e-3, abs=1e-4)
        if result.p is None:
            assert r["p"] is None
        else:
            assert r["p"] == pytest.approx(result.p, rel=1e-2, abs=1e-6)
        if r["expect"] is not None:
            directed.append((r, result))
        if r.get("n_target") is not None:
            diffs = [arm[s] - base[s] for s in base]
            mean = sum(diffs) / len(diffs)
            sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
            size = math.log(r["target"]) if ratio else r["target"]
            needed = paired.seeds_needed(abs(size), sd, max_n=measures.MAX_SEEDS + 1)
            assert abs(r["n_target"] - needed) <= max(1, needed // 50)  # rounding of per_seed
    adjusted = paired.holm([res.p if res.p is not None else 1.0 for _, res in directed])
    for (r, res), p_holm in zip(directed, adjusted, strict=True):
        if res.p is not None:
            assert r["p_holm"] == pytest.approx(p_holm, rel=1e-2, abs=1e-6)
            assert r["holm_k"] == len(directed)


def test_the_seeds_column_costs_the_seeds_at_the_runs_own_price():
    row = {"kind": "diff", "n_target": 40}
    cost = {"cpu_s_per_trial": 90.0, "trials_per_seed": 2}
    assert table.needed_text(row, cost) == "40 (2.0 CPU-h)"  # 40 x 2 trials x 90 s
    assert table.needed_text({**row, "n_target": 4000}, cost) == "4,000 (200 CPU-h)"
    assert table.needed_text({**row, "n_target": measures.MAX_SEEDS + 1}, cost) == "> 100,000"
    assert table.needed_text({**row, "n_target": None}, cost) == "—"
    assert table.needed_text(row, None) == "40"


def test_totals_count_directed_verdicts_and_sum_each_variants_cost():
    def row(verdict, expect="+", kind="diff"):
        return {"kind": kind, "expect": expect, "verdict": verdict}
    cost = {"cpu_h": 1.25, "wall_s": 1800.0, "trials": 16, "tuning_trials": 16}
    results = [
        {"variant": "cpu", "cost": cost, "rows": [row("agrees"), row("not resolved"),
                                                  row(None, expect=None), row(None, "+", "level")]},
        {"variant": "cpu", "cost": {**cost, "tuning_trials": 0}, "rows": [row("opposite")]},
        {"variant": "gpu", "rows": [row("agrees")]},  # not run: no cost
    ]
    assert table.totals(results) == [
        "- Verdicts of the 4 effects with a paper direction: 2 agree, 1 opposite, "
        "1 not resolved.",
        "- Cost of the cpu set: 2.5 CPU-h, 1.0 h wall, 48 trials (2 claims)."]


def test_rows_of_the_engine_are_printed_as_stored(tmp_path):
    row = {"quantity": "q", "kind": "diff", "unit": "pts", "n": 5, "mean": 1.0, "ci_low": 0.5,
           "ci_high": 1.5, "p": 0.01, "p_holm": 0.02, "p_perm": 0.0625, "mde": 0.9,
           "paper": "+1", "expect": "+", "verdict": "agrees", "note": ""}
    path = tmp_path / "claim_04.json"
    path.write_text(json.dumps({"claim": 4, "title": "LRN", "rows": [row], "spaces": []}))
    result = table.read(path)
    assert result["rows"] == [row] and result["variant"] == "cpu"
    lines = table.rows_table(result)
    assert ("| q | +1.00 [+0.50, +1.50] pts | 5 | 0.01 | 0.02 | 0.062 | 0.90 pts | +1 | "
            "**agrees** | — |") in lines
    # With the paper's effect carried over (`target`) and its seeds, priced at the run's cost.
    row.update(target=0.25, n_target=30)
    path.write_text(json.dumps({"claim": 4, "title": "LRN", "rows": [row], "spaces": [],
                                "cost": {"cpu_s_per_trial": 60.0, "trials_per_seed": 2,
                                         "cpu_h": 0.3, "wall_s": 540.0, "trials": 10}}))
    lines = table.rows_table(table.read(path))
    assert ("| q | +1.00 [+0.50, +1.50] pts | 5 | 0.01 | 0.02 | 0.062 | 0.90 pts | +1; here "
            "+0.25 pts | **agrees** | 30 (1.0 CPU-h) |") in lines


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
