"""Checkpoints: one Orbax CheckpointManager layout for training, conversion and eval.

Layout (an Orbax CheckpointManager root)::

    CKPT_DIR/
      <step>/
        params/      the model's nnx.Param state as a pure nested dict of arrays
        opt_state/   optimizer state (training checkpoints only)
        data_iter/   data-iterator state, JSON (training checkpoints only)
        config/      the resolved experiment config as a JSON dict;
                     config["model"] is ModelConfig.to_dict() and
                     config["vocabulary"] a vocabulary spec string or None

Orbax writes each step into a temporary directory and renames it only once
complete, so a process killed mid-save never leaves a step that `latest_step`
reports.  `t5x-lite convert` writes a params-only checkpoint at step 0 in this
same layout, so the trainer's `init_checkpoint` and `score`/`eval`/`infer` read
converted and trained checkpoints alike.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from t5x_lite.errors import UserError


def _manager(directory: str, item_names=("params", "config"), **options) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(create=True, **options),
        item_names=item_names,
    )


def latest_step(directory: str) -> int | None:
    """The newest *complete* step in `directory`, or None."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory) as mngr:
        return mngr.latest_step()


def _require_step(directory: str, step: int | None) -> int:
    if not os.path.isdir(directory):
        raise UserError(f"checkpoint directory not found: {directory}")
    found = latest_step(directory) if step is None else step
    if found is None:
        raise UserError(f"no complete checkpoint in {directory}")
    if not os.path.isdir(os.path.join(directory, str(found))):
        raise UserError(f"checkpoint step {found} not found in {directory}")
    return found


def save_params_checkpoint(directory: str, params: Any, config: dict, step: int = 0) -> str:
    """Write a params-only checkpoint (what `convert` produces). Returns the step dir."""
    with _manager(directory) as mngr:
        mngr.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            config=ocp.args.JsonSave(config)))
        mngr.wait_until_finished()
    return os.path.join(os.path.abspath(directory), str(step))


def read_config(directory: str, step: int | None = None) -> dict:
    step = _require_step(directory, step)
    try:
        with _manager(directory) as mngr:
            return dict(mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
    except Exception as e:  # corrupt or foreign directory
        raise UserError(f"cannot read config of checkpoint {directory} step {step}: {type(e).__name__}: {e}") from None


def restore_params(directory: str, step: int | None = None, abstract_params: Any = None) -> Any:
    """Restore params.  `abstract_params` is a tree of jax.ShapeDtypeStruct (with
    shardings) to restore onto a mesh; None restores host numpy arrays."""
    step = _require_step(directory, step)
    try:
        with _manager(directory) as mngr:
            if abstract_params is None:
                meta = mngr.item_metadata(step)["params"]
                import jax
                abstract_params = jax.tree.map(
                    lambda m: np.zeros(m.shape, m.dtype) if hasattr(m, "shape") else m, meta)
                restored = mngr.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_params)))["params"]
                return jax.tree.map(np.asarray, restored)
            return mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_params)))["params"]
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot restore params from {directory} step {step}: {type(e).__name__}: {e}") from None
