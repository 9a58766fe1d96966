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
reports (leftover ``<step>.orbax-checkpoint-tmp`` directories are ignored and
removed by the next training run).  `t5x-lite convert` writes a params-only checkpoint at step 0 in this
same layout, so the trainer's `init_checkpoint` and `score`/`eval`/`infer` read
converted and trained checkpoints alike.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from t5x_lite.errors import UserError


def _item_handlers(item_names=None) -> dict:
    """Handlers for every item we may find, so Orbax can read any step's
    metadata without warning about items it "could not restore"."""
    json_items = {"config", "data_iter"}
    return {name: ocp.JsonCheckpointHandler() if name in json_items else ocp.StandardCheckpointHandler()
            for name in item_names}


def _manager(directory: str, **options) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(create=True, **options),
        item_handlers=_item_handlers(TRAIN_ITEMS),
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


def save_best_params(directory: str, params: Any, config: dict, step: int) -> str:
    """Params-only checkpoint of `step` in `directory`, replacing the previous one there
    (the old step is deleted only after the new one is complete)."""
    with _manager(directory, max_to_keep=1) as mngr:
        mngr.save(step, force=True, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            config=ocp.args.JsonSave(config)))
        mngr.wait_until_finished()
    return os.path.join(os.path.abspath(directory), str(step))


# ----------------------------------------------------------------------------
# Training checkpoints (params + opt_state + data_iter + config)
# ----------------------------------------------------------------------------

TRAIN_ITEMS = ("params", "opt_state", "data_iter", "config")


class TrainCheckpointer:
    """Async, keep-N training checkpoints in the layout above.

    `save` returns once the arrays are copied off the devices (so the caller
    may donate them to the next step); the files are written by a background
    thread and the step directory appears, atomically renamed, only when
    complete.  Restores go onto whatever shardings the caller's abstract state
    carries, so a run can resume on a different mesh.
    """

    def __init__(self, directory: str, keep: int | None = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True, max_to_keep=keep if keep and keep > 0 else None,
                enable_async_checkpointing=async_save, cleanup_tmp_directories=True),
            item_handlers=_item_handlers(TRAIN_ITEMS))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state: dict, data_iter: dict | None, config: dict, *, force: bool = True) -> bool:
        return self._mngr.save(int(step), force=force, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]),
            opt_state=ocp.args.StandardSave(state["opt_state"]),
            data_iter=ocp.args.JsonSave(data_iter if data_iter is not None else {}),
            config=ocp.args.JsonSave(config)))

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict, dict]:
        """(state, data_iter state, config) of `step`; `abstract_state` as in the train state
        ({"params", "opt_state", "step"}, ShapeDtypeStructs with shardings)."""
        try:
            out = self._mngr.restore(int(step), args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state["params"]),
                opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
                data_iter=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore()))
        except Exception as e:
            raise UserError(f"cannot restore training checkpoint {self.directory} step {step} "
                            f"(different model or optimizer?): {type(e).__name__}: {e}") from None
        import jax
        import jax.numpy as jnp
        sds = abstract_state["step"]
        step_arr = jax.device_put(jnp.asarray(int(step), sds.dtype), getattr(sds, "sharding", None))
        state = {"params": out["params"], "opt_state": out["opt_state"], "step": step_arr}
        return state, dict(out["data_iter"] or {}), dict(out["config"] or {})

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()
