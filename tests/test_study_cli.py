"""`t5x-lite study list | report DIR` (t5x_lite.study.cli.main): output, files, one-line usage errors."""

import json
import os

import pytest

from t5x_lite.errors import UserError
from t5x_lite.study.cli import main
from t5x_lite.study.studies import study_names


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in study_names():
        assert f"\n{name}: " in "\n" + out
    assert "language_model-lm-s0" in out and "builtin_lm" in out             # decoder-only LM: full LM task
    assert "prefix_lm-lm-s0" in out and "encoder_decoder-no_pretraining-s0" in out
    assert "cpu: local" in out and "smoke: builtin" in out and "paper: c4" in out            # the text each scale pretrains on
    assert main(["list", "t5_table7", "--seeds", "4"]) == 0            # 4 baseline seeds + 4 span lengths + control
    out = capsys.readouterr().out
    assert out.startswith("t5_table7: ") and "(9 cells)" in out and "encoder_decoder-denoising-s3" in out
    assert "builtin_span_corruption_len10" in out and "t5_table2" not in out


def test_report(tmp_path, capsys):
    cells = [{"architecture": "encoder_decoder", "objective": obj, "seed": seed, "params": 10, "flops_per_token": 5,
              "metrics": {"GLUE": glue}}
             for obj, seed, glue in (("denoising", 0, 70.0), ("denoising", 1, 72.0), ("bert_style", 0, 71.0),
                                     ("deshuffling", 0, 60.0), ("prefix_lm", 0, 65.0), ("no_pretraining", 0, 50.0))]
    (tmp_path / "results.json").write_text(json.dumps({"study": "t5_table4", "scale": "smoke", "columns": ["GLUE"],
                                                       "cells": cells}))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["report.md", "results.json", "table.md", "table.png"]
    # ours 71 (★ mean), 65, 71, 60 vs the paper 83.28, 80.69, 82.96, 73.17 (Table 1, Table 4):
    # pairs (★,pLM) C, (★,BERT) tied in ours, (★,desh) C, (pLM,BERT) C, (pLM,desh) C, (BERT,desh) C
    # -> tau-b = 5 / sqrt(5 * 6) = 0.91
    assert "Kendall tau vs the paper: GLUE 0.91" in out and "claims holding: 1/1" in out


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required"),
    (["report"], "required: DIR"),
    (["run", "t5_table2"], "required: --scale, --workdir"),
    (["run", "t5_table3", "--scale", "smoke", "--workdir", "/nonexistent"], "invalid choice: 't5_table3'"),
    (["run", "t5_table2", "--scale", "tpu", "--workdir", "/nonexistent"], "invalid choice: 'tpu'"),
    (["run", "t5_table2", "--scale", "smoke", "--workdir", "/nonexistent", "--cells", "prefix_lm-lm-s1"],
     "has no cell 'prefix_lm-lm-s1'; its cells: encoder_decoder-denoising-s0, "),
    (["run", "t5_table2", "--scale", "smoke", "--workdir", "/nonexistent", "--seeds", "0"], "at least 1"),
    (["list", "t5_table3"], "invalid choice: 't5_table3'"),
    (["list", "--seeds", "0"], "at least 1"),
])
def test_usage_errors_are_one_line(argv, message):
    with pytest.raises(UserError, match=message) as e:
        main(argv)
    assert "\n" not in str(e.value)


def test_report_without_results(tmp_path):
    with pytest.raises(UserError, match="results.json: not found"):
        main(["report", str(tmp_path)])
