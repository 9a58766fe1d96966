"""`t5x-lite train` command line: config files, overrides, gin, one-line errors, the default run."""

import json
import os
import subprocess
import sys

import pytest

from t5x_lite.errors import UserError
from t5x_lite.train import config as config_lib, main as train_main

from train_helpers import REPO, jax_cache_env


def _cli(args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, "-m", "t5x_lite.cli", "train", *args], cwd=cwd,
                          env=jax_cache_env(dict(os.environ)),
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("t5x-lite train: error:")
    return lines[0]


def test_overrides_apply_to_the_default_config():
    config, fv = train_main.parse_args(["--workdir", "/tmp/x", "--config.train.num_steps=7",
                                        "--config.model.mlp_activations=('relu',)", "--config.mesh.data", "2"])
    assert config.train.num_steps == 7 and tuple(config.model.mlp_activations) == ("relu",)
    assert config.mesh.data == 2 and fv.workdir == "/tmp/x"
    assert config.data.task == "builtin_span_corruption"  # the embedded default


def test_gin_bindings_and_t5x_aliases_then_command_line_overrides_win():
    config, _ = train_main.parse_args([
        "--gin_file", os.path.join(REPO, "gin", "t5_1_1", "small.gin"),
        "--gin_bindings", "train.num_steps = 123",
        "--gin_bindings", "network.T5Config.emb_dim = 256",
        "--gin_bindings", "data.feature_lengths = {'inputs': 64, 'targets': 16}",
        "--gin_bindings", "experiment.seed = 5",
        "--config.train.log_every=3"])
    assert config.train.num_steps == 123 and config.model.d_model == 256 and config.seed == 5
    assert dict(config.data.feature_lengths) == {"inputs": 64, "targets": 16}
    assert config.train.log_every == 3 and config.model.num_heads == 6


@pytest.mark.parametrize("args", [
    ["--gin_bindings", "train.num_stepz = 5"],
    ["--gin_bindings", "trian.num_steps = 5"],
    ["--gin_bindings", "train.num_steps = (("],
    ["--gin_bindings", "train.num_steps = 'many'"],
    ["--gin_file", "no/such/file.gin"],
    ["--config.train.num_stepz=5"],
    ["--config.train.num_steps=abc"],
    ["--config=no_such_config.py"],
    ["--config", os.path.join(REPO, "configs", "t5_1_1.py") + ":huge"],
    ["--no_such_flag"],
])
def test_parse_errors_are_user_errors(args):
    with pytest.raises(UserError) as e:
        train_main.parse_args(args)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arg, expected", [
    ("--config.train.num_stepz=5", "unknown config key 'train.num_stepz' (did you mean train.num_steps?)"),
    ("--config.trian.num_steps=5", "unknown config key 'trian.num_steps' (did you mean train?)"),
])
def test_unknown_override_key_is_named_with_close_matches(arg, expected):
    with pytest.raises(UserError) as e:
        train_main.parse_args([arg])
    assert expected in str(e.value)


def test_validation_catches_bad_values():
    config, _ = train_main.parse_args([])
    config_lib.validate(config)
    for key, value in [("train.num_steps", 0), ("train.loss_normalization", "median"), ("mesh.fsdp", 0),
                       ("optimizer.schedule", "step"), ("train.label_smoothing", 1.5), ("model.dtype", "fp8")]:
        bad, _ = train_main.parse_args([f"--config.{key}={value}"])
        with pytest.raises(UserError):
            config_lib.validate(bad)
    with config.unlocked():
        del config.train["eval_every"]
    with pytest.raises(UserError, match="missing required key train.eval_every"):
        config_lib.validate(config)


@pytest.mark.parametrize("args", [
    ["--workdir", "WD", "--config.train.num_stepz=5"],
    ["--workdir", "WD", "--gin_bindings", "train.num_stepz = 5"],
    ["--workdir", "WD", "--config.mesh.data=3"],        # 3 does not divide the devices
    ["--config.train.num_steps=5"],                       # no --workdir
    ["--workdir", "WD", "--module", "no_such_module_xyz"],
])
def test_cli_errors_exit_2_with_one_line(tmp_path, args):
    args = [str(tmp_path / "wd") if a == "WD" else a for a in args]
    _one_error_line(_cli(args))


def test_help_is_short_and_exits_0():
    proc = _cli(["--help"])
    assert proc.returncode == 0 and "--workdir" in proc.stdout and len(proc.stdout.splitlines()) < 60


@pytest.mark.slow
def test_default_command_trains_and_writes_metrics_and_tensorboard(tmp_path):
    wd = tmp_path / "run"
    proc = _cli(["--workdir", str(wd), "--config.train.num_steps=4", "--config.train.log_every=1",
                 "--config.train.eval_every=4", "--config.train.eval_steps=1", "--config.train.checkpoint_every=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for r in train_rows:
        assert {"loss", "learning_rate", "token_accuracy", "z_loss", "grad_norm", "tokens_per_s"} <= set(r)
        assert "mfu" not in r and "accuracy" not in r   # CPU: no peak is assumed, so no MFU is claimed
        assert 0 <= r["token_accuracy"] <= 100   # percent (t5x_lite.train.metrics.as_logged)
        assert r["learning_rate"] == pytest.approx(0.01) and 0 < r["loss"] < 20
    assert any("eval/loss" in r and r["step"] == 4 for r in rows)
    last = [r for r in rows if "eval/loss" in r][-1]
    assert 0 <= last["eval/token_accuracy"] <= 100 and "eval/accuracy" not in last
    # the run ends with a summary read back from metrics.jsonl: the last train loss and eval, what next
    tail = [ln.split("] ", 1)[-1] for ln in proc.stderr.splitlines() if ln.startswith("[t5x-lite train]")]
    i = next(k for k, ln in enumerate(tail) if ln.startswith("done at step 4 (4 steps in "))
    last_eval = [r for r in rows if "eval/loss" in r][-1]
    assert tail[i + 1] == f"  train loss {train_rows[-1]['loss']:.4f} at step 4"
    assert tail[i + 2].startswith("  eval at step 4: ") and f"eval/loss {last_eval['eval/loss']:.4g}" in tail[i + 2]
    assert tail[-1].startswith(f"  next: t5x-lite infer --checkpoint {wd}")
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd))
    assert sorted(os.listdir(wd / "checkpoints")) == ["2", "4"]
    cfg = config_lib_read(wd)
    assert cfg["model"]["vocab_size"] == 8192 and cfg["vocabulary"] == "builtin"


def config_lib_read(wd):
    from t5x_lite.checkpoints import read_config
    return read_config(str(wd / "checkpoints"))
