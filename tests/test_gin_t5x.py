"""Gin for people coming from T5X: a gin file in T5X's own names trains here; the hand-written
gin/ files equal their configs/ counterparts; a T5X key with no counterpart is one line."""

import glob
import json
import os
import subprocess
import sys
import textwrap

import gin
import pytest

import t5x_lite.train.loop
from t5x_lite.checkpoints import read_config
from t5x_lite.errors import UserError
from t5x_lite.train import config as config_lib, main as train_main

from train_helpers import REPO, jax_cache_env

# gin/ file -> the configs/ experiment it is the gin form of.
COUNTERPARTS = {
    **{f"t5_1_1/{s}.gin": f"t5_1_1.py:{s}" for s in ("small", "base", "large", "xl", "xxl")},
    "t5_1_0/base.gin": "t5_1_0_base.py",
    "decoder_only/lm.gin": "decoder_only_lm.py",
    "decoder_only/prefix_lm.gin": "prefix_lm.py",
    **{f"table2/{a}.gin": f"table2.py:{a}"
       for a in ("encoder_decoder", "enc_dec_shared", "enc_dec_6_layers", "language_model", "prefix_lm")},
}
FRAGMENTS = {"runs/pretrain.gin"}   # included by the others (and by T5X's `include 't5x/configs/runs/...'`)

USER_TASKS = '''
from t5x_lite.data import Feature, InMemorySource, Task, TaskRegistry, get_vocabulary
from t5x_lite.data import preprocessors as pp

rows = [{"inputs": f"question {i}: what is {i} plus one", "targets": f"{i + 1}"} for i in range(40)]
vocab = get_vocabulary("builtin")
TaskRegistry.add(Task("user_gin_task", InMemorySource({"train": rows, "validation": rows}),
                      [pp.tokenize, pp.append_eos_after_trim],
                      {"inputs": Feature(vocab), "targets": Feature(vocab)}), replace=True)
'''

# Written from T5X's published names (t5x/examples/t5/t5_1_1/*.gin, t5x/configs/runs/pretrain.gin).
T5X_GIN = '''
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x import utils
from t5x.examples.t5 import network

include 't5x/examples/t5/t5_1_1/small.gin'
include 't5x/configs/runs/pretrain.gin'

MODEL_DIR = '{model_dir}'
MIXTURE_OR_TASK_MODULE = 'user_gin_tasks'
MIXTURE_OR_TASK_NAME = 'user_gin_task'
USE_CACHED_TASKS = False
TASK_FEATURE_LENGTHS = {{'inputs': 24, 'targets': 8}}
TRAIN_STEPS = 3
BATCH_SIZE = 8
DROPOUT_RATE = 0.05

network.Transformer.config = @network.T5Config()
network.T5Config:
  vocab_size = 8192
  dtype = 'float32'
  emb_dim = 32
  num_heads = 2
  num_encoder_layers = 1
  num_decoder_layers = 2
  head_dim = 16
  mlp_dim = 48
  mlp_activations = ('gelu', 'linear')
  dropout_rate = %DROPOUT_RATE
  logits_via_embedding = True

train_script.train:
  eval_period = 3
utils.SaveCheckpointConfig:
  period = 2
'''


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.slow
def test_a_t5x_gin_file_trains_here(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(tmp_path / "user_gin_tasks.py", USER_TASKS)
    model_dir = tmp_path / "run"
    path = _write(tmp_path / "t5x_run.gin", T5X_GIN.format(model_dir=model_dir))
    # MODEL_DIR is the workdir and MIXTURE_OR_TASK_MODULE registers the task: no other flag needed
    # but a short eval.
    assert train_main.main(["--gin_file", path, "--config.train.eval_steps=1"]) == 0
    saved = read_config(str(model_dir / "checkpoints"))
    model, data, train = saved["model"], saved["data"], saved["train"]
    assert (model["d_model"], model["num_heads"], model["d_kv"], model["d_ff"]) == (32, 2, 16, 48)
    assert (model["num_encoder_layers"], model["num_decoder_layers"]) == (1, 2)
    assert model["dropout_rate"] == 0.05 and model["tie_embeddings"] and model["vocab_size"] == 8192
    assert model["mlp_activations"] == ["gelu", "linear"] and model["dtype"] == "float32"
    assert (data["task"], data["batch_size"], data["feature_lengths"]) == ("user_gin_task", 8,
                                                                         {"inputs": 24, "targets": 8})
    assert (train["num_steps"], train["checkpoint_every"], train["eval_every"]) == (3, 2, 3)
    assert saved["optimizer"]["schedule"] == "rsqrt"   # from the included runs/pretrain.gin
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["2", "3"]
    rows = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r][-1] == 3 and any("eval/loss" in r for r in rows)


def test_t5x_names_resolve_to_config_keys(tmp_path):
    path = _write(tmp_path / "t5x.gin", T5X_GIN.format(model_dir=tmp_path / "md"))
    config, opts = train_main.parse_args(["--gin_file", path, "--gin_bindings", "TRAIN_STEPS = 11",
                                          "--config.data.batch_size=4"])
    assert config.train.num_steps == 11            # the last binding of a macro wins
    assert config.data.batch_size == 4              # --config.KEY beats gin
    assert config.model.d_model == 32 and config.model.dropout_rate == 0.05 and config.train.eval_every == 3
    assert opts.workdir == str(tmp_path / "md") and opts.modules == ["user_gin_tasks"]
    assert len(opts.notes) == 1 and "USE_CACHED_TASKS" in opts.notes[0]
    config, opts = train_main.parse_args(["--gin_file", path, "--workdir", "/elsewhere"])
    assert opts.workdir == "/elsewhere"              # --workdir beats MODEL_DIR


def test_macros_are_read_as_gin_reads_them():
    text = "TRAIN_STEPS = 5\nBATCH_SIZE = 6\nTRAIN_STEPS = 9\nMIXTURE_OR_TASK_NAME = 'builtin_lm'\n"
    gin.clear_config()
    try:
        gin.parse_config(text)
        want = {k: gin.query_parameter(f"%{k}") for k in ("TRAIN_STEPS", "BATCH_SIZE", "MIXTURE_OR_TASK_NAME")}
    finally:
        gin.clear_config()
    config, _ = train_main.parse_args(["--gin_bindings", text])
    assert want == {"TRAIN_STEPS": config.train.num_steps, "BATCH_SIZE": config.data.batch_size,
                    "MIXTURE_OR_TASK_NAME": config.data.task} == {"TRAIN_STEPS": 9, "BATCH_SIZE": 6,
                                                                  "MIXTURE_OR_TASK_NAME": "builtin_lm"}


def test_train_section_and_t5x_train_script_train_do_not_collide():
    config, _ = train_main.parse_args(["--gin_bindings", "train.num_steps = 7",
                                       "--gin_bindings", "train_script.train.eval_period = 5",
                                       "--gin_bindings", "train.eval_steps = 2"])
    assert (config.train.num_steps, config.train.eval_every, config.train.eval_steps) == (7, 5, 2)


def test_every_gin_file_has_a_configs_counterpart():
    found = {os.path.relpath(p, os.path.join(REPO, "gin")) for p in glob.glob(os.path.join(REPO, "gin", "**", "*.gin"),
                                                                            recursive=True)}
    assert found == set(COUNTERPARTS) | FRAGMENTS
    for name in found:       # short and hand-written: an include plus what changes
        assert len(open(os.path.join(REPO, "gin", name)).read().splitlines()) < 25, name


@pytest.mark.parametrize("name", sorted(COUNTERPARTS))
def test_a_gin_file_equals_its_configs_counterpart(name):
    from_gin, _ = train_main.parse_args(["--gin_file", os.path.join(REPO, "gin", name)])
    from_py, _ = train_main.parse_args(["--config", os.path.join(REPO, "configs", COUNTERPARTS[name])])
    assert config_lib.to_dict(from_gin) == config_lib.to_dict(from_py)


@pytest.mark.parametrize("binding, named", [
    ("network.T5Config.scale_logits = True", "network.T5Config.scale_logits"),
    ("utils.RestoreCheckpointConfig.path = '/ckpt'", "utils.RestoreCheckpointConfig.path"),
    ("adafactor.Adafactor.decay_rate = 0.8", "adafactor.Adafactor.decay_rate"),
    ("LOSS_NORMALIZING_FACTOR = None", "LOSS_NORMALIZING_FACTOR"),
    ("train/utils.DatasetConfig.split = 'x'", "train/utils.DatasetConfig.split"),
    ("MODEL = @models.EncoderDecoderModel()", "MODEL"),
    ("network.T5Config.emb_dim = %EMB", "%EMB"),
    ("model.d_modle = 5", "model.d_modle"),
    ("include 't5x/configs/runs/finetune.gin'", "runs/finetune.gin"),
])
def test_a_key_with_no_counterpart_is_one_line_naming_it(binding, named):
    with pytest.raises(UserError) as e:
        train_main.parse_args(["--gin_bindings", binding])
    assert named in str(e.value) and "\n" not in str(e.value)


def test_helper_macros_used_by_a_binding_are_fine():
    config, _ = train_main.parse_args(["--gin_bindings", "EMB = 96\nnetwork.T5Config.emb_dim = %EMB"])
    assert config.model.d_model == 96


def test_cli_unsupported_t5x_key_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path / "bad.gin", "include 't5x/examples/t5/t5_1_1/small.gin'\n"
                                        "network.T5Config.scale_logits = True\n")
    proc = subprocess.run([sys.executable, "-m", "t5x_lite.cli", "train", "--gin_file", path, "--workdir",
                           str(tmp_path / "wd")], cwd=REPO, env=jax_cache_env(dict(os.environ)),
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "network.T5Config.scale_logits" in lines[0] and "bad.gin:2" in lines[0]


def test_module_flag_is_imported_before_training(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(tmp_path / "user_flag_tasks.py", USER_TASKS.replace("user_gin_task", "user_flag_task"))
    from t5x_lite.data import TaskRegistry
    seen = {}

    def fake_train(config, workdir, **kwargs):
        seen["registered"] = "user_flag_task" in TaskRegistry.names()
        seen["task"], seen["workdir"] = config.data.task, workdir
        return 0

    monkeypatch.setattr(t5x_lite.train.loop, "train", fake_train)
    assert train_main.main(["--workdir", str(tmp_path / "wd"), "--module", "user_flag_tasks",
                            "--config.data.task=user_flag_task"]) == 0
    assert seen == {"registered": True, "task": "user_flag_task", "workdir": str(tmp_path / "wd")}
