"""Report generation from a fixed results.json: the starred row, bolding and Kendall tau-b
against values computed by hand; tau-b against a brute-force pair count; the paper's own
bolding; the four files, written atomically."""

import math
import os

import numpy as np
import pytest

from t5x_lite.errors import UserError
from t5x_lite.study import paper
from t5x_lite.study.report import (bold_cells, kendall_tau_b, load_results, render_table_md, summarize,
                                   write_report)
from t5x_lite.study.studies import get_study

ED = "encoder_decoder"
COLUMNS = ["GLUE", "SQuAD", "EnFr"]
# Table 6 (corruption rate): rows iid_10, ★denoising (15%), iid_25, iid_50, then the control.
SCORES = {  # (objective, seed): (GLUE, SQuAD, EnFr)
    ("iid_10", 0): (70.5, 50.5, 22.0),
    ("denoising", 0): (70.0, 50.0, 20.0),
    ("denoising", 1): (71.0, 50.5, 21.0),
    ("denoising", 2): (72.0, 51.0, 22.0),
    ("iid_25", 0): (72.5, 52.0, 20.0),
    ("iid_50", 0): (68.0, 49.0, 23.5),
    ("no_pretraining", 0): (60.0, 30.0, 21.0),
}


def fixed_results():
    cells = [{"architecture": ED, "objective": obj, "seed": seed, "params": 2.0e6, "flops_per_token": 1.2e7,
              "metrics": dict(zip(COLUMNS, scores)), "wall_s": 60.0 * (seed + 1),
              "pretrain_flops": 0.0 if obj == "no_pretraining" else 3.0e15}
             for (obj, seed), scores in SCORES.items()]
    return {"study": "t5_table6", "scale": "smoke", "columns": COLUMNS, "cells": cells,
            "notes": ["pretraining corpus: builtin"]}


def test_fixed_results_by_hand(tmp_path):
    s = summarize(fixed_results())
    rows = {r["key"][1]: r for r in s["rows"]}
    assert [r["key"][1] for r in s["rows"]] == ["iid_10", "denoising", "iid_25", "iid_50", "no_pretraining"]
    # ★ row: GLUE 70, 71, 72 -> mean 71, sample std sqrt((1 + 0 + 1) / 2) = 1
    #        SQuAD 50, 50.5, 51 -> mean 50.5, std sqrt((.25 + 0 + .25) / 2) = 0.5
    #        EnFr 20, 21, 22 -> mean 21, std 1
    base = rows["denoising"]
    assert base["seeds"] == [0, 1, 2] and base["baseline"]
    assert base["mean"] == pytest.approx({"GLUE": 71.0, "SQuAD": 50.5, "EnFr": 21.0})
    assert base["std"] == pytest.approx({"GLUE": 1.0, "SQuAD": 0.5, "EnFr": 1.0})
    assert s["sigma"] == pytest.approx(base["std"])
    assert math.isnan(rows["iid_10"]["std"]["GLUE"])                   # one seed: no std

    # Bold = within 2 sigma of the column's best, strictly (the control takes no part):
    #   GLUE  best 72.5 (iid_25), 2σ = 2: ★ 72.5 - 71 = 1.5 < 2 bold; iid_10 72.5 - 70.5 = 2.0, not < 2;
    #         iid_50 4.5 no
    #   SQuAD best 52 (iid_25), 2σ = 1: ★ and iid_10 at 1.5 no; iid_50 3 no
    #   EnFr  best 23.5 (iid_50), 2σ = 2: iid_10 1.5 bold; ★ 2.5 no; iid_25 3.5 no
    bold = {(k[1], c) for k, c in s["bold"]}
    assert bold == {("iid_25", "GLUE"), ("denoising", "GLUE"), ("iid_25", "SQuAD"),
                    ("iid_50", "EnFr"), ("iid_10", "EnFr")}

    # Kendall tau-b over the 4 rows (iid_10, ★, iid_25, iid_50) vs Table 6; 6 pairs, C/D per pair:
    #   GLUE  ours 70.5 71 72.5 68     paper 82.82 83.28 83.00 81.27
    #         (10,★) C  (10,25) C  (10,50) C  (★,25) D [71<72.5 but 83.28>83.00]  (★,50) C  (25,50) C
    #         -> (5 - 1) / 6 = 2/3
    #   SQuAD ours 50.5 50.5 52 49     paper 80.38 80.88 80.96 79.80
    #         (10,★) tied in ours -> neither; the other 5 pairs C; n0 = 6, 1 pair tied in ours, 0 in paper
    #         -> 5 / sqrt((6 - 1)(6 - 0)) = 5 / sqrt(30)
    #   EnFr  ours 22 21 20 23.5       paper 39.28 39.82 39.83 39.90
    #         (10,★) D  (10,25) D  (10,50) C  (★,25) D  (★,50) C  (25,50) C   -> (3 - 3) / 6 = 0
    assert s["tau"]["GLUE"] == (pytest.approx(2 / 3), 4)
    assert s["tau"]["SQuAD"] == (pytest.approx(5 / math.sqrt(30)), 4)
    assert s["tau"]["EnFr"] == (pytest.approx(0.0), 4)

    # pretraining matters: (★ - control) / σ = GLUE (71 - 60) / 1 = 11 > 4, SQuAD (50.5 - 30) / .5 = 41 > 4,
    # EnFr (21 - 21) / 1 = 0: GLUE holds and 1 of the 2 others (at least half) -> holds, 2 of 3 columns
    claim = s["claims"][0]
    assert claim["holds"] is True and (claim["passed"], claim["of"]) == (2, 3)
    assert len(s["claims"]) == 1                                      # the Table-2 claims are for t5_table2

    # the paper's side of table.md: Table 6 bolded with the paper's σ, GLUE 2σ = 0.47 from 83.28:
    # 83.00 (0.28) and 82.82 (0.46) bold, 81.27 not
    md = render_table_md(s)
    assert "| ★Encoder-decoder | 15% |" in md and "**71.00 ± 1.00** / **83.28**" in md
    assert "70.50 / **82.82**" in md and "68.00 / 81.27" in md and "**22.00** / 39.28" in md
    assert "No pre-training (control)" in md and "60.00 / 66.22" in md


def test_four_files_written_atomically(tmp_path):
    paths = write_report(str(tmp_path), fixed_results())
    names = sorted(os.listdir(tmp_path))
    assert names == ["report.md", "results.json", "table.md", "table.png"]          # no temporary files left
    assert sorted(os.path.basename(p) for p in paths) == names
    assert load_results(str(tmp_path)) == fixed_results()                           # the shape round-trips
    assert (tmp_path / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = (tmp_path / "report.md").read_text()
    assert "| GLUE | 0.67 | 4 |" in rep and "| SQuAD | 0.91 | 4 |" in rep and "| EnFr | 0.00 | 4 |" in rep
    assert "Total wall time: 10.0 min." in rep                        # ★ (1+2+3)*60 s + 4 cells x 60 s = 600 s
    assert "+11.00 (11.0σ)" in rep and "## Notes\n\n- pretraining corpus: builtin" in rep
    # regenerating from DIR/results.json alone gives the same files
    before = {n: (tmp_path / n).read_bytes() for n in ("table.md", "report.md")}
    write_report(str(tmp_path))
    assert before == {n: (tmp_path / n).read_bytes() for n in ("table.md", "report.md")}


def test_tau_b_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 12))
        x = rng.integers(0, 4, n).astype(float)        # small ranges: many ties in both
        y = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.normal(size=n)
        conc = disc = tie_x = tie_y = 0
        for i in range(n):
            for j in range(i + 1, n):
                dx, dy = x[i] - x[j], y[i] - y[j]
                tie_x += dx == 0
                tie_y += dy == 0
                conc += dx * dy > 0
                disc += dx * dy < 0
        n0 = n * (n - 1) / 2
        denom = math.sqrt((n0 - tie_x) * (n0 - tie_y))
        want = (conc - disc) / denom if denom else math.nan
        got = kendall_tau_b(x, y)
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want), (x, y)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1, 2, 3])


def test_paper_bolding_and_claims_on_the_papers_numbers():
    """The bolding rule reproduces the paper's bold Table 2 (83.28 - 82.81 is exactly 2σ on GLUE,
    and the paper leaves 82.81 plain), and our numbers = the paper's give tau 1 everywhere."""
    assert bold_cells(dict(paper.TABLE2), paper.BASELINE_STD, paper.COLUMNS) == paper.TABLE2_BOLD
    study = get_study("t5_table2", seeds=2)
    cells = [{"architecture": c.architecture, "objective": c.objective, "seed": c.seed, "params": 1,
              "flops_per_token": 1, "metrics": dict(study.paper[c.key])} for c in study.cells]
    s = summarize({"study": "t5_table2", "scale": "paper", "columns": list(paper.COLUMNS), "cells": cells})
    assert all(t == (pytest.approx(1.0), 10) for t in s["tau"].values())
    verdicts = {c["claim"]: (c["holds"], c["passed"]) for c in s["paper_claims"]}
    assert len(verdicts) == 10
    # on the paper's own numbers the shared ≈ enc-dec test (|Δ| < 2σ) passes on SQuAD, SGLUE, EnRo only
    assert verdicts["shared ≈ encoder-decoder (denoising, within 2σ)"] == (False, 3)
    assert all(h for k, (h, _) in verdicts.items() if not k.startswith("shared"))
    # our seeds are identical, so σ = 0: the ≈ and the 4σ tests cannot be checked on our side
    ours = {c["claim"]: c["holds"] for c in s["claims"]}
    assert ours["shared ≈ encoder-decoder (denoising, within 2σ)"] is None and ours[s["claims"][0]["claim"]] is None
    assert ours["denoising beats LM (Prefix LM)"] is True


def test_bad_results(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_results(str(tmp_path))
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_results(str(tmp_path))
    r = fixed_results()
    del r["cells"][0]["params"]
    with pytest.raises(UserError, match=r"cells\[0\] needs 'params'"):
        write_report(str(tmp_path), r)
    r = fixed_results()
    r["cells"].append(dict(r["cells"][0]))
    with pytest.raises(UserError, match="appears twice"):
        summarize(r)
    r = fixed_results()
    r["cells"][1]["metrics"]["GLUE"] = None                          # a missing score is left out of the mean
    assert summarize(r)["rows"][1]["mean"]["GLUE"] == pytest.approx(71.5)
