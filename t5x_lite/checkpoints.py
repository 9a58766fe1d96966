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

        checksums/   a 64-bit fingerprint of every array saved and a sha256 of each
                     JSON item, taken at save time (see Integrity below)

Orbax writes each step into a temporary directory and renames it only once
complete, so a process killed mid-save never leaves a step that `latest_step`
reports (leftover ``<step>.orbax-checkpoint-tmp`` directories are ignored and
removed by the next training run).  `t5x-lite convert` writes a params-only checkpoint at step 0 in this
same layout, so the trainer's `init_checkpoint` and `score`/`eval`/`infer` read
converted and trained checkpoints alike.

Integrity.  Every save also writes ``checksums/``, inside the same atomic step, and every
restore verifies what it read against it, then checks that the params are finite.  An
array's fingerprint is two wrapping uint32 sums over its bit patterns, each weighted by an
odd function of the element's row-major position: any single changed element changes it,
and, because modular addition does not care about order, it is the same however the array
is sharded when saved or restored.  A mismatch, an unreadable item or non-finite params
raise `DamagedCheckpoint` (a one-line UserError naming the step and the item).  The trainer
then sets the step aside as ``<step>.corrupt`` and resumes from the newest step that
verifies; eval, infer, score and convert refuse it.  Steps written before checksums existed
have no ``checksums/`` and are checked for finite params only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from t5x_lite.errors import UserError, peer_failure, peer_lost

CHECKSUMS = "checksums"


class DamagedCheckpoint(UserError):
    """A checkpoint step whose files do not hold what was saved (see Integrity above)."""

    def __init__(self, directory: str, step: int, what: str):
        self.step = int(step)
        super().__init__(f"checkpoint {os.path.join(directory, str(step))} is damaged: {what}")


# Model settings that choose how a step is computed, not what the parameters are: a checkpoint
# resumes under another value, and one saved before the setting existed resumes too.
EXECUTION_ONLY_MODEL_KEYS = ("attention_impl", "remat_policy")


def same_model(saved: dict | None, current: dict) -> bool:
    """Is a checkpoint's recorded model config the model `current` describes?"""
    def strip(m):
        return {k: v for k, v in (m or {}).items() if k not in EXECUTION_ONLY_MODEL_KEYS}
    return saved is not None and strip(saved) == strip(current)


def _unreadable(directory: str, step: int, what: str, e: BaseException) -> DamagedCheckpoint:
    """DamagedCheckpoint for a read that failed, unless it failed because another process of a
    multi-process run died: that ends this process with the peer-lost line instead (a healthy
    step must not be set aside for it)."""
    why = peer_failure(e)
    if why is not None:
        peer_lost(why)
    return DamagedCheckpoint(directory, step, f"{what} ({_short(e)})")


def _item_handlers(item_names=None) -> dict:
    """Handlers for every item we may find, so Orbax can read any step's
    metadata without warning about items it "could not restore"."""
    json_items = {"config", "data_iter", CHECKSUMS}
    return {name: ocp.JsonCheckpointHandler() if name in json_items else ocp.StandardCheckpointHandler()
            for name in item_names}


def _manager(directory: str, **options) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(create=True, **options),
        item_handlers=_item_handlers(TRAIN_ITEMS + (CHECKSUMS,)),
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


# ----------------------------------------------------------------------------
# Integrity: fingerprints at save time, verified at restore
# ----------------------------------------------------------------------------

_UINT = {1: "uint8", 2: "uint16", 4: "uint32"}
_FINGERPRINT_FN = None


def _leaf_fingerprint(x):
    """(uint32[2] fingerprint, all finite) of one array; see Integrity in the module docstring."""
    import jax.numpy as jnp
    from jax import lax
    u32 = jnp.uint32
    if x.dtype == jnp.bool_:
        bits = x.astype(u32)
    elif x.dtype.itemsize in _UINT:
        bits = lax.bitcast_convert_type(x, jnp.dtype(_UINT[x.dtype.itemsize])).astype(u32)
    else:                                           # 8-byte types: two uint32 words per element
        bits = lax.bitcast_convert_type(x, u32)
    # row-major element index, built per axis (no reshape, so a sharded array stays sharded)
    index, stride = jnp.zeros(bits.shape, u32), 1
    for axis in reversed(range(bits.ndim)):
        index = index + lax.broadcasted_iota(u32, bits.shape, axis) * u32(stride % 2**32)
        stride *= bits.shape[axis]
    w1 = (index * u32(0x9E3779B1) + u32(0x7F4A7C15)) | u32(1)
    w2 = ((index ^ (index >> 7)) * u32(0x85EBCA77) + u32(0xC2B2AE3D)) | u32(1)
    mixed = (bits * u32(0x27D4EB2F)) ^ (bits >> 13)
    fp = jnp.stack([jnp.sum(bits * w1, dtype=u32), jnp.sum(mixed * w2, dtype=u32)])
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
    return fp, finite


def _flat(tree, prefix: str) -> dict:
    """{"prefix/a/b": leaf} of a pytree (dict keys, attribute names and list indices)."""
    import jax
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        out["/".join([prefix, *names])] = leaf
    return out


def array_fingerprints(arrays: dict) -> dict:
    """{name: (hex fingerprint, dtype name, all finite)} of {name: array}, in one jitted pass
    (placed wherever the arrays are; numpy arrays go to the default device)."""
    global _FINGERPRINT_FN
    import jax
    if _FINGERPRINT_FN is None:
        _FINGERPRINT_FN = jax.jit(lambda tree: jax.tree.map(_leaf_fingerprint, tree))
    names = sorted(arrays)
    out = jax.device_get(_FINGERPRINT_FN([arrays[n] for n in names]))
    return {n: (f"{int(fp[0]):08x}{int(fp[1]):08x}", str(np.dtype(arrays[n].dtype)), bool(fin))
            for n, (fp, fin) in zip(names, out)}


def json_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _checksums(arrays: dict, json_items: dict) -> dict:
    return {"version": 1,
            "arrays": {n: {"fingerprint": fp, "dtype": dt} for n, (fp, dt, _) in array_fingerprints(arrays).items()},
            "json": {n: json_digest(v) for n, v in json_items.items()}}


def _read_checksums(mngr, directory: str, step: int) -> dict | None:
    """The step's saved checksums; None for a step written before they existed."""
    if not os.path.isdir(os.path.join(directory, str(step), CHECKSUMS)):
        return None
    try:
        sums = mngr.restore(step, args=ocp.args.Composite(**{CHECKSUMS: ocp.args.JsonRestore()}))[CHECKSUMS]
    except Exception as e:
        raise _unreadable(directory, step, f"{CHECKSUMS}/ is unreadable", e) from None
    if not isinstance(sums, dict) or sums.get("version") != 1:
        raise DamagedCheckpoint(directory, step, f"{CHECKSUMS}/ is unreadable (no version 1 record)")
    return sums


def verify(directory: str, step: int, sums: dict | None, arrays: dict, json_items: dict) -> None:
    """DamagedCheckpoint unless `arrays` ({"params/...": array}) and `json_items` are what was
    saved, and every float array is finite.  Arrays restored in another dtype are compared
    after casting back to the saved one (exact for the up-casts a restore does)."""
    saved = (sums or {}).get("arrays", {})
    if sums is not None:
        missing = sorted(set(arrays) - set(saved))
        if missing:
            raise DamagedCheckpoint(directory, step, f"{missing[0]} has no saved checksum")
        for name, obj in json_items.items():
            if sums["json"].get(name) != json_digest(obj):
                raise DamagedCheckpoint(directory, step, f"{name}/ does not match the checksum saved with it")
    if not arrays:          # JSON items only (read_config, the first half of a training restore)
        return
    as_saved = {n: (a.astype(saved[n]["dtype"]) if n in saved and str(np.dtype(a.dtype)) != saved[n]["dtype"]
                    else a) for n, a in arrays.items()}
    for name, (fp, _, finite) in sorted(array_fingerprints(as_saved).items()):
        if name in saved and fp != saved[name]["fingerprint"]:
            raise DamagedCheckpoint(directory, step, f"{name} does not match the checksum saved with it")
        if not finite:
            raise DamagedCheckpoint(directory, step, f"{name} holds NaN or Inf")


def _short(e: BaseException, limit: int = 240) -> str:
    """One line of at most `limit` characters (TensorStore errors can embed a 500-line spec)."""
    while e.__cause__ is not None:                  # the TensorStore error names the array and file
        e = e.__cause__
    msg = " ".join(f"{type(e).__name__}: {e}".split()).split(" See full TensorStore details")[0]
    return msg if len(msg) <= limit else msg[:limit] + " ..."


def _quiet_closed_loop_reports(hook_args) -> None:
    """After a failed Orbax restore, TensorStore still completes the reads in flight by
    calling into the restore's event loop, which is closed by then, and Orbax's pending read
    coroutines are dropped half-way; Python reports each as "unraisable", some with a
    500-line TensorStore spec.  They say nothing beyond the one-line error we raise."""
    exc, code = hook_args.exc_value, getattr(hook_args.object, "cr_code", None)
    if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
        return
    if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
        return
    _PREVIOUS_UNRAISABLE_HOOK(hook_args)


_PREVIOUS_UNRAISABLE_HOOK = sys.unraisablehook
sys.unraisablehook = _quiet_closed_loop_reports


# ----------------------------------------------------------------------------
# Params-only checkpoints (convert, best/<metric>/) and reading any step
# ----------------------------------------------------------------------------

def _save_params(mngr, step: int, params: Any, config: dict, force: bool = False) -> None:
    mngr.save(step, force=force, args=ocp.args.Composite(**{
        "params": ocp.args.StandardSave(params),
        "config": ocp.args.JsonSave(config),
        CHECKSUMS: ocp.args.JsonSave(_checksums(_flat(params, "params"), {"config": config}))}))
    mngr.wait_until_finished()


def save_params_checkpoint(directory: str, params: Any, config: dict, step: int = 0) -> str:
    """Write a params-only checkpoint (what `convert` produces). Returns the step dir."""
    with _manager(directory) as mngr:
        _save_params(mngr, step, params, config)
    return os.path.join(os.path.abspath(directory), str(step))


def read_config(directory: str, step: int | None = None) -> dict:
    step = _require_step(directory, step)
    with _manager(directory) as mngr:
        try:
            config = dict(mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
        except Exception as e:  # corrupt or foreign directory
            raise UserError(f"cannot read config of checkpoint {directory} step {step}: {_short(e)}") from None
        verify(directory, step, _read_checksums(mngr, directory, step), {}, {"config": config})
    return config


def restore_params(directory: str, step: int | None = None, abstract_params: Any = None) -> Any:
    """Restore and verify params.  `abstract_params` is a tree of jax.ShapeDtypeStruct (with
    shardings) to restore onto a mesh; None restores host numpy arrays."""
    import jax
    step = _require_step(directory, step)
    with _manager(directory) as mngr:
        sums = _read_checksums(mngr, directory, step)
        try:
            if abstract_params is None:
                meta = mngr.item_metadata(step)["params"]
                target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype) if hasattr(m, "shape") else m, meta)
            else:
                target = abstract_params
            params = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
        except Exception as e:
            raise _unreadable(directory, step, "params/ cannot be read", e) from None
    verify(directory, step, sums, _flat(params, "params"), {})
    return jax.tree.map(np.asarray, params) if abstract_params is None else params


def save_best_params(directory: str, params: Any, config: dict, step: int) -> str:
    """Params-only checkpoint of `step` in `directory`, replacing the previous one there
    (the old step is deleted only after the new one is complete)."""
    with _manager(directory, max_to_keep=1) as mngr:
        _save_params(mngr, step, params, config, force=True)
    return os.path.join(os.path.abspath(directory), str(step))


# ----------------------------------------------------------------------------
# Training checkpoints (params + opt_state + data_iter + config)
# ----------------------------------------------------------------------------

TRAIN_ITEMS = ("params", "opt_state", "data_iter", "config")


class SaveFailed(UserError):
    """A training checkpoint that could not be written (disk full, permissions, ...).  Orbax
    renames a step into place only when complete, so the steps before it are intact."""


class _QuietFailedSaves(logging.Filter):
    """Orbax logs a failed background save from each of its threads, and asyncio each of its write
    futures, traceback and all (hundreds of lines); the same error is raised in the main thread,
    where TrainCheckpointer makes it one line."""

    def filter(self, record):
        if not (record.exc_info and record.exc_info[1] is not None and record.levelno >= logging.ERROR):
            return True
        files, tb = [record.pathname], record.exc_info[2]
        while tb is not None:
            files.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        return not (any(f"{os.sep}orbax{os.sep}" in f for f in files)  # a write future without a traceback:
                    or ".orbax-checkpoint-tmp" in str(record.exc_info[1]))  # the path of the step being written


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
            item_handlers=_item_handlers(TRAIN_ITEMS + (CHECKSUMS,)))
        self._pending = None  # the step of the last save started (it may still be writing)
        for logger in (logging.getLogger("absl"), logging.getLogger("asyncio")):
            if not any(isinstance(f, _QuietFailedSaves) for f in logger.filters):
                logger.addFilter(_QuietFailedSaves())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def _failed(self, e: BaseException, step) -> SaveFailed:
        why = peer_failure(e)
        if why is not None:  # a save barrier that failed because another process died: not a failed save
            peer_lost(why)
        listed = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        done = sorted(int(d) for d in listed if d.isdigit())  # complete steps only (Orbax renames when done)
        why = "disk full" if "RESOURCE_EXHAUSTED" in str(e) + str(e.__cause__) else "write error"
        last = f"step {done[-1]}, is intact" if done else "none (no complete checkpoint yet)"
        return SaveFailed(f"saving checkpoint step {step} to {self.directory} failed ({why}: {_short(e, 160)}); "
                          f"the last complete checkpoint, {last}: fix the cause and rerun the same command "
                          "to resume from it")

    def save(self, step: int, state: dict, data_iter: dict | None, config: dict, *, force: bool = True) -> bool:
        data_iter = data_iter if data_iter is not None else {}
        arrays = {**_flat(state["params"], "params"), **_flat(state["opt_state"], "opt_state")}
        sums = _checksums(arrays, {"data_iter": data_iter, "config": config})
        try:  # Orbax first waits for the previous save: its failure surfaces here
            saved = self._mngr.save(int(step), force=force, args=ocp.args.Composite(**{
                "params": ocp.args.StandardSave(state["params"]),
                "opt_state": ocp.args.StandardSave(state["opt_state"]),
                "data_iter": ocp.args.JsonSave(data_iter),
                "config": ocp.args.JsonSave(config),
                CHECKSUMS: ocp.args.JsonSave(sums)}))
        except Exception as e:
            raise self._failed(e, self._pending if self._pending is not None else step) from None
        self._pending = int(step)
        return saved

    def restore(self, step: int, abstract_state: dict, model: dict | None = None) -> tuple[dict, dict, dict]:
        """(state, data_iter state, config) of `step`, verified; `abstract_state` as in the train
        state ({"params", "opt_state", "step"}, ShapeDtypeStructs with shardings).  With `model`,
        a step of a different model (or optimizer) is a UserError; damage is DamagedCheckpoint."""
        import jax
        import jax.numpy as jnp
        step, mngr = int(step), self._mngr
        sums = _read_checksums(mngr, self.directory, step)
        try:
            small = mngr.restore(step, args=ocp.args.Composite(
                data_iter=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
            meta = mngr.item_metadata(step)
            saved_shapes = {k: sorted(tuple(m.shape) for m in jax.tree.leaves(meta[k]))
                            for k in ("params", "opt_state")}
        except Exception as e:
            raise _unreadable(self.directory, step, "its config, data or array metadata cannot be read", e) from None
        config, data_iter = dict(small["config"] or {}), dict(small["data_iter"] or {})
        verify(self.directory, step, sums, {}, {"config": config, "data_iter": data_iter})
        if model is not None and not same_model(config.get("model"), model):
            raise UserError(f"{self.directory} holds checkpoints of a different model (step {step}); "
                            "use a new --workdir or the same model config")
        for k in ("params", "opt_state"):
            if saved_shapes[k] != sorted(tuple(a.shape) for a in jax.tree.leaves(abstract_state[k])):
                raise UserError(f"cannot restore {self.directory} step {step}: its {k} has different arrays "
                                f"(a different {'model' if k == 'params' else 'optimizer'}?)")
        try:
            out = mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state["params"]),
                opt_state=ocp.args.StandardRestore(abstract_state["opt_state"])))
        except Exception as e:
            raise _unreadable(self.directory, step, "params/ or opt_state/ cannot be read", e) from None
        verify(self.directory, step, sums,
               {**_flat(out["params"], "params"), **_flat(out["opt_state"], "opt_state")}, {})
        sds = abstract_state["step"]
        step_arr = jax.device_put(jnp.asarray(step, sds.dtype), getattr(sds, "sharding", None))
        state = {"params": out["params"], "opt_state": out["opt_state"], "step": step_arr}
        return state, data_iter, config

    def restore_latest(self, abstract_state: dict, model: dict | None = None, log=None):
        """(step, state, data_iter state, config) of the newest step that verifies, or None if
        there are no steps.  Each damaged step on the way is set aside (renamed
        ``<step>.corrupt``, never deleted) with one warning line through `log`."""
        log = log or (lambda msg: print(msg, file=sys.stderr))
        steps = sorted(self._mngr.all_steps(), reverse=True)
        for step in steps:
            try:
                return (step, *self.restore(step, abstract_state, model))
            except DamagedCheckpoint as e:
                log(f"warning: {e}; set aside as {os.path.basename(self.set_aside(step))}, "
                    "trying the step before it")
        if steps:
            raise UserError(f"every checkpoint in {self.directory} is damaged and was set aside as "
                            "<step>.corrupt; run again to start from scratch")
        return None

    def set_aside(self, step: int) -> str:
        """Rename step directory `step` to ``<step>.corrupt`` (``.corrupt2``, ... if taken), where
        neither Orbax nor the loaders look.  Process 0 renames; every process waits for it."""
        import jax
        src = os.path.join(self.directory, str(int(step)))
        dst, n = src + ".corrupt", 1
        while os.path.exists(dst):
            n += 1
            dst = f"{src}.corrupt{n}"
        if jax.process_index() == 0:
            os.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"t5x_lite set aside {step}")
        self._mngr.reload()
        return dst

    def wait(self) -> None:
        try:
            self._mngr.wait_until_finished()
        except Exception as e:
            raise self._failed(e, self._pending) from None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._mngr.close()
