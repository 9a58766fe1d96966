"""What the training loop adds over the bare jitted train step (the goal for small models: <= 10%).

    python tools/bench_overhead.py                       # the default config (t5x_lite/train/default_config.py)
    python tools/bench_overhead.py --preset cpu_scale    # the study's cpu-scale pretraining (1.97M params, 32 x 128)
    python tools/bench_overhead.py --config configs/NAME.py[:ARG] --steps 100 --reps 5 --json out.json

In ONE process, with the repetitions INTERLEAVED (bare, loop, pipeline, bare, loop, ...; one untimed
round first, tools/benchlib.py `interleave`), it times
  bare      the train step the trainer builds (t5x_lite/train/step.py, built with the loop's own
            arguments) on ONE fixed device-resident batch taken from the config's real pipeline:
            --steps steps, then block_until_ready;
  loop      t5x_lite.train.loop.train(config, fresh workdir, show_progress=False) with the config's
            data pipeline, log_every, checkpoint_every (async as configured) and TensorBoard writer;
            eval is off (train.eval_every=0: eval time is not step time, and the loop's own clock
            excludes it too).  Compile must not count, so each loop rep is TWO runs, of K and of
            K + --steps steps (K = log_every), each timed from the end of its first step (the step
            function is wrapped to block once, after step 1) to train()'s return; the rep's time is
            the difference.  What both runs share cancels: compile, restore/init, pipeline start,
            the final checkpoint and its wait, the summary.  What remains is --steps steps of the
            real loop with their logging and their share of periodic checkpoints (exact when --steps
            is a multiple of checkpoint_every, the default).  JAX's persistent compilation cache (a
            temporary directory) makes every compile after the first a read;
  pipeline  (unless --no-pipeline) --steps batches from make_pipeline alone, as batches/s.

Headline: overhead = median(loop) / median(bare) - 1, then tokens/s of both, the CPU model and a
WARNING when other processes used the CPUs meanwhile (benchlib.LoadMonitor).  The loop's own logged
step_time_s (metrics.jsonl, first row dropped: it holds the compile) is printed as a cross-check.
Bad input: one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import benchlib  # noqa: E402  (tools/benchlib.py: cpu_model, interleave, LoadMonitor, --set, write_json)

GOAL = 0.10   # the loop may add at most 10% over the bare step


# ----------------------------------------------------------------------------- configs
def load_config(args):
    """The config to measure: --preset cpu_scale, --config PATH[:ARG], or the default config."""
    from t5x_lite.errors import UserError
    try:
        if args.preset:
            config, desc = cpu_scale_config(args.source)
        elif args.config:
            from t5x_lite.train.main import parse_args
            path = args.config if args.config.endswith(".py") or ":" in args.config else \
                os.path.join(REPO, "configs", args.config + ".py")
            config, _ = parse_args(["--config", path])
            desc = args.config
        else:
            from t5x_lite.train import default_config
            config, desc = default_config.get_config(), "default config (t5x_lite/train/default_config.py)"
    except UserError as e:
        benchlib.fail(str(e))
    except (OSError, ValueError, SyntaxError) as e:
        benchlib.fail(f"cannot load --config {args.config}: {type(e).__name__}: {e}")
    benchlib.apply_sets(config, benchlib.parse_sets(args.set))
    return config, desc


def cpu_scale_config(source: str):
    """The baseline cell's pretraining config at the study's cpu scale (as t5x_lite.study.runner
    builds it): source "local" (the local corpus), "builtin" (the shipped corpus) or "auto" (local
    when built)."""
    from t5x_lite.study import runner, scales, stages, studies
    from t5x_lite.tasks.local import local_corpus_spec
    if source == "auto":
        source = "local" if local_corpus_spec() is not None else "builtin"
    scale = scales.cpu_scale(source=source)
    plan = studies.cell_plan(studies.Cell(*studies.BASELINE_KEY), runner.base_model(scale), scale.recipe)
    config = stages.pretrain_config(plan, scale, runner.pretraining_task_name(plan, scale))
    return config, f"cpu_scale preset (study baseline {'/'.join(studies.BASELINE_KEY)}, {source} corpus)"


def tokens_per_step(config) -> int:
    return int(config.data.batch_size) * sum(int(v) for v in dict(config.data.feature_lengths).values())


# ----------------------------------------------------------------------------- the three measurements
def data_fn(config):
    """make_pipeline with the loop's arguments (t5x_lite/train/loop.py `data`)."""
    import jax
    from t5x_lite.data import classification, make_pipeline
    from t5x_lite.train import config as config_lib
    model_cfg, _ = config_lib.resolve(config)
    task, arch = classification.pipeline_task(config.data.task, model_cfg)
    seed = int(config.seed) if int(config.data.shuffle_seed) < 0 else int(config.data.shuffle_seed)
    return lambda: make_pipeline(task, split="train", feature_lengths=dict(config.data.feature_lengths),
                                 architecture=arch, batch_size=int(config.data.batch_size), seed=seed,
                                 shuffle=bool(config.data.shuffle), pack=bool(config.data.pack), num_epochs=None,
                                 process_index=jax.process_index(), process_count=jax.process_count())


class Bare:
    """The trainer's jitted step (built as loop.train builds it) on one fixed batch of the real pipeline."""

    def __init__(self, config, steps: int):
        import jax
        from t5x_lite import partitioning
        from t5x_lite.train import config as config_lib, optimizers, step as step_lib
        tc = config.train
        model_cfg, _ = config_lib.resolve(config)
        mesh = partitioning.make_mesh(config.mesh)
        partitioning.check_batch_divisible(int(config.data.batch_size), mesh, int(tc.num_microbatches))
        bundle = step_lib.bundle_from_config(model_cfg)
        tx, schedule = optimizers.make_optimizer(config.optimizer, int(tc.num_steps), grad_clip=float(tc.grad_clip))
        _, specs = step_lib.state_specs(bundle, tx, mesh)
        shardings = partitioning.named(mesh, specs)
        self.step = step_lib.make_train_step(
            bundle, tx, schedule, mesh=mesh, state_shardings=shardings, z_loss=float(tc.z_loss),
            label_smoothing=float(tc.label_smoothing), loss_normalization=str(tc.loss_normalization),
            num_microbatches=int(tc.num_microbatches),
            base_key=jax.random.fold_in(jax.random.key(int(config.seed)), 1))
        self.state = step_lib.init_state(bundle, tx, shardings, int(config.seed))
        it = data_fn(config)()
        self.batch = jax.block_until_ready(partitioning.global_batch(next(it), mesh))
        del it
        self.steps, self.jax = steps, jax
        self.state, m = self.step(self.state, self.batch)   # compile here, not in a timed rep
        jax.block_until_ready((self.state, m))

    def __call__(self) -> float:
        t = time.perf_counter()
        state, m = self.state, None
        for _ in range(self.steps):
            state, m = self.step(state, self.batch)
        self.jax.block_until_ready((state, m))
        self.state = state
        return time.perf_counter() - t


class Loop:
    """loop.train for K and K + steps steps; returns the difference of their post-first-step times."""

    def __init__(self, config, steps: int, short: int, root: str):
        self.config, self.steps, self.short, self.root = config, steps, short, root
        self.logged_step_s: list[float] = []   # the loop's own step_time_s rows (long runs)
        self.lines: list[str] = []             # the trainer's log lines, kept quiet
        self.runs: list[dict] = []             # each rep's two timed runs (warm-up round included)

    def _run(self, num_steps: int) -> float:
        from t5x_lite.train import loop, step as step_lib
        cfg = self.config.copy_and_resolve_references()
        with cfg.unlocked():
            cfg.train.num_steps, cfg.train.eval_every = num_steps, 0
        mark = {}
        real_make = step_lib.make_train_step

        def make_train_step(*a, **kw):
            real = real_make(*a, **kw)

            def first_blocks(state, batch):
                out = real(state, batch)
                if "t" not in mark:   # step 1 (compile included) ends here, on the device too
                    import jax
                    jax.block_until_ready(out)
                    mark["t"] = time.perf_counter()
                return out
            return first_blocks

        workdir = tempfile.mkdtemp(prefix="run_", dir=self.root)
        real_log = loop._log
        step_lib.make_train_step, loop._log = make_train_step, self.lines.append
        try:
            code = loop.train(cfg, workdir, show_progress=False)
            t_end = time.perf_counter()
        finally:
            step_lib.make_train_step, loop._log = real_make, real_log
        if code != 0 or "t" not in mark:
            benchlib.fail(f"the training loop exited with code {code}: {' | '.join(self.lines[-3:])}")
        if num_steps > self.short:
            self.logged_step_s += logged_step_times(os.path.join(workdir, "metrics.jsonl"))
        shutil.rmtree(workdir, ignore_errors=True)
        return t_end - mark["t"]

    def __call__(self) -> float:
        long, short = self._run(self.short + self.steps), self._run(self.short)
        self.runs.append({"long_s": long, "short_s": short})
        return long - short


def logged_step_times(path: str) -> list[float]:
    """step_time_s of a run's metrics.jsonl rows, without the first (it holds the compile)."""
    try:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []
    return [r["step_time_s"] for r in rows if "step_time_s" in r][1:]


class PipelineOnly:
    """--steps batches from one long-lived make_pipeline iterator (as the loop holds one)."""

    def __init__(self, config, steps: int):
        self.it, self.steps = data_fn(config)(), steps
        next(self.it)

    def __call__(self) -> float:
        t = time.perf_counter()
        for _ in range(self.steps):
            next(self.it)
        return time.perf_counter() - t


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", help="configs/NAME.py[:ARG] or a path (default: the default config)")
    g.add_argument("--preset", choices=["cpu_scale"], help="the study's cpu-scale pretraining config")
    p.add_argument("--source", choices=["auto", "local", "builtin"], default="auto",
                   help="--preset cpu_scale: pretraining corpus (auto: local when built, else builtin)")
    p.add_argument("--steps", type=int, default=0,
                   help="timed steps per rep (default: train.checkpoint_every, else 100)")
    p.add_argument("--reps", type=int, default=3, help="interleaved timed repetitions (default 3)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds first (default 1; at least 1: the first loop run in a process also "
                        "pays one-time costs after its first step, e.g. Orbax's first save)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--no-pipeline", action="store_true", help="skip (c), the data pipeline alone")
    p.add_argument("--compile-cache", default="", help="JAX persistent compilation cache dir (default: a temp dir)")
    p.add_argument("--json", default="", help="write every figure to this JSON file")
    a = p.parse_args(argv)
    if a.reps < 1 or a.warmup < 1 or a.steps < 0:
        benchlib.fail("--reps and --warmup must be >= 1 and --steps >= 0")
    if a.source != "auto" and not a.preset:
        benchlib.fail("--source applies to --preset cpu_scale only")
    if a.json and not os.path.isdir(os.path.dirname(os.path.abspath(a.json))):
        benchlib.fail(f"--json {a.json}: its directory does not exist")

    config, desc = load_config(a)
    from t5x_lite.errors import UserError
    from t5x_lite.study.runner import enable_compile_cache
    import jax

    tc = config.train
    ckpt_every, log_every = int(tc.checkpoint_every), max(int(tc.log_every), 1)
    steps = a.steps or (ckpt_every if ckpt_every > 0 else 100)
    short = log_every
    notes = [f"loop rep = run({short} + {steps} steps) - run({short} steps), each timed from the end of its "
             "first step; eval off"]
    if ckpt_every > 0 and steps % ckpt_every:
        notes.append(f"WARNING: --steps {steps} is not a multiple of checkpoint_every={ckpt_every}: the loop reps "
                     "hold more or fewer checkpoints than their share")
    tmp = tempfile.mkdtemp(prefix="bench_overhead_")
    cache = enable_compile_cache(a.compile_cache or os.path.join(tmp, "jax_cache"))
    try:
        try:
            bare = Bare(config, steps)
            fns = {"bare": bare, "loop": Loop(config, steps, short, tmp)}
            if not a.no_pipeline:
                fns["pipeline"] = PipelineOnly(config, steps)
        except UserError as e:
            benchlib.fail(str(e))
        print(f"{desc}: {config.model.architecture}, batch {config.data.batch_size} x "
              f"{dict(config.data.feature_lengths)}, {config.model.dtype}, log_every {log_every}, "
              f"checkpoint_every {ckpt_every}; {steps} steps per rep, {a.reps} reps (+{a.warmup} warm-up round); "
              f"compile cache {cache}", flush=True)
        for _ in range(a.warmup):   # untimed: compiles (into the cache), page cache, allocator
            for fn in fns.values():
                fn()
        monitor = benchlib.LoadMonitor().start()
        result = benchlib.interleave(fns, a.reps, warmup=0)
        load = monitor.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(a, config, desc, steps, result, load, fns["loop"], notes)


def report(a, config, desc, steps, result, load, loop_fn, notes) -> int:
    import jax
    med, times = result["median"], result["times"]
    tps = tokens_per_step(config)
    overhead = med["loop"] / med["bare"] - 1
    paired = statistics.median(l / b - 1 for l, b in zip(times["loop"], times["bare"]))
    device = benchlib.device_description() if hasattr(benchlib, "device_description") else benchlib.cpu_model()
    verdict = "MET" if overhead <= GOAL else "NOT MET"
    print(f"HEADLINE loop overhead over the bare step: {100 * overhead:+.1f}%  (goal <= {100 * GOAL:.0f}%: {verdict}; "
          f"median of {a.reps} interleaved reps of {steps} steps; paired per-rep median {100 * paired:+.1f}%)")
    print(f"config: {desc}; {tps} tokens/step")
    print(f"device: {device}")
    if load.get("warning"):
        print(f"WARNING: {load['warning']}")
    elif load.get("other_cores") is not None:
        print(f"load: other processes used {load['other_cores']:.2f} of {load['cpus']} CPUs during the timed reps; clean")
    rows = {"bare": ("step", tps), "loop": ("step", tps), "pipeline": ("batch", tps)}
    for name, ts in times.items():
        unit, work = rows[name]
        per = med[name] / steps
        print(f"  {name:<9} {1e3 * per:8.2f} ms/{unit}  {steps * work / med[name]:10.0f} tokens/s"
              + (f"  {steps / med[name]:8.1f} batches/s" if name == "pipeline" else "")
              + f"   (reps: {', '.join(f'{t:.3f}' for t in ts)} s)")
    logged = loop_fn.logged_step_s
    if logged:
        print(f"  cross-check: the loop's own logged step_time_s, median {1e3 * statistics.median(logged):.2f} ms "
              f"over {len(logged)} log rows")
    for n in notes:
        print(f"  {n}")
    out = {"config": desc, "architecture": str(config.model.architecture), "batch_size": int(config.data.batch_size),
           "feature_lengths": dict(config.data.feature_lengths), "log_every": int(config.train.log_every),
           "checkpoint_every": int(config.train.checkpoint_every), "tokens_per_step": tps, "steps_per_rep": steps,
           "reps": a.reps, "overhead": overhead, "overhead_paired_median": paired, "goal": GOAL,
           "goal_met": overhead <= GOAL, "median_s": med, "times_s": times,
           "step_ms": {k: 1e3 * v / steps for k, v in med.items()},
           "tokens_per_s": {k: steps * tps / v for k, v in med.items()},
           "pipeline_batches_per_s": steps / med["pipeline"] if "pipeline" in med else None,
           "loop_logged_step_s": logged, "loop_runs_s": loop_fn.runs, "device": device, "cpu_model": benchlib.cpu_model(),
           "jax": jax.__version__, "load": load, "notes": notes}
    benchlib.write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
