"""Experiment configs: loading (ml_collections / gin), validation, resolution.

ml_collections is the one config of record (configs/*.py, `--config.KEY=VALUE`).
Gin is a thin translation layer for T5X users: a gin file binds the same keys
through one configurable per config section::

    model.d_model = 512            # -> config.model.d_model
    train.num_steps = 10000        # -> config.train.num_steps
    data.feature_lengths = {'inputs': 512, 'targets': 114}
    experiment.seed = 42           # top-level keys: seed, vocabulary, init_checkpoint

and, for familiarity, T5X's network names map onto `model`
(``network.T5Config.emb_dim`` -> model.d_model, see T5X_ALIASES).
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Sequence

import ml_collections

from t5x_lite.errors import UserError

REQUIRED_KEYS = ("train.num_steps", "train.checkpoint_every", "train.log_every", "train.eval_every",
                 "seed", "mesh.data", "mesh.fsdp", "mesh.tensor")

SECTIONS = ("model", "data", "train", "optimizer", "mesh", "evaluation")
TOP_LEVEL = ("seed", "vocabulary", "init_checkpoint")

# T5X gin names (network.T5Config.*) -> config.model keys.
T5X_ALIASES = {
    "vocab_size": "vocab_size", "emb_dim": "d_model", "num_heads": "num_heads",
    "num_encoder_layers": "num_encoder_layers", "num_decoder_layers": "num_decoder_layers",
    "head_dim": "d_kv", "mlp_dim": "d_ff", "mlp_activations": "mlp_activations",
    "dropout_rate": "dropout_rate", "logits_via_embedding": "tie_embeddings", "dtype": "dtype",
}


def _get_path(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if isinstance(node, (dict, ml_collections.ConfigDict)) and part in node:
            node = node[part]
        else:
            raise KeyError(dotted)
    return node


def _value(config, key: str):
    try:
        return _get_path(config, key)
    except KeyError:
        raise UserError(f"config is missing key {key}") from None


def _int(config, key: str, minimum: int) -> int:
    value = _value(config, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"config {key} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"config {key} must be >= {minimum}, got {value}")
    return value


def _choice(config, key: str, choices: Sequence[str]) -> str:
    value = _value(config, key)
    if value not in choices:
        raise UserError(f"config {key} must be one of {'|'.join(choices)}, got {value!r}")
    return value


def _float_range(config, key: str, lo: float, hi: float) -> float:
    value = _value(config, key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"config {key} must be a number, got {value!r}") from None
    if not lo <= value < hi:
        raise UserError(f"config {key} must be in [{lo}, {hi}), got {value}")
    return value


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every key the trainer reads; raise UserError (one line) on the first problem."""
    for key in REQUIRED_KEYS:
        try:
            _get_path(config, key)
        except KeyError:
            raise UserError(f"config is missing required key {key}") from None
    for key in ("model", "data", "train", "optimizer", "mesh"):
        if key not in config:
            raise UserError(f"config is missing section {key!r}")
    _int(config, "seed", 0)
    _int(config, "train.num_steps", 1)
    _int(config, "train.checkpoint_every", 0)
    _int(config, "train.log_every", 1)
    _int(config, "train.eval_every", 0)
    _int(config, "train.eval_steps", 1)
    _int(config, "train.keep_checkpoints", 1)
    _int(config, "train.num_microbatches", 1)
    _int(config, "data.batch_size", 1)
    if not isinstance(_value(config, "data.pack"), bool):
        raise UserError(f"config data.pack must be True or False, got {config.data.pack!r}")
    _choice(config, "train.loss_normalization", ("sum", "mean"))
    _float_range(config, "train.z_loss", 0.0, float("inf"))
    _float_range(config, "train.label_smoothing", 0.0, 1.0)
    _float_range(config, "train.grad_clip", 0.0, float("inf"))
    _choice(config, "optimizer.name", ("adafactor", "adamw"))
    _choice(config, "optimizer.schedule", ("rsqrt", "linear", "cosine", "constant"))
    _float_range(config, "optimizer.learning_rate", 1e-30, float("inf"))
    _int(config, "optimizer.warmup_steps", 0)
    fl = _value(config, "data.feature_lengths")
    for k in fl:
        _int(config, f"data.feature_lengths.{k}", 1)
    if not isinstance(_value(config, "data.task"), str) or not config.data.task:
        raise UserError(f"config data.task must be a task or mixture name, got {config.data.task!r}")
    for axis in ("data", "fsdp", "tensor"):
        v = _value(config, f"mesh.{axis}")
        if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and v != -1):
            raise UserError(f"config mesh.{axis} must be a positive integer or -1, got {v!r}")
    if config.train.num_microbatches > 1 and config.data.batch_size % config.train.num_microbatches:
        raise UserError(f"data.batch_size={config.data.batch_size} is not divisible by "
                        f"train.num_microbatches={config.train.num_microbatches}")
    model_config(config, vocab_size=max(int(config.model.vocab_size), 1))  # field names and values
    return config


def model_config(config, vocab_size: int | None = None):
    """config.model -> ModelConfig (validated); vocab_size overrides a 0 (= from vocabulary)."""
    from t5x_lite.models.config import ModelConfig

    d = dict(to_dict(config.model))
    if vocab_size is not None and int(d.get("vocab_size", 0)) <= 0:
        d["vocab_size"] = vocab_size
    return ModelConfig.from_dict(d)


def to_dict(config) -> Any:
    """ConfigDict -> plain JSON-serialisable dict (tuples become lists)."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if isinstance(config, dict):
        return {str(k): to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    return config


# ----------------------------------------------------------------------------
# Gin
# ----------------------------------------------------------------------------

_GIN_REGISTERED = False


def _register_gin():
    global _GIN_REGISTERED
    if _GIN_REGISTERED:
        return
    import gin

    def section(**kwargs):
        return kwargs
    for name in SECTIONS + ("experiment",):
        gin.external_configurable(section, name=name)
    gin.external_configurable(section, name="T5Config", module="network")
    _GIN_REGISTERED = True


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def apply_gin(config: ml_collections.ConfigDict, gin_files: Sequence[str],
              gin_bindings: Sequence[str]) -> ml_collections.ConfigDict:
    """Parse gin files/bindings and write the bound values into `config`."""
    if not gin_files and not gin_bindings:
        return config
    import gin

    _register_gin()
    gin.unlock_config()
    gin.clear_config()
    for f in gin_files:
        if not os.path.exists(f):
            raise UserError(f"gin file not found: {f}")
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(f)))
    # Includes are resolved relative to the repository's gin/ directory too.
    gin.add_config_file_search_path(os.getcwd())
    try:
        gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings), skip_unknown=False,
                                            finalize_config=False)
    except Exception as e:
        msg = " ".join(str(e).split())
        raise UserError(f"bad gin config: {type(e).__name__}: {msg}") from None

    def put(section_name: str, key: str, value):
        target = config if section_name == "experiment" else config[section_name]
        known = TOP_LEVEL if section_name == "experiment" else list(target.keys())
        if key not in known:
            raise UserError(f"gin binding {section_name}.{key}: unknown key{_suggest(key, known)}")
        old = target[key]
        if isinstance(old, ml_collections.ConfigDict) and isinstance(value, dict):
            value = ml_collections.ConfigDict(value)
        elif isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            with config.unlocked() if hasattr(config, "unlocked") else _null():
                target[key] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"gin binding {section_name}.{key} = {value!r}: {e}") from None

    try:
        for name in SECTIONS + ("experiment",):
            for key, value in gin.get_bindings(name).items():
                put(name, key, value)
        for key, value in gin.get_bindings("network.T5Config").items():
            if key not in T5X_ALIASES:
                raise UserError(f"gin binding network.T5Config.{key}: not supported{_suggest(key, T5X_ALIASES)}")
            put("model", T5X_ALIASES[key], value)
    finally:
        gin.clear_config()
    return config


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def config_to_gin(config) -> str:
    """The gin file that reproduces `config` (every key of every section) through apply_gin."""
    d = to_dict(config)
    lines = []
    for key in TOP_LEVEL:
        if key in d:
            lines.append(f"experiment.{key} = {_gin_value(d[key])}")
    for section in SECTIONS:
        lines.append("")
        for key, value in d.get(section, {}).items():
            lines.append(f"{section}.{key} = {_gin_value(value)}")
    return "\n".join(lines) + "\n"


def _gin_value(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_gin_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_gin_value(x) for x in v) + "]"
    if v is None:
        return "None"
    return repr(v)
