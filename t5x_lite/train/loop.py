"""The training loop, top to bottom: restore or init, then one for loop whose
log, eval and checkpoint blocks are all visible.  Fork this file to change how
you train; everything it calls is a plain function.

    train(config, workdir) -> exit code

Exact resume: a checkpoint at step s holds the state after s updates and the
data iterators' state after s batches; dropout keys are fold_in(key, step).  A
run killed at any point and restarted with the same command therefore replays
bit-identical steps from the last complete checkpoint (CPU; on accelerators
as deterministic as XLA's kernels).

Faults:
  * SIGTERM (preemption): finish the current step, save, exit 0 (all processes of a multi-host
    run save the same step, whichever of them got the signal).
  * a dead peer (multi-host): the others exit with one line and code 6 within
    --heartbeat_timeout_seconds (t5x_lite/partitioning.py); rerun the same command to resume.
  * NaN/Inf loss or gradient norm: stop before the next save, exit 1 with one
    line naming the step; the last good checkpoint is left intact.
  * bad config: UserError -> one line, exit 2 (t5x_lite.cli).

Workdir layout: checkpoints/ (Orbax, see t5x_lite/checkpoints.py),
metrics.jsonl, TensorBoard events, best_checkpoints.json and best/<metric>/
(params-only checkpoints of the best step per evaluator metric).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

import t5x_lite.tasks  # noqa: F401  (registers the built-in tasks the config may name)
from t5x_lite import checkpoints, partitioning
from t5x_lite.data import classification, make_pipeline
from t5x_lite.errors import ensure_dir
from t5x_lite.evaluation.evaluator import make_train_evaluators
from t5x_lite.train import config as config_lib
from t5x_lite.train import metrics as metrics_lib
from t5x_lite.train import optimizers
from t5x_lite.train import finetune_init
from t5x_lite.train import step as step_lib

NAN_EXIT_CODE = 1

Evaluator = Callable[[int, Any], dict]


def train(config, workdir: str, *, evaluators: Sequence[Evaluator] | None = None,
          show_progress: bool = True, progress=None) -> int:
    """Train `config` in `workdir`, resuming from its latest checkpoint.  Returns an exit code.

    `evaluators` (callables (step, model) -> {name: value}) default to config.evaluation.tasks.
    `progress`: a tqdm bar to advance one unit per step instead of this run's own bar (a study's
    one bar over all its runs)."""
    model_cfg, resolved = config_lib.resolve(config)
    tc = config.train
    num_steps, log_every, eval_every = int(tc.num_steps), int(tc.log_every), int(tc.eval_every)
    ckpt_every, seed = int(tc.checkpoint_every), int(config.seed)
    data_seed = seed if int(config.data.shuffle_seed) < 0 else int(config.data.shuffle_seed)

    # --- mesh, model, optimizer and their shardings ---
    mesh = partitioning.make_mesh(config.mesh)
    partitioning.check_batch_divisible(int(config.data.batch_size), mesh, int(tc.num_microbatches))
    bundle = step_lib.bundle_from_config(model_cfg)
    tx, schedule = optimizers.make_optimizer(config.optimizer, num_steps, grad_clip=float(tc.grad_clip))
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)
    shardings = partitioning.named(mesh, specs)
    train_step = step_lib.make_train_step(
        bundle, tx, schedule, mesh=mesh, state_shardings=shardings, z_loss=float(tc.z_loss),
        label_smoothing=float(tc.label_smoothing), loss_normalization=str(tc.loss_normalization),
        num_microbatches=int(tc.num_microbatches), base_key=jax.random.fold_in(jax.random.key(seed), 1))
    eval_step = step_lib.make_eval_step(bundle, mesh=mesh, params_shardings=shardings["params"],
                                        z_loss=float(tc.z_loss))

    workdir = os.path.abspath(workdir)
    ensure_dir(os.path.join(workdir, "checkpoints"), "the checkpoint directory")   # one line if it cannot be
    ckpt = checkpoints.TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=int(tc.keep_checkpoints),
                                         async_save=bool(tc.async_checkpointing))
    try:
        # --- state: resume > init_checkpoint > scratch ---
        restored = _restore(ckpt, abstract, shardings, resolved)
        data_state = None
        if restored is not None:
            start, state, data_state = restored
        else:
            start = 0
            state = step_lib.init_state(bundle, tx, shardings, seed)
            if config.init_checkpoint:
                target = step_lib.abstract_with_shardings(abstract["params"], shardings["params"])
                state["params"], line = finetune_init.load_init_params(config.init_checkpoint, target,
                                                                       state["params"])
                _log(line)   # what was loaded, dropped (pretraining heads) and freshly initialised
        if start >= num_steps:
            _log(f"already at step {start} >= train.num_steps={num_steps}; nothing to do")
            return 0

        # --- data ---
        data_task, data_arch = classification.pipeline_task(config.data.task, model_cfg)   # classifiers: *_cls

        def data(split, shuffle):
            return make_pipeline(
                data_task, split=split, feature_lengths=dict(config.data.feature_lengths),
                architecture=data_arch, batch_size=int(config.data.batch_size), seed=data_seed,
                shuffle=shuffle, pack=bool(config.data.pack), num_epochs=None,
                process_index=jax.process_index(), process_count=jax.process_count())

        train_it = data("train", bool(config.data.shuffle))
        if data_state is not None:
            train_it.set_state(data_state)
        if eval_every:
            data(config.data.eval_split, False)  # fail fast on a bad split
        if evaluators is None:
            evaluators = make_train_evaluators(config)

        log = metrics_lib.TrainLogger(workdir, model_cfg, config.data, num_steps, start, log_every,
                                      show_progress=show_progress, progress=progress, config=resolved)
        best = metrics_lib.BestTracker(workdir, resolved)
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
        _log(f"model {model_cfg.architecture} {n_params / 1e6:.2f}M params; mesh {dict(mesh.shape)} on "
             f"{jax.device_count()} {jax.devices()[0].platform} devices, {jax.process_count()} process(es); "
             f"steps {start} -> {num_steps}")

        # --- the loop ---
        code, step, t_start = 0, start, time.time()
        # the logger is closed however the loop ends, so an error line starts below the progress bar
        with _Preemption() as preempt, partitioning.exit_if_peer_lost(), contextlib.closing(log):
            for step in range(start + 1, num_steps + 1):
                state, m = train_step(state, partitioning.global_batch(next(train_it), mesh))
                log.append(step, m)
                last = step == num_steps
                is_ckpt = (ckpt_every and step % ckpt_every == 0) or last
                is_eval = eval_every and (step % eval_every == 0 or last)
                stop = preempt.requested_at(step, log_every)

                if step % log_every == 0 or is_ckpt or is_eval or stop or last:  # log
                    bad = log.flush()
                    if bad is not None:
                        what = "loss/gradient" if not np.isfinite([bad[1], bad[2]]).all() else "params (after the update)"
                        _log(f"error: non-finite {what} at step {bad[0]} (loss={bad[1]}, "
                             f"grad_norm={bad[2]}); stopping. Last good checkpoint: "
                             f"{ckpt.latest_step() if ckpt.latest_step() is not None else 'none'} in {ckpt.directory}")
                        code = NAN_EXIT_CODE
                        break

                if is_ckpt or stop:  # checkpoint
                    ckpt.save(step, state, _data_iter_item(train_it), resolved)

                if is_eval:  # evaluate
                    results, evaluator_keys = _evaluate(step, state["params"], eval_step, data, config,
                                                        bundle, evaluators, mesh)
                    log.write(step, results)
                    best.update(step, results, evaluator_keys, state["params"])
                    log.restart_clock()  # eval time is not step time

                if stop:
                    _log(f"SIGTERM: saved checkpoint at step {step}; exiting")
                    break
        ckpt.wait()
        if code == 0:
            for line in metrics_lib.run_summary(workdir, ckpt.directory, start, step, time.time() - t_start,
                                                best.best, tuple(config.evaluation.tasks)):
                _log(line)
        return code
    finally:
        ckpt.close()


# ----------------------------------------------------------------------------
# The pieces the loop calls
# ----------------------------------------------------------------------------

def _restore(ckpt, abstract, shardings, resolved):
    """(step, state, this process's data-iterator state or None) of the newest training
    checkpoint that verifies (damaged ones are set aside with a warning), or None if none."""
    found = ckpt.restore_latest(step_lib.abstract_with_shardings(abstract, shardings), resolved["model"], log=_log)
    if found is None:
        return None
    step, state, data_item, _ = found
    states = data_item.get("states") or []
    data_state = None
    if data_item.get("process_count") == jax.process_count() and len(states) == jax.process_count():
        data_state = states[jax.process_index()]
    else:
        saved, n = data_item.get("process_count"), jax.process_count()
        held = f"the data iterator states of {saved} process(es)" if saved else "no data iterator state"
        # Each process reads a shuffle of its own 1/n of the documents, so a state cannot be resharded.
        _log(f"warning: step {step} holds {held} and this run has {n}, so the data pipeline starts again "
             f"at the first document of its {n}-process order: documents already trained on (steps 1-{step}) "
             "are read again in this epoch, none is skipped")
    _log(f"resumed from {ckpt.directory} step {step}")
    return step, state, data_state


def _evaluate(step, params, eval_step, data, config, bundle, evaluators, mesh) -> tuple[dict, set]:
    """Teacher-forced loss and token accuracy (percent) over train.eval_steps batches, then the
    decode-based evaluators."""
    it = data(config.data.eval_split, False)
    sums = None
    for _ in range(int(config.train.eval_steps)):
        s = eval_step(params, partitioning.global_batch(next(it), mesh))
        sums = s if sums is None else jax.tree.map(lambda a, b: a + b, sums, s)
    sums = jax.device_get(sums)
    denom = max(float(sums["weight_sum"]), 1.0)
    teacher_forced = {"loss": float(sums["loss_sum"]) / denom, "accuracy": float(sums["correct_sum"]) / denom}
    teacher_forced.update({name: float(num) / max(float(den), 1.0) for name, (num, den) in sums["aux"].items()})
    out = metrics_lib.as_logged(teacher_forced, prefix="eval/")   # eval/token_accuracy etc. in percent
    keys = set()
    model = bundle.merge(params)
    for ev in evaluators:
        with partitioning.activate(mesh):  # decode on the training mesh, under the same rules
            results = ev(step, model) or {}
        for k, v in results.items():
            key = k if k.startswith("eval/") else f"eval/{k}"
            out[key] = float(v)
            keys.add(key)
    return out, keys


def _data_iter_item(train_it) -> dict:
    """Every process's data-iterator state, in process order (saved with each checkpoint)."""
    return {"process_count": jax.process_count(), "states": _gather_json(train_it.get_state())}


def _gather_json(obj) -> list:
    if jax.process_count() == 1:
        return [obj]
    raw = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    lengths = multihost_utils.process_allgather(np.array([raw.size], np.int32))
    padded = np.zeros(int(np.max(lengths)), np.uint8)
    padded[:raw.size] = raw
    allp = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(allp[i][:int(lengths[i][0])]).decode()) for i in range(jax.process_count())]


def _log(msg: str) -> None:
    metrics_lib.log_line(f"[t5x-lite train] {msg}")


class _Preemption:
    """SIGTERM -> the loop saves and exits 0 at the end of the current step.

    Several processes must stop at the same step.  JAX's preemption sync manager (started by
    jax.distributed.initialize) catches SIGTERM on any process from JAX's start on and names one
    step for all (reached_preemption_sync_point, called every step); without it, a Python handler
    sets a flag and the processes OR their flags at log steps."""

    def __init__(self):
        self.requested = False
        self._old = None
        self._jax_sync = False

    def __enter__(self):
        if jax.process_count() > 1:
            from jax._src import distributed
            self._jax_sync = getattr(distributed.global_state, "preemption_sync_manager", None) is not None
            if self._jax_sync:
                return self  # a Python handler would replace JAX's
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. called from a test thread)
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def requested_at(self, step: int, log_every: int) -> bool:
        """Stop after `step`?  With several processes, all must agree on the step they stop at:
        JAX's sync point, else an OR of the flags (a collective) at log steps only."""
        if jax.process_count() == 1:
            return self.requested
        if self._jax_sync:
            return multihost_utils.reached_preemption_sync_point(step)
        if step % log_every:
            return False
        flags = multihost_utils.process_allgather(np.array([int(self.requested)], np.int32))
        return bool(np.any(flags))

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False
