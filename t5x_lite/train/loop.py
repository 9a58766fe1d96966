"""The training loop: resume, train, log, evaluate, checkpoint, handle faults.

    train(config, workdir) -> exit code

Exact resume: a checkpoint at step s holds the state after s updates and the
data iterators' state after s batches; dropout keys are fold_in(key, step).  A
run killed at any point and restarted with the same command therefore replays
bit-identical steps from the last complete checkpoint (CPU; on accelerators
as deterministic as XLA's kernels).

Faults:
  * SIGTERM (preemption): finish the current step, save, exit 0.
  * NaN/Inf loss or gradient norm: stop before the next save, exit 1 with one
    line naming the step; the last good checkpoint is left intact.
  * bad config: UserError -> one line, exit 2 (t5x_lite.cli).

Workdir layout: checkpoints/ (Orbax, see checkpoints.py), metrics.jsonl,
TensorBoard events, best_checkpoints.json and best/<metric>/ (params-only
checkpoints of the best step per evaluator metric).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from t5x_lite import partitioning
from t5x_lite.errors import UserError
from t5x_lite import checkpoints
from t5x_lite.train import metrics as metrics_lib, optimizers, step as step_lib
from t5x_lite.train import config as config_lib

NAN_EXIT_CODE = 1
# Fault-injection for tests/test_train_faults.py: SIGKILL this process right after the
# (async) save of step N has started, i.e. while the checkpoint is being written.
_KILL_DURING_SAVE_ENV = "T5X_LITE_TEST_KILL_DURING_SAVE"

Evaluator = Callable[[int, Any], dict]


def _log(msg: str) -> None:
    """One line on stderr (through tqdm, so it does not collide with the progress bar)."""
    if jax.process_index() == 0:
        from tqdm import tqdm
        tqdm.write(f"[t5x-lite train] {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------
# Config resolution
# ----------------------------------------------------------------------------

def resolve(config) -> tuple[Any, dict]:
    """(ModelConfig, resolved config dict).  model.vocab_size 0 -> the vocabulary's size
    rounded up to a multiple of 128 (T5X pads 32100 -> 32128 the same way)."""
    config_lib.validate(config)
    vocab_spec = config.get("vocabulary") or None
    vocab_size = fingerprint = None
    if vocab_spec:
        from t5x_lite.data import get_vocabulary, vocabulary_fingerprint
        vocab = get_vocabulary(vocab_spec)
        fingerprint = vocabulary_fingerprint(vocab)
        vocab_size = int(vocab.vocab_size)
        declared = int(config.model.vocab_size)
        if declared > 0 and declared < vocab_size:
            raise UserError(f"model.vocab_size={declared} is smaller than vocabulary {vocab_spec!r} "
                            f"({vocab_size} ids)")
        vocab_size = -(-vocab_size // 128) * 128
    elif int(config.model.vocab_size) <= 0:
        raise UserError("model.vocab_size is 0 (from vocabulary) but config.vocabulary is empty")
    model_cfg = config_lib.model_config(config, vocab_size)
    resolved = config_lib.to_dict(config)
    resolved["model"] = model_cfg.to_dict()
    resolved["vocabulary"] = vocab_spec
    resolved["vocabulary_fingerprint"] = fingerprint  # checked when score/eval/infer load the checkpoint
    return model_cfg, resolved


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------

def _gather_json(obj) -> list:
    """Every process's JSON-able `obj`, in process order (one element without multi-host)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils
    raw = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    lengths = multihost_utils.process_allgather(np.array([raw.size], np.int32))
    padded = np.zeros(int(np.max(lengths)), np.uint8)
    padded[:raw.size] = raw
    allp = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(allp[i][:int(lengths[i][0])]).decode()) for i in range(jax.process_count())]


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array([int(flag)], np.int32))))


def _higher_is_better(name: str) -> bool:
    return not re.search(r"loss|perplexity|error|ppl", name.lower())


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class _Preemption:
    """SIGTERM -> flag; the loop saves and exits 0 at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. called from a test thread)
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------

def train(config, workdir: str, *, bundle: step_lib.ModelBundle | None = None,
          pipeline_fn: Callable[..., Any] | None = None,
          evaluators: Sequence[Evaluator] | None = None, show_progress: bool = True) -> int:
    """Train `config` in `workdir`, resuming from its latest checkpoint.  Returns an exit code.

    `bundle`, `pipeline_fn` (make_pipeline's signature) and `evaluators` default to the
    real models, data pipeline and config.evaluation.tasks; tests may inject stand-ins."""
    model_cfg, resolved = resolve(config)
    tc = config.train
    num_steps = int(tc.num_steps)
    mesh = partitioning.make_mesh(config.mesh)
    partitioning.check_batch_divisible(int(config.data.batch_size), mesh, int(tc.num_microbatches))
    if pipeline_fn is None:
        from t5x_lite.data import make_pipeline as pipeline_fn
    bundle = bundle or step_lib.bundle_from_config(model_cfg)
    tx, schedule = optimizers.make_optimizer(config.optimizer, num_steps, grad_clip=float(tc.grad_clip))
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)
    shardings = partitioning.named(mesh, specs)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    ckpt = checkpoints.TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=int(tc.keep_checkpoints),
                                         async_save=bool(tc.get("async_checkpointing", True)))
    try:
        return _run(config, resolved, model_cfg, mesh, bundle, tx, schedule, abstract, shardings, ckpt,
                    pipeline_fn, evaluators, workdir, show_progress)
    finally:
        ckpt.close()


def _make_data(config, model_cfg, pipeline_fn, split: str, shuffle: bool, seed: int):
    return pipeline_fn(
        config.data.task, split=split, feature_lengths=dict(config.data.feature_lengths),
        architecture=model_cfg.architecture, batch_size=int(config.data.batch_size), seed=seed,
        shuffle=shuffle, pack=bool(config.data.pack), num_epochs=None,
        process_index=jax.process_index(), process_count=jax.process_count(),
        decoder_mask=model_cfg.decoder_mask)


def _run(config, resolved, model_cfg, mesh, bundle, tx, schedule, abstract, shardings, ckpt, pipeline_fn,
         evaluators, workdir, show_progress) -> int:
    tc = config.train
    num_steps = int(tc.num_steps)
    seed = int(config.seed)
    data_seed = seed if int(config.data.get("shuffle_seed", -1)) < 0 else int(config.data.shuffle_seed)

    # --- state: resume > init_checkpoint > scratch ---
    start = ckpt.latest_step()
    data_state = None
    if start is not None:
        state, data_item, saved = ckpt.restore(start, step_lib.abstract_with_shardings(abstract, shardings))
        if saved.get("model") != resolved["model"]:
            raise UserError(f"{workdir} holds checkpoints of a different model (step {start}); "
                            "use a new --workdir or the same model config")
        states = data_item.get("states") or []
        if data_item.get("process_count") == jax.process_count() and len(states) == jax.process_count():
            data_state = states[jax.process_index()]
        else:
            _log(f"warning: checkpoint data state is for {data_item.get('process_count')} processes; "
                 "the data pipeline restarts from the beginning")
        _log(f"resumed from {ckpt.directory} step {start}")
    else:
        start = 0
        state = step_lib.init_state(bundle, tx, shardings, seed)
        if config.get("init_checkpoint"):
            init_dir = config.init_checkpoint
            if os.path.isdir(os.path.join(init_dir, "checkpoints")):  # a training workdir
                init_dir = os.path.join(init_dir, "checkpoints")
            target = step_lib.abstract_with_shardings(abstract["params"], shardings["params"])
            state["params"] = checkpoints.restore_params(init_dir, abstract_params=target)
            _log(f"initialised params from {config.init_checkpoint}")
    if start >= num_steps:
        _log(f"already at step {start} >= train.num_steps={num_steps}; nothing to do")
        return 0

    # --- data ---
    train_it = _make_data(config, model_cfg, pipeline_fn, "train", bool(config.data.get("shuffle", True)),
                          data_seed)
    if data_state is not None:
        train_it.set_state(data_state)
    eval_every = int(tc.eval_every)
    eval_split = config.data.get("eval_split") or "validation"
    if eval_every:
        _make_data(config, model_cfg, pipeline_fn, eval_split, False, data_seed)  # fail fast on a bad split

    # --- steps ---
    train_step = step_lib.make_train_step(
        bundle, tx, schedule, mesh=mesh, state_shardings=shardings, z_loss=float(tc.z_loss),
        label_smoothing=float(tc.label_smoothing), loss_normalization=str(tc.loss_normalization),
        num_microbatches=int(tc.num_microbatches), base_key=jax.random.fold_in(jax.random.key(seed), 1))
    eval_step = step_lib.make_eval_step(bundle, mesh=mesh, params_shardings=shardings["params"],
                                        z_loss=float(tc.z_loss)) if eval_every else None
    if evaluators is None:
        evaluators = []
        if list(config.get("evaluation", {}).get("tasks", []) or []):
            from t5x_lite.evaluation.evaluator import make_train_evaluators
            evaluators = make_train_evaluators(config)

    writer = metrics_lib.MetricsWriter(workdir, enabled=jax.process_index() == 0)
    best_path = os.path.join(workdir, "best_checkpoints.json")
    best = json.load(open(best_path)) if os.path.exists(best_path) else {}
    batch_size = int(config.data.batch_size)
    tokens_per_step = batch_size * sum(int(v) for v in dict(config.data.feature_lengths).values())
    flops = metrics_lib.model_flops_per_step(model_cfg, batch_size, dict(config.data.feature_lengths))
    kill_at = int(os.environ.get(_KILL_DURING_SAVE_ENV, "-1"))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
    _log(f"model {model_cfg.architecture} {n_params / 1e6:.2f}M params; mesh {dict(mesh.shape)} on "
         f"{jax.device_count()} {jax.devices()[0].platform} devices, {jax.process_count()} process(es); "
         f"steps {start} -> {num_steps}")

    def data_iter_item():
        return {"process_count": jax.process_count(), "states": _gather_json(train_it.get_state())}

    def save(step: int):
        ckpt.save(step, state, data_iter_item(), resolved)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def run_eval(step: int) -> dict:
        out = {}
        it = _make_data(config, model_cfg, pipeline_fn, eval_split, False, data_seed)
        sums = None
        for _ in range(int(tc.eval_steps)):
            s = eval_step(state["params"], partitioning.global_batch(next(it), mesh))
            sums = s if sums is None else jax.tree.map(lambda a, b: a + b, sums, s)
        sums = jax.device_get(sums)
        denom = max(float(sums["weight_sum"]), 1.0)
        out["eval/loss"] = float(sums["loss_sum"]) / denom
        out["eval/accuracy"] = float(sums["correct_sum"]) / denom
        evaluator_keys = set()
        if evaluators:
            model = bundle.merge(state["params"])
            for ev in evaluators:
                for k, v in (ev(step, model) or {}).items():
                    key = k if k.startswith("eval/") else f"eval/{k}"
                    out[key] = float(v)
                    evaluator_keys.add(key)
        return out, evaluator_keys

    def track_best(step: int, results: dict, evaluator_keys: set):
        """Best value/step per metric in best_checkpoints.json; for evaluator metrics the
        params of the best step are also kept as a params-only checkpoint in best/<metric>/."""
        changed = False
        for name, value in results.items():
            if not isinstance(value, float) or not math.isfinite(value):
                continue
            old = best.get(name)
            if old is not None and not (value > old["value"] if _higher_is_better(name) else value < old["value"]):
                continue
            entry = {"value": value, "step": step, "higher_is_better": _higher_is_better(name)}
            if name in evaluator_keys:
                sub = os.path.join(workdir, "best", _sanitize(name.removeprefix("eval/")))
                checkpoints.save_best_params(sub, state["params"], resolved, step)
                entry["checkpoint"] = os.path.relpath(sub, workdir)
            best[name] = entry
            changed = True
        if changed and jax.process_index() == 0:
            tmp = best_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(best, f, indent=2, sort_keys=True)
            os.replace(tmp, best_path)

    pending: list[tuple[int, dict]] = []
    last_saved = start if ckpt.latest_step() == start else None
    t_last, steps_since = time.perf_counter(), 0
    progress = None
    if show_progress and jax.process_index() == 0:
        from tqdm import tqdm
        progress = tqdm(total=num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        mininterval=1.0, file=sys.stderr)

    def flush(step: int) -> bool:
        """Fetch pending metrics; log the log-steps; False if any step went non-finite."""
        nonlocal t_last, steps_since
        if not pending:
            return True
        fetched = jax.device_get([m for _, m in pending])
        now = time.perf_counter()
        step_time = (now - t_last) / max(steps_since, 1)
        t_last, steps_since = now, 0
        ok = True
        for (s, _), m in zip(pending, fetched):
            if not bool(m["finite"]):
                _log(f"error: non-finite loss/gradient at step {s} (loss={float(m['loss'])}, "
                     f"grad_norm={float(m['grad_norm'])}); stopping. Last good checkpoint: "
                     f"{ckpt.latest_step() if ckpt.latest_step() is not None else 'none'} in {ckpt.directory}")
                ok = False
                break
            if s % int(tc.log_every) == 0 or s == num_steps:
                row = {k: float(v) for k, v in m.items() if k != "finite"}
                row["step_time_s"] = step_time
                row["tokens_per_s"] = tokens_per_step / step_time if step_time > 0 else None
                row["mfu"] = metrics_lib.mfu(flops, step_time, model_cfg.dtype)
                writer.write(s, row)
                if progress is not None:
                    progress.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}",
                                         refresh=False)
        pending.clear()
        return ok

    code = 0
    step = start
    with _Preemption() as preempt:
        while step < num_steps:
            if jax.process_count() == 1:
                stop = preempt.requested
            else:  # all processes must agree on the step they stop at
                stop = step % int(tc.log_every) == 0 and _any_process(preempt.requested)
            if stop:
                if not flush(step):
                    code = NAN_EXIT_CODE
                    break
                if last_saved != step:
                    save(step)
                _log(f"SIGTERM: saved checkpoint at step {step}; exiting")
                break
            batch = partitioning.global_batch(next(train_it), mesh)
            state, m = train_step(state, batch)
            step += 1
            steps_since += 1
            pending.append((step, m))
            if progress is not None:
                progress.update(1)
            is_ckpt = (int(tc.checkpoint_every) and step % int(tc.checkpoint_every) == 0) or step == num_steps
            is_eval = eval_every and (step % eval_every == 0 or step == num_steps)
            if step % int(tc.log_every) == 0 or is_ckpt or is_eval or step == num_steps:
                if not flush(step):
                    code = NAN_EXIT_CODE
                    break
            if is_ckpt:
                save(step)
                last_saved = step
            if is_eval:
                results, evaluator_keys = run_eval(step)
                writer.write(step, results)
                track_best(step, results, evaluator_keys)
                t_last = time.perf_counter()  # don't count eval time as step time
            if step % int(tc.log_every) == 0:
                writer.flush()
    if progress is not None:
        progress.close()
    ckpt.wait()
    writer.close()
    if code == 0:
        _log(f"done at step {step}; checkpoints in {ckpt.directory}")
    return code
