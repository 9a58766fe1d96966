"""Checkpoint -> model: the one loader of eval, infer, score, convert and the trainer's init_checkpoint.

A checkpoint path is either an Orbax root (``CKPT_DIR/<step>/``, what `t5x-lite convert` writes
and what the trainer keeps under ``WORKDIR/checkpoints/``) or a training workdir that holds
``checkpoints/``.  The step defaults to the newest complete one.  What a user can get wrong (no
such directory, no steps, an unknown step, a config without a valid model section, params that
do not fit that model) is a one-line UserError raised here, before anything is compiled.

    loaded = load_model("runs/t5_small", step=None)     # Loaded(model, model_config, config, ...)
    with partitioning.activate(loaded.mesh):
        ...                                              # trace and run jitted code on loaded.model

The model is built with nnx.eval_shape (nothing is randomly initialised) and its params are
placed on a mesh by the logical axis rules.  The default, `single_device_mesh()`, keeps results
identical to plain single-device execution.  `load_params` restores params only, straight onto
the shardings a caller already has (the trainer's init_checkpoint).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from t5x_lite import checkpoints, partitioning
from t5x_lite.data import checkpoint_vocabulary
from t5x_lite.errors import UserError
from t5x_lite.models import ModelConfig, build_model


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One step of a checkpoint directory, with the config saved next to its params."""
    directory: str               # the Orbax root read (WORKDIR/checkpoints for a workdir)
    step: int
    config: dict                 # the experiment config saved with the step
    model_config: ModelConfig    # config["model"], validated


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A model restored from a checkpoint."""
    model: Any                   # the nnx model, params on `mesh`
    model_config: ModelConfig
    config: dict
    directory: str
    step: int
    vocabulary: Any              # the checkpoint's vocabulary (or the override), None if it has none
    mesh: Any                    # run the model inside partitioning.activate(mesh)


def _step_dirs(directory: str) -> list[int]:
    return sorted(int(e) for e in os.listdir(directory)
                  if e.isdigit() and os.path.isdir(os.path.join(directory, e)))


def locate(path: str, step: int | None = None) -> tuple[str, int]:
    """(Orbax root, step) for a checkpoint dir or a training workdir; step None = the latest."""
    if not os.path.isdir(path):
        raise UserError(f"checkpoint directory not found: {path}")
    root = path
    if not _step_dirs(path) and os.path.isdir(os.path.join(path, "checkpoints")):
        root = os.path.join(path, "checkpoints")        # a training workdir
    latest = checkpoints.latest_step(root)
    if latest is None:
        raise UserError(f"no complete checkpoint in {path} (expected <step>/ directories, or a training "
                        "workdir with checkpoints/)")
    if step is None:
        return root, latest
    steps = _step_dirs(root)
    if step not in steps:
        raise UserError(f"checkpoint step {step} not found in {root} (it has steps {some_names(map(str, steps))})")
    return root, int(step)


def open_checkpoint(path: str, step: int | None = None) -> Checkpoint:
    """Locate the step and read its config; the model section must be a valid ModelConfig."""
    root, step = locate(path, step)
    config = checkpoints.read_config(root, step)
    if not isinstance(config.get("model"), dict):
        raise UserError(f"checkpoint {root} step {step} has no model config (config['model'])")
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (UserError, TypeError, ValueError) as e:
        raise UserError(f"checkpoint {root} step {step} has a bad model config: {e}") from None
    return Checkpoint(root, step, config, model_config)


def single_device_mesh():
    """A (data, fsdp, tensor) = (1, 1, 1) mesh on the first local device."""
    return partitioning.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.local_devices()[:1])


def load_model(path: str, step: int | None = None, *, mesh=None, vocabulary: str | None = None,
               read_vocabulary: bool = True) -> Loaded:
    """The model of a checkpoint step, its params placed on `mesh` (default: single_device_mesh()).

    vocabulary: a spec that overrides the checkpoint's.  With read_vocabulary, the vocabulary is
    resolved by data.checkpoint_vocabulary (which refuses a file whose fingerprint changed)."""
    ck = open_checkpoint(path, step)
    vocab = checkpoint_vocabulary(ck.config, vocabulary) if read_vocabulary else None
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(ck.model_config, nnx.Rngs(0))))
    host = checkpoints.restore_params(ck.directory, ck.step)
    check_params(host, nnx.to_pure_dict(state),
                 f"checkpoint {ck.directory} step {ck.step} params do not match its model config")
    mesh = single_device_mesh() if mesh is None else mesh
    shardings = partitioning.named(mesh, partitioning.param_specs(state, mesh))
    nnx.replace_by_pure_dict(state, host)
    nnx.replace_by_pure_dict(state, jax.device_put(nnx.to_pure_dict(state), shardings))
    return Loaded(nnx.merge(graphdef, state), ck.model_config, ck.config, ck.directory, ck.step, vocab, mesh)


def load_params(path: str, target: Any, step: int | None = None) -> Any:
    """Params of a checkpoint step restored onto `target`, a pure dict of jax.ShapeDtypeStruct
    with shardings (arrays come back with those shardings and dtypes).  The checkpoint's model
    must have target's param names and shapes."""
    ck = open_checkpoint(path, step)
    check_params(abstract_params(ck.model_config), target,
                 f"checkpoint {ck.directory} step {ck.step} holds a different model")
    return checkpoints.restore_params(ck.directory, ck.step, abstract_params=target)


def abstract_params(cfg: ModelConfig) -> dict:
    """The model's param tree as nested dicts of jax.ShapeDtypeStruct (nothing allocated)."""
    model = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def check_params(got: dict, want: dict, what: str) -> None:
    """UserError "<what>: ..." unless `got` has exactly `want`'s param paths and shapes."""
    have, need = flatten_params(got), flatten_params(want)
    if set(have) != set(need):
        missing = ["/".join(k) for k in set(need) - set(have)]
        extra = ["/".join(k) for k in set(have) - set(need)]
        parts = ([f"missing {some_names(missing)}"] if missing else []) + (
            [f"unexpected {some_names(extra)}"] if extra else [])
        raise UserError(f"{what}: {'; '.join(parts)}")
    for k in sorted(need):
        if tuple(np.shape(have[k])) != tuple(need[k].shape):
            raise UserError(f"{what}: param {'/'.join(k)} has shape {list(np.shape(have[k]))}, "
                            f"expected {list(need[k].shape)}")


def flatten_params(tree: dict, prefix: tuple = ()) -> dict:
    """{path tuple of str: leaf} of a nested dict."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten_params(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def some_names(names) -> str:
    """The first few names, sorted, for a one-line message."""
    names = sorted(names)
    return ", ".join(names[:4]) + (f" ... ({len(names)} in all)" if len(names) > 4 else "")
