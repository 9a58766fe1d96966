"""Fine-tuning takes the model section from init_checkpoint: config.resolve reads the checkpoint's
saved model config and applies on top only the model keys the experiment changed."""

import json
import os

import numpy as np
import pytest

from t5x_lite.checkpoints import read_config, save_params_checkpoint
from t5x_lite.errors import UserError
from t5x_lite.train import config as config_lib, default_config, main as train_main

from train_helpers import REPO

# A shape no experiment file has: what resolve returns can only have come from the checkpoint.
SHAPE = dict(d_model=48, num_heads=3, d_kv=16, d_ff=80, num_encoder_layers=1, num_decoder_layers=3,
             mlp_activations=["relu"], tie_embeddings=True)


def _pretrained(tmp_path, vocabulary="builtin", workdir=True):
    """A checkpoint (inside a training workdir) whose saved config has SHAPE."""
    config = default_config.get_config()
    config.model.update({k: tuple(v) if isinstance(v, list) else v for k, v in SHAPE.items()})
    config.vocabulary = vocabulary
    _, resolved = config_lib.resolve(config)
    root = tmp_path / "pre" / "checkpoints" if workdir else tmp_path / "pre"
    save_params_checkpoint(str(root), {"unused": np.zeros((2,), np.float32)}, resolved, step=7)
    return str(tmp_path / "pre"), resolved


@pytest.mark.parametrize("workdir", [True, False], ids=["training-workdir", "checkpoint-dir"])
def test_resolve_takes_the_model_from_init_checkpoint(tmp_path, workdir):
    path, saved = _pretrained(tmp_path, workdir=workdir)
    config = default_config.get_config()
    config.init_checkpoint = path
    config.model.dropout_rate = 0.1            # what the experiment changes: applied on top
    model_cfg, resolved = config_lib.resolve(config)
    for key, value in SHAPE.items():
        assert resolved["model"][key] == value, key
    assert model_cfg.dropout_rate == 0.1 and resolved["model"]["dropout_rate"] == 0.1
    assert resolved["model"] == {**saved["model"], "dropout_rate": 0.1}
    assert resolved["vocabulary"] == "builtin" and resolved["vocabulary_fingerprint"] == saved["vocabulary_fingerprint"]
    assert resolved["init_checkpoint"] == path


def test_without_init_checkpoint_the_model_is_the_configs():
    model_cfg, resolved = config_lib.resolve(default_config.get_config())
    assert model_cfg.d_model == 128 and resolved["model"]["vocab_size"] == 8192   # builtin 8100 -> 8192
    assert set(resolved) >= {"model", "data", "train", "optimizer", "mesh", "evaluation", "vocabulary",
                             "vocabulary_fingerprint", "seed", "init_checkpoint"}


def test_the_vocabulary_comes_from_the_checkpoint_and_a_different_one_is_refused(tmp_path):
    path, saved = _pretrained(tmp_path, vocabulary="byte")
    config = default_config.get_config()
    config.init_checkpoint = path                # vocabulary left at the default: the checkpoint's
    _, resolved = config_lib.resolve(config)
    assert resolved["vocabulary"] == "byte" and resolved["model"]["vocab_size"] == saved["model"]["vocab_size"]
    config.vocabulary = "byte:50"                # a different vocabulary than the model was trained with
    with pytest.raises(UserError, match="was trained with another vocabulary"):
        config_lib.resolve(config)


def test_a_missing_init_checkpoint_is_one_line(tmp_path):
    config = default_config.get_config()
    config.init_checkpoint = str(tmp_path / "nothing")
    with pytest.raises(UserError, match="checkpoint directory not found") as e:
        config_lib.resolve(config)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_finetune_a_non_default_checkpoint_end_to_end(tmp_path):
    """Pretrain a model of another shape, then fine-tune it with configs/finetune.py's settings
    without restating its shape: the params load (they would not fit the default model)."""
    small = ["--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.d_kv=16",
             "--config.model.d_ff=48", "--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
             "--config.data.batch_size=8", "--config.data.feature_lengths.inputs=32",
             "--config.data.feature_lengths.targets=8", "--config.train.eval_every=0",
             "--config.train.async_checkpointing=False"]
    pre = str(tmp_path / "pre")
    assert train_main.main(["--workdir", pre, *small, "--config.train.num_steps=2"]) == 0
    ft = str(tmp_path / "ft")
    assert train_main.main([
        "--workdir", ft, "--config", os.path.join(REPO, "configs", "finetune.py:local_wordnet_lexname"),
        "--config.init_checkpoint", pre, "--config.data.task=builtin_span_corruption",
        "--config.evaluation.tasks=()", "--config.train.eval_every=0", "--config.data.batch_size=8",
        "--config.data.feature_lengths.inputs=32", "--config.data.feature_lengths.targets=8",
        "--config.train.num_steps=1", "--config.train.async_checkpointing=False"]) == 0
    pre_model = read_config(os.path.join(pre, "checkpoints"))["model"]
    ft_model = read_config(os.path.join(ft, "checkpoints"))["model"]
    assert ft_model == {**pre_model, "dropout_rate": 0.1}, json.dumps([pre_model, ft_model])
