"""Experiment configs: validation, resolution, and the gin front end.

The keys, their defaults and their meanings are declared once, in
t5x_lite/train/default_config.py; configs/*.py change what differs.  This module

* validates a config against those declarations (every key present with its declared
  type, no undeclared key, values in range; choices from the module that owns them),
* resolves it into the ModelConfig to build and the dict saved with every checkpoint
  (`resolve`; with init_checkpoint the model section comes from that checkpoint), and
* reads gin files and bindings onto it (`apply_gin`), in this project's names
  (``train.num_steps = 100``, ``experiment.seed = 1`` for the top-level keys) or
  T5X's (``TRAIN_STEPS = 100``, ``network.T5Config.emb_dim = 512``; see T5X_NAMES).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from typing import Any, Sequence

import ml_collections
from gin import config_parser

from t5x_lite import decoding, loading, partitioning
from t5x_lite.data import get_task_or_mixture, get_vocabulary, vocabulary_fingerprint
from t5x_lite.errors import UserError
from t5x_lite.models.config import ModelConfig
from t5x_lite.train import default_config, finetune_init, losses, optimizers

# Keys whose value is a whole dict (its own keys vary by experiment), not a section.
DICT_VALUES = ("data.feature_lengths",)


def to_dict(config) -> Any:
    """ConfigDict -> plain JSON-serialisable dict (tuples become lists)."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if isinstance(config, dict):
        return {str(k): to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    return config


def _close(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------

def _type_ok(value, declared) -> bool:
    if isinstance(declared, bool):
        return isinstance(value, bool)
    if isinstance(declared, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(declared, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(declared, (tuple, list)):
        return isinstance(value, (tuple, list))
    if isinstance(declared, (dict, ml_collections.ConfigDict)):
        return isinstance(value, (dict, ml_collections.ConfigDict))
    return isinstance(value, type(declared))


def _check_declared(config, declared, prefix: str = "") -> None:
    for key in declared:
        path = prefix + key
        if key not in config:
            raise UserError(f"config is missing required key {path}")
        want, value = declared[key], config[key]
        if isinstance(want, ml_collections.ConfigDict) and path not in DICT_VALUES:
            if not isinstance(value, (dict, ml_collections.ConfigDict)):
                raise UserError(f"config {path} must be a section of keys, got {value!r}")
            _check_declared(value, want, path + ".")
        elif not _type_ok(value, want):
            raise UserError(f"config {path} must be a {type(want).__name__} like {want!r}, got {value!r}")
    for key in config:
        if key not in declared:
            raise UserError(f"config key {prefix}{key} is not declared in t5x_lite/train/default_config.py"
                            f"{_close(key, declared)}")


def _number(config, key: str, lo: float, hi: float = math.inf, *, lo_open: bool = False,
            hi_open: bool = False) -> None:
    section, _, name = key.rpartition(".")
    value = (config[section] if section else config)[name]
    if (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi):
        bounds = f"{'>' if lo_open else '>='} {lo}" + (f" and {'<' if hi_open else '<='} {hi}" if hi < math.inf else "")
        raise UserError(f"config {key} must be {bounds}, got {value}")


def _choice(config, key: str, choices: Sequence[str]) -> None:
    section, name = key.split(".")
    if config[section][name] not in choices:
        raise UserError(f"config {key} must be one of {'|'.join(choices)}, got {config[section][name]!r}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every key against train/default_config.py; raise UserError (one line) on the first problem."""
    _check_declared(config, default_config.get_config())
    for key in ("train.num_steps", "train.log_every", "train.eval_steps", "train.keep_checkpoints",
                "train.num_microbatches", "data.batch_size", "evaluation.num_examples", "evaluation.batch_size",
                "evaluation.beam_size", "evaluation.max_decode_length", "optimizer.min_dim_size_to_factor"):
        _number(config, key, 1)
    for key in ("seed", "train.checkpoint_every", "train.eval_every", "train.z_loss", "train.grad_clip",
                "optimizer.warmup_steps", "optimizer.end_learning_rate", "optimizer.weight_decay",
                "optimizer.clipping_threshold", "optimizer.adafactor_epsilon", "optimizer.epsilon",
                "evaluation.alpha"):
        _number(config, key, 0)
    for key in ("train.label_smoothing", "optimizer.momentum", "optimizer.b1", "optimizer.b2"):
        _number(config, key, 0, 1, hi_open=True)
    _number(config, "optimizer.learning_rate", 0, lo_open=True)
    _number(config, "optimizer.decay_rate", 0, lo_open=True)
    _number(config, "data.shuffle_seed", -1)
    _choice(config, "train.loss_normalization", losses.NORMALIZATIONS)
    _choice(config, "optimizer.name", optimizers.NAMES)
    _choice(config, "optimizer.schedule", optimizers.SCHEDULES)
    _choice(config, "evaluation.decode", decoding.METHODS)
    if not config.data.task:
        raise UserError("config data.task must be a task or mixture name, got ''")
    if not config.data.feature_lengths:
        raise UserError("config data.feature_lengths must name at least one feature")
    for name, length in dict(config.data.feature_lengths).items():
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise UserError(f"config data.feature_lengths.{name} must be a positive integer, got {length!r}")
    for axis in partitioning.MESH_AXES:
        size = config.mesh[axis]
        if size < 1 and size != -1:
            raise UserError(f"config mesh.{axis} must be a positive integer or -1, got {size!r}")
    if config.data.batch_size % config.train.num_microbatches:
        raise UserError(f"data.batch_size={config.data.batch_size} is not divisible by "
                        f"train.num_microbatches={config.train.num_microbatches}")
    ModelConfig.from_dict(dict(to_dict(config.model), vocab_size=max(int(config.model.vocab_size), 1)))
    return config


# ----------------------------------------------------------------------------
# Resolution
# ----------------------------------------------------------------------------

def resolve(config) -> tuple[ModelConfig, dict]:
    """(ModelConfig, the resolved config dict saved with every checkpoint).

    With config.init_checkpoint (a checkpoint directory or a training workdir) the model
    section is the checkpoint's saved one, with only the model keys this experiment changed
    from train/default_config.py applied on top (e.g. dropout_rate for fine-tuning); the
    vocabulary too is the checkpoint's unless the experiment names one.  model.vocab_size 0
    becomes the vocabulary's size rounded up to a multiple of 128 (T5X pads 32100 -> 32128)."""
    validate(config)
    import t5x_lite.tasks  # noqa: F401  # lazy: registers the built-in tasks data.task may name, only when resolving
    get_task_or_mixture(config.data.task)   # an unknown task is one line now, not after the model is built
    model = to_dict(config.model)
    vocab_spec = config.vocabulary or None
    saved_fingerprint = None
    if config.init_checkpoint:
        ck = loading.open_checkpoint(config.init_checkpoint)
        defaults = default_config.get_config()
        changed = {k: v for k, v in model.items() if v != to_dict(defaults.model[k])}
        model = finetune_init.adapt_model_section({**ck.model_config.to_dict(), **changed})
        if config.vocabulary == defaults.vocabulary and ck.config.get("vocabulary"):
            vocab_spec = ck.config["vocabulary"]
        saved_fingerprint = ck.config.get("vocabulary_fingerprint")
    fingerprint = None
    if vocab_spec:
        vocab = get_vocabulary(vocab_spec)
        fingerprint = vocabulary_fingerprint(vocab)
        if saved_fingerprint and fingerprint != saved_fingerprint:
            raise UserError(f"init_checkpoint {config.init_checkpoint} was trained with another vocabulary than "
                            f"{vocab_spec!r} (fingerprint {saved_fingerprint} vs {fingerprint}); set "
                            "--config.vocabulary to the one it was trained with")
        size = int(vocab.vocab_size)
        if 0 < int(model["vocab_size"]) < size:
            raise UserError(f"model.vocab_size={model['vocab_size']} is smaller than vocabulary {vocab_spec!r} "
                            f"({size} ids)")
        if int(model["vocab_size"]) <= 0:
            model["vocab_size"] = -(-size // 128) * 128
    elif int(model["vocab_size"]) <= 0:
        raise UserError("model.vocab_size is 0 (from vocabulary) but config.vocabulary is empty")
    model_cfg = ModelConfig.from_dict(model)
    resolved = to_dict(config)
    resolved["model"] = model_cfg.to_dict()
    resolved["vocabulary"] = vocab_spec
    resolved["vocabulary_fingerprint"] = fingerprint  # checked when score/eval/infer load the checkpoint
    resolved.update(finetune_init.classifier_entries(model_cfg, config.data.task))   # an encoder classifier's labels
    return model_cfg, resolved


# ----------------------------------------------------------------------------
# Gin
# ----------------------------------------------------------------------------

SECTIONS = ("model", "data", "train", "optimizer", "mesh", "evaluation")
TOP_LEVEL = ("seed", "vocabulary", "init_checkpoint")   # bound as experiment.KEY

# T5X's gin names (a configurable's parameter, or a macro) that have a counterpart here.
T5X_NAMES = {
    "network.T5Config.emb_dim": "model.d_model",
    "network.T5Config.num_heads": "model.num_heads",
    "network.T5Config.num_encoder_layers": "model.num_encoder_layers",
    "network.T5Config.num_decoder_layers": "model.num_decoder_layers",
    "network.T5Config.head_dim": "model.d_kv",
    "network.T5Config.mlp_dim": "model.d_ff",
    "network.T5Config.mlp_activations": "model.mlp_activations",
    "network.T5Config.dropout_rate": "model.dropout_rate",
    "network.T5Config.logits_via_embedding": "model.tie_embeddings",
    "network.T5Config.vocab_size": "model.vocab_size",
    "network.T5Config.dtype": "model.dtype",
    "utils.SaveCheckpointConfig.period": "train.checkpoint_every",
    "utils.SaveCheckpointConfig.keep": "train.keep_checkpoints",
    "train_script.train.eval_period": "train.eval_every",
    "train_script.train.total_steps": "train.num_steps",
    "TRAIN_STEPS": "train.num_steps",
    "BATCH_SIZE": "data.batch_size",
    "TASK_FEATURE_LENGTHS": "data.feature_lengths",
    "MIXTURE_OR_TASK_NAME": "data.task",
    "DROPOUT_RATE": "model.dropout_rate",
    "Z_LOSS": "train.z_loss",
    "LABEL_SMOOTHING": "train.label_smoothing",
}
# T5X names that are not config keys: where the value goes (GinResult) or why it is ignored.
T5X_MODULE, T5X_MODEL_DIR, T5X_CACHED = "MIXTURE_OR_TASK_MODULE", "MODEL_DIR", "USE_CACHED_TASKS"
T5X_OTHER = (T5X_MODULE, T5X_MODEL_DIR, T5X_CACHED)
# T5X wiring with no value of its own (the network reads network.T5Config), accepted and ignored.
T5X_WIRING = ("network.Transformer.config",)
# `include 't5x/...'` of T5X's own files -> the hand-written counterparts under gin/.
T5X_INCLUDES = {"t5x/examples/t5/": "", "t5x/configs/runs/": "runs/"}
GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "gin")


class GinResult(typing.NamedTuple):
    config: ml_collections.ConfigDict
    modules: list          # MIXTURE_OR_TASK_MODULE: modules to import (like --module)
    model_dir: str | None  # MODEL_DIR: the workdir, unless --workdir is given
    notes: list            # one line each, for the log


@dataclasses.dataclass(frozen=True)
class _Reference:
    name: str              # @name or @name(): a configurable; nothing here takes one as a value


@dataclasses.dataclass(frozen=True)
class _Macro:
    name: str              # %NAME


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name, evaluate):
        return _Reference(scoped_name)

    def macro(self, name):
        return _Macro(name)


def _leaves(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def _substitute(value, macros: dict, where: str, depth: int = 0):
    """`value` with every %MACRO replaced by its (last) bound value."""
    if isinstance(value, _Macro):
        if value.name not in macros or depth > 20:
            raise UserError(f"gin macro %{value.name} is not bound{where}")
        return _substitute(macros[value.name], macros, where, depth + 1)
    if isinstance(value, (list, tuple)):
        return type(value)(_substitute(v, macros, where, depth) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, macros, where, depth) for k, v in value.items()}
    return value


def _where(location) -> str:
    return f" ({location.filename or 'gin_bindings'}:{location.line_num})"


def _include_path(name: str, including: str | None) -> str:
    """An include, looked up from the including file's directory upwards, then the current
    directory and the repository's gin/ (where T5X's own paths land, see T5X_INCLUDES)."""
    for prefix, ours in T5X_INCLUDES.items():
        if name.startswith(prefix):
            name = ours + name[len(prefix):]
    dirs = []
    d = os.path.dirname(os.path.abspath(including)) if including else ""
    while d and d not in dirs:
        dirs.append(d)
        d = os.path.dirname(d)
    for base in dirs + [os.getcwd(), GIN_DIR]:
        if os.path.isfile(os.path.join(base, name)):
            return os.path.join(base, name)
    raise UserError(f"gin include not found: {name}" + (f" (included by {including})" if including else ""))


def _statements(text_or_file, filename: str | None, seen: tuple = ()):
    """Every binding statement, includes expanded in place.  Imports are skipped: nothing is
    imported for gin here (T5X's `from t5x import utils` only names a prefix of its keys)."""
    try:
        for st in config_parser.ConfigParser(text_or_file, _Delegate()):
            if isinstance(st, config_parser.IncludeStatement):
                path = _include_path(st.filename, filename)
                if path in seen:
                    raise UserError(f"gin include cycle: {path}{_where(st.location)}")
                with open(path) as f:
                    yield from _statements(f, path, seen + (path,))
            elif isinstance(st, config_parser.BindingStatement):
                yield st._replace(location=st.location._replace(filename=filename))
    except UserError:
        raise
    except Exception as e:  # gin's SyntaxError and friends carry multi-line messages
        raise UserError(f"bad gin config{' in ' + filename if filename else ''}: {type(e).__name__}: "
                        f"{' '.join(str(e).split())}") from None


def _put(config, key: str, value, where: str) -> None:
    *path, name = key.split(".")
    node = config
    for part in path:
        node = node[part]
    old = node[name]
    if isinstance(old, ml_collections.ConfigDict) and isinstance(value, dict):
        value = ml_collections.ConfigDict(value)
    elif isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    elif isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        with config.unlocked():
            node[name] = value
    except (TypeError, ValueError) as e:
        raise UserError(f"gin binding {key} = {value!r}{where}: {' '.join(str(e).split())}") from None


def _config_key(config, name: str, where: str) -> str:
    """This project's gin name (SECTION.KEY..., experiment.KEY) -> the config key it binds."""
    section, _, rest = name.partition(".")
    key = rest if section == "experiment" else name
    node = {k: config[k] for k in TOP_LEVEL} if section == "experiment" else config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, (dict, ml_collections.ConfigDict)):
            raise UserError(f"gin binding {name}{where}: {'.'.join(parts[:i])} is not a section")
        if part not in node:
            raise UserError(f"gin binding {name}{where}: unknown key{_close(part, node.keys())}")
        node = node[part]
    return key


def apply_gin(config: ml_collections.ConfigDict, gin_files: Sequence[str],
              gin_bindings: Sequence[str]) -> GinResult:
    """Read gin files, then bindings, onto `config`.  As in gin, the last binding of a name wins
    and a %MACRO is replaced by its last value wherever it is used."""
    statements = []
    for path in gin_files:
        if not os.path.isfile(path):
            raise UserError(f"gin file not found: {path}")
        with open(path) as f:
            statements += list(_statements(f, path, (os.path.abspath(path),)))
    statements += list(_statements("\n".join(gin_bindings), None))
    latest = {}                                   # name -> (value, where), in order of the last binding
    for st in statements:
        name = ".".join(p for p in (st.selector, st.arg_name) if p)
        if st.scope:
            raise UserError(f"gin binding {st.scope}/{name}{_where(st.location)}: scoped bindings have no "
                            "counterpart in t5x-lite")
        latest.pop(name, None)
        latest[name] = (st.value, _where(st.location))
    macros = {name: value for name, (value, _) in latest.items() if "." not in name}
    used = {leaf.name for value, _ in latest.values() for leaf in _leaves(value) if isinstance(leaf, _Macro)}
    result = GinResult(config, [], None, [])
    for name, (raw, where) in latest.items():
        helper_macro = name in macros and name in used and name not in T5X_NAMES and name not in T5X_OTHER
        if name in T5X_WIRING or helper_macro:
            continue                              # applied where it is used
        value = _substitute(raw, macros, where)
        if any(isinstance(leaf, _Reference) for leaf in _leaves(value)):
            raise UserError(f"gin binding {name}{where}: a configurable reference (@...) has no counterpart "
                            "in t5x-lite; bind plain values")
        if name == T5X_MODULE:
            result.modules.extend([value] if isinstance(value, str) else list(value))
        elif name == T5X_MODEL_DIR:
            result = result._replace(model_dir=str(value))
        elif name == T5X_CACHED:
            result.notes.append(f"{T5X_CACHED} = {value!r} ignored: t5x-lite reads tasks directly, there is "
                                "no task cache")
        elif name in T5X_NAMES:
            _put(config, T5X_NAMES[name], value, where)
        elif name.partition(".")[0] in SECTIONS + ("experiment",):
            _put(config, _config_key(config, name, where), value, where)
        else:
            raise UserError(f"gin binding {name}{where}: a T5X setting with no counterpart in t5x-lite; "
                            "remove it (docs/training.md lists the T5X names accepted)")
    return result
