"""Every bad input is one line on stderr, a non-zero exit, and nothing lost.

Each case of the table in tests/bad_input_cases.py (append new cases there) runs
`t5x_lite.cli.main(argv)` in-process (pytest's capfd sees fd-level stderr, so C++ and thread noise
counts) and asserts
  - the exit code (2 unless the case says otherwise);
  - stderr is exactly one line, ``t5x-lite CMD: error: ...`` (no traceback, no usage block, no
    progress bar; no line is ignored);
  - that line contains the case's `expect`, the words that say what is wrong;
  - nothing was lost: every file of the shared world (a trained workdir, two checkpoints, prior
    output files, a prior vocabulary) is byte-identical afterwards and no stray file was left.
Below the table: --help still works, decode lengths of learned positions, no NaN in output files,
and a few subprocess tests of what only a real process shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from t5x_lite import cli, jsonio

from bad_input_cases import CASES, SCORE_IN, TASK
from train_helpers import REPO, TINY_MODEL, jax_cache_env

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ROWS = [{"inputs": "translate English to German: Open the file.", "targets": "Datei öffnen."},
        {"inputs": "translate English to German: Quit now", "targets": "Jetzt beenden"}]


# ------------------------------------------------------------------------------------------- world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The shared, prior good state: a trained workdir, a decoder-only checkpoint with learned
    positions, prior output files and an eval task.  Built once per module."""
    from flax import nnx

    from t5x_lite.checkpoints import save_params_checkpoint
    from t5x_lite.data import Feature, InMemorySource, Task, TaskRegistry, get_vocabulary
    from t5x_lite.data import preprocessors as pp
    from t5x_lite.models import ModelConfig, build_model
    from t5x_lite.tasks import metrics as M
    root = tmp_path_factory.mktemp("world")
    w = {k: str(root / k) for k in ("wd", "lm", "conv", "good_in", "prior_out", "prior_vocab", "file", "corpus",
                                    "empty_data")}
    w["hf"] = os.path.join(FIXTURES, "hf_t5_1_1")
    assert cli.main(["convert", "hf-to-t5x", "--input", w["hf"], "--output", w["conv"]]) == 0
    assert cli.main(["train", "--workdir", w["wd"], *TINY_MODEL, "--config.data.batch_size=8",
                     "--config.train.num_steps=2", "--config.train.eval_every=0", "--config.train.log_every=1",
                     "--config.train.async_checkpointing=False"]) == 0
    vocab = get_vocabulary("byte")
    cfg = ModelConfig(architecture="decoder_only", vocab_size=vocab.vocab_size, d_model=32, num_heads=2, d_kv=8,
                      d_ff=64, num_decoder_layers=1, position_embedding="learned",
                      max_position_embeddings=16).validate()
    params = nnx.to_pure_dict(nnx.state(build_model(cfg, nnx.Rngs(1)), nnx.Param))
    save_params_checkpoint(w["lm"], params, {"model": cfg.to_dict(), "vocabulary": "byte"})
    for key, text in (("good_in", SCORE_IN), ("prior_out", '{"prior": "output"}\n'), ("file", "a file\n"),
                      ("prior_vocab.model", "prior model bytes\n"), ("prior_vocab.vocab", "prior vocab\n"),
                      ("corpus", "".join(f"the quick brown fox {i} jumps\n" for i in range(200)))):
        with open(str(root / key), "w") as f:
            f.write(text)
    os.makedirs(w["empty_data"])
    b = get_vocabulary("builtin")
    TaskRegistry.add(Task(TASK, InMemorySource({"validation": ROWS, "train": ROWS}), [pp.tokenize, pp.append_eos],
                          {"inputs": Feature(b), "targets": Feature(b)}, metric_fns=[M.sequence_accuracy]),
                     replace=True)
    w["root"] = str(root)
    return w


def snapshot(root: str) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def run_in_process(argv, capfd) -> tuple[int, str]:
    capfd.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:   # only --help exits this way
        code = e.code
    return code, capfd.readouterr().err


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, world, tmp_path, capfd, monkeypatch):
    tmp = str(tmp_path)
    fields = {**world, "tmp": tmp}
    if case.setup:
        case.setup(world, tmp)
    if case.inject:
        case.inject(world, tmp, monkeypatch)
    for k, v in (case.env or {}).items():
        monkeypatch.setenv(k, v.format(**fields))
    before = snapshot(world["root"])
    code, err = run_in_process([a.format(**fields) for a in case.argv], capfd)
    lines = error_lines(err)
    assert code == case.code, err[-3000:]
    assert len(lines) == 1, f"stderr is not one line:\n{err[-3000:]}"
    prefix = "t5x-lite: error:" if case.argv[0] not in cli.SUBCOMMANDS else f"t5x-lite {case.argv[0]}: error:"
    assert lines[0].startswith(prefix), lines[0]
    assert case.expect.format(**fields) in lines[0], lines[0]
    assert snapshot(world["root"]) == before, "a prior good file changed or disappeared, or a stray file was left"


def test_the_table_covers_every_command():
    per_command = {}
    for c in CASES:
        cmd = c.argv[0] if c.argv[0] in cli.SUBCOMMANDS else "(dispatcher)"
        per_command[cmd] = per_command.get(cmd, 0) + 1
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert set(per_command) == set(cli.SUBCOMMANDS) | {"(dispatcher)"}, per_command


@pytest.mark.parametrize("argv", [["score", "--help"], ["convert", "t5x-to-hf", "--help"], ["study", "run", "--help"],
                                  ["data", "inspect", "--help"], ["vocab", "train", "--help"], ["train", "--help"]])
def test_help_still_works(argv, capfd):
    code, err = run_in_process(argv, capfd)
    assert code == 0 and not error_lines(err), err


# ------------------------------------------------------------------------- decode lengths, outputs
def test_decoder_only_decodes_up_to_its_learned_positions_with_one_warning(world, tmp_path, capfd):
    """A prompt that fits, asked for more tokens than the positions allow: HF's behaviour (warn, stop
    at the model's length), never PAD junk past max_position_embeddings."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"inputs": [5] * 10}) + "\n")      # 10 tokens + BOS: 6 of 16 positions left
    preds = {}
    for n in (6, 30):
        dst = tmp_path / f"out{n}.jsonl"
        code, err = run_in_process(["infer", "--checkpoint", world["lm"], "--input", str(src), "--output", str(dst),
                                    "--max-decode-length", str(n)], capfd)
        assert code == 0, err
        warnings = [ln for ln in error_lines(err) if "warning:" in ln]
        assert len(warnings) == (n > 6) and all("at most 6 new tokens, not 30" in w for w in warnings), err
        preds[n] = json.loads(dst.read_text())["prediction_ids"]
    # This random model does not stop within 6 tokens: capped, it gives exactly what fits (it used to
    # go on to 30 tokens, PAD after position 16).
    assert preds[30] == preds[6] and len(preds[6]) == 6 and 0 not in preds[6], preds


def test_library_decode_refuses_past_learned_positions(world):
    from t5x_lite import decoding, errors, loading
    model = loading.load_model(world["lm"]).model
    prompt = decoding.make_prompt("decoder_only", [[5] * 10])
    assert decoding.decode(model, prompt, max_decode_length=6).shape == (1, 6)
    with pytest.raises(errors.UserError, match="at most 6"):
        decoding.decode(model, prompt, max_decode_length=7)


def test_fit_decode_length_rules():
    """Decoder-only: BOS + prompt + new tokens but the last fed <= positions; encoder-decoder: the
    encoder input and BOS + new tokens each <= positions; relative positions: no limit."""
    import dataclasses

    from t5x_lite.decoding import fit_decode_length
    from t5x_lite.errors import UserError
    from t5x_lite.models import ModelConfig
    lm = ModelConfig(architecture="decoder_only", vocab_size=8, position_embedding="learned", max_position_embeddings=16)
    ed = dataclasses.replace(lm, architecture="encoder_decoder")
    assert [fit_decode_length(lm, p, 30) for p in (0, 10, 15)] == [16, 6, 1]
    assert fit_decode_length(ed, 16, 30) == 16 and fit_decode_length(ed, 3, 5) == 5
    assert fit_decode_length(dataclasses.replace(lm, position_embedding="relative"), 5000, 30) == 30
    with pytest.raises(UserError, match="a prompt of 16 tokens does not fit"):
        fit_decode_length(lm, 16, 1)
    with pytest.raises(UserError, match="an input of 17 tokens does not fit the encoder"):
        fit_decode_length(ed, 17, 1)


def test_json_outputs_have_no_nan(tmp_path):
    text = jsonio.dumps({"loss": float("nan"), "lp": [0.5, float("-inf")], "cells": [{"m": float("inf")}], "ok": 1})
    assert json.loads(text) == {"loss": None, "lp": [0.5, None], "cells": [{"m": None}], "ok": 1,
                                "nonfinite": ["loss", "lp", "cells[0].m"]}
    assert "NaN" not in text and "Infinity" not in text
    assert jsonio.dumps({"a": 1.5}) == '{"a": 1.5}'


def test_a_nan_training_row_is_written_as_null_with_a_flag(tmp_path):
    import numpy as np

    from t5x_lite.train.metrics import MetricsWriter
    w = MetricsWriter(str(tmp_path))
    w.write(3, {"loss": np.float32("nan"), "grad_norm": float("inf"), "lr": 0.01})
    w.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert row == {"step": 3, "loss": None, "grad_norm": None, "lr": 0.01, "nonfinite": ["loss", "grad_norm"]}


def test_score_writes_null_for_a_nonfinite_score(world, tmp_path, capfd, monkeypatch):
    from t5x_lite import scoring
    monkeypatch.setattr(scoring.Scorer, "score", lambda self, rows: [[float("nan")] * len(t) for _, t in rows])
    out = tmp_path / "s.jsonl"
    code, err = run_in_process(["score", "--checkpoint", world["wd"], "--input", world["good_in"], "--output",
                                str(out), "--no-progress"], capfd)
    assert code == 0, err
    row = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert row["log_likelihood"] is None and row["nonfinite"] == ["log_likelihood", "token_log_probs"]
    assert "warning: 1 of 1 examples have non-finite scores" in err


def test_convert_overwrite_replaces_a_checkpoint_whole(world, tmp_path, capfd):
    out = str(tmp_path / "c")
    for _ in range(2):
        code, err = run_in_process(["convert", "hf-to-t5x", "--input", world["hf"], "--output", out,
                                    "--overwrite"], capfd)
        assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["c"] and os.listdir(out) == ["0"]


# -------------------------------------------------------------------------------- real processes
def _subprocess(*argv):
    env = jax_cache_env(dict(os.environ, JAX_NUM_CPU_DEVICES="1"))
    return subprocess.run([sys.executable, "-m", "t5x_lite.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("argv, expect", [
    (["bogus"], "t5x-lite: error: unknown command 'bogus'"),
    (["score", "--checkpoint", "c", "--input", "i", "--output", "o", "--bogus"],
     "t5x-lite score: error: unrecognized arguments: --bogus"),
    (["train", "--workdir", "{file}/wd"], "t5x-lite train: error: cannot create --workdir"),
])
def test_process_exit_and_one_line(argv, expect, world):
    proc = _subprocess(*[a.format(**world) for a in argv])
    lines = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(expect), proc.stderr
