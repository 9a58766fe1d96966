"""`t5x-lite plot`: metrics.jsonl of one or more workdirs -> one PNG of their curves."""

import json
import struct

import pytest

from t5x_lite import cli, plot
from t5x_lite.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(path, rows):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def _rows(lr, scale=1.0):
    rows = [{"step": s, "loss": scale * 10.0 / s, "learning_rate": lr * s / 10, "token_accuracy": 2.0 * s,
             "step_time_s": 0.1} for s in range(1, 11)]
    rows += [{"step": s, "eval/loss": scale * 12.0 / s, "eval/token_accuracy": 3.0 * s, "eval/toy/bleu": s + 0.5}
             for s in (5, 10)]
    return rows


def _png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24]), len(data)


def test_plot_overlays_runs_and_returns_the_series(tmp_path):
    a = _run(tmp_path / "run_a", _rows(0.01))
    # run_b was resumed: step 4 was logged twice (the last row wins), its last line was cut by a kill
    rows_b = _rows(0.02, scale=2.0)
    rows_b.insert(5, {"step": 4, "loss": 99.0, "learning_rate": 0.5})
    b = _run(tmp_path / "run_b", rows_b)
    with open(tmp_path / "run_b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "loss": 0.')
    out = str(tmp_path / "png" / "curves.png")
    path, runs = plot.plot([a, b], out)
    assert path == out and list(runs) == ["run_a", "run_b"]
    (w, h), size = _png_size(out)
    assert 500 <= w <= 2000 and 300 <= h <= 2000 and 10_000 < size < 150_000
    assert runs["run_a"]["loss"] == (list(range(1, 11)), [10.0 / s for s in range(1, 11)])
    assert runs["run_b"]["loss"][1][3] == 99.0 and runs["run_b"]["learning_rate"][1][3] == 0.5
    assert runs["run_b"]["eval/loss"] == ([5, 10], [24.0 / 5, 2.4])
    assert runs["run_a"]["eval/toy/bleu"] == ([5, 10], [5.5, 10.5])
    assert "token_accuracy" not in runs["run_a"] and "step_time_s" not in runs["run_a"]   # train-side extras
    titles = [t for t, _ in plot.panels(runs)]
    assert titles == ["loss (train: line, eval: squares)", "learning rate", "eval/token_accuracy (%)", "eval/toy/bleu"]


def test_cli_default_output_and_labels(tmp_path, capsys):
    wd = _run(tmp_path / "x" / "run", _rows(0.01))
    other = _run(tmp_path / "y" / "run", _rows(0.01))
    assert plot.run_labels([wd, other]) == ["x/run", "y/run"]
    assert cli.main(["plot", wd]) == 0
    assert f"wrote {wd}/metrics.png" in capsys.readouterr().out
    assert _png_size(f"{wd}/metrics.png")[1] > 10_000


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such directory"),
    (lambda p: p.mkdir(), "no metrics.jsonl"),
    (lambda p: (p.mkdir(), (p / "metrics.jsonl").write_text("")), "is empty"),
    (lambda p: (p.mkdir(), (p / "metrics.jsonl").write_text("not json\n")), "metrics.jsonl:1: not a metrics row"),
])
def test_bad_workdirs_are_one_line(tmp_path, capsys, make, message):
    wd = tmp_path / "wd"
    make(wd)
    with pytest.raises(UserError, match=message):
        plot.plot([str(wd)], str(tmp_path / "out.png"))
    assert cli.main(["plot", str(wd), "--output", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5x-lite plot: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()
