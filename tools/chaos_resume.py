"""Chaos test of exact resume: SIGKILL training at random moments, restart it with the same
command each time, and check that what comes out is bit-identical to a run never interrupted.

    python tools/chaos_resume.py --trials 20 [--steps 24] [--kills 1-3] [--seed 0] [--json OUT]

One uninterrupted reference run first.  Then each trial trains a fresh workdir with the same
command, killed with SIGKILL 1 to 3 times before it is let finish.  Each kill is one of:

  random  the process is killed from outside after a random delay (anywhere: start-up, a
          step, logging, a save, an eval)
  save    inside the process, 0-20 ms after a checkpoint save has started, while its files
          are being written by Orbax's background thread
  eval    inside the process, in the middle of an evaluation (on its second eval batch)

The in-process kills come from this file's own wrapper (`_child`), which patches the trainer's
save and eval step before calling `t5x-lite train`; the trainer has no fault hooks.  A trial
passes when every step's logged loss (the last logged value of a step, since a resumed run
replays steps after the checkpoint) and the final params equal the reference's bit for bit, no
step was set aside as damaged and no temporary checkpoint directory is left.  The summary
counts kills by kind, kills that landed while a save was being written (an Orbax temporary
directory existed at the moment of the kill), resumes and mismatches.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.d_kv=16",
        "--config.model.d_ff=64", "--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
        "--config.model.dropout_rate=0.1", "--config.data.feature_lengths.inputs=32",
        "--config.data.feature_lengths.targets=8", "--config.data.batch_size=4", "--config.train.log_every=1",
        "--config.train.checkpoint_every=3", "--config.train.keep_checkpoints=4", "--config.train.eval_every=4",
        "--config.train.eval_steps=3"]


def _child(kind: str, arg: str, argv: list[str]) -> int:
    """Run `t5x-lite train argv` and SIGKILL this process at the planned in-process moment."""
    from t5x_lite import checkpoints
    from t5x_lite.cli import main
    from t5x_lite.train import step as step_lib

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "save":                      # arg = "<step>:<delay ms>"
        at, delay_ms = (int(x) for x in arg.split(":"))
        save = checkpoints.TrainCheckpointer.save

        def save_then_die(self, step, *args, **kwargs):
            out = save(self, step, *args, **kwargs)
            if int(step) >= at:
                threading.Timer(delay_ms / 1000, die).start()
            return out
        checkpoints.TrainCheckpointer.save = save_then_die
    elif kind == "eval":                    # arg = "<eval number>": die on that eval's 2nd batch
        target, calls = int(arg), {"n": 0}
        make = step_lib.make_eval_step

        def make_and_wrap(*args, **kwargs):
            fn = make(*args, **kwargs)

            def eval_step(*a, **k):
                calls["n"] += 1
                if calls["n"] >= (target - 1) * 3 + 2:        # train.eval_steps = 3 batches per eval
                    die()
                return fn(*a, **k)
            return eval_step
        step_lib.make_eval_step = make_and_wrap
    return main(["train", *argv])


def _cmd(workdir, steps, kind="none", arg="-"):
    return [sys.executable, os.path.abspath(__file__), "--child", kind, arg, "--workdir", workdir, *TINY,
            f"--config.train.num_steps={steps}"]


def _env():
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    cache = os.path.join(tempfile.gettempdir(), f"t5x_lite_chaos_jax_cache_{os.getuid()}")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return env


def _losses(workdir) -> dict:
    out = {}
    path = os.path.join(workdir, "metrics.jsonl")
    for line in open(path) if os.path.exists(path) else ():
        if line.endswith("\n"):
            row = json.loads(line)
            if row.get("loss") is not None:
                out[row["step"]] = row["loss"]
    return out


def _has_step(workdir) -> bool:
    """Does the next start resume (is there a complete step to resume from)?"""
    ck = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ck) and any(e.isdigit() for e in os.listdir(ck))


def _saving(workdir, since: float) -> bool:
    """Was a save being written: an Orbax temporary step directory made by this process?"""
    return any(os.path.getmtime(d) >= since
               for d in glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))


def _run(cmd, kill_after=None, workdir=None) -> tuple[int, bool]:
    """(exit code, whether a save was in flight when it died) of one process."""
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    during_save = False
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            during_save = _saving(workdir, started)
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"chaos_resume: the trainer failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    if proc.returncode == -signal.SIGKILL and kill_after is None:
        during_save = _saving(workdir, started)
    return proc.returncode, during_save


def _params(workdir, step):
    from t5x_lite import checkpoints
    return checkpoints.restore_params(os.path.join(workdir, "checkpoints"), step)


def _same_params(a, b) -> bool:
    import jax
    import numpy as np
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1], argv[2], argv[3:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--steps", type=int, default=24, help="train.num_steps of every run")
    p.add_argument("--kills", default="1-3", help="SIGKILLs per trial, a range LO-HI")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill plan")
    p.add_argument("--workdir", default=None, help="where the runs go (default: a temporary directory, removed)")
    p.add_argument("--json", default=None, help="also write the summary and every trial here")
    a = p.parse_args(argv)
    lo, hi = (int(x) for x in a.kills.split("-"))
    rng = random.Random(a.seed)
    base = a.workdir or tempfile.mkdtemp(prefix="chaos_resume_")
    os.makedirs(base, exist_ok=True)
    try:
        ref = os.path.join(base, "reference")
        shutil.rmtree(ref, ignore_errors=True)
        t0 = time.time()
        _run(_cmd(ref, a.steps))
        ref_seconds = time.time() - t0
        want_losses, want_params = _losses(ref), _params(ref, a.steps)
        if sorted(want_losses) != list(range(1, a.steps + 1)):
            raise SystemExit("chaos_resume: the reference run did not log every step")
        print(f"reference: {a.steps} steps in {ref_seconds:.1f} s", flush=True)

        trials, n_evals = [], a.steps // 4
        for t in range(a.trials):
            wd = os.path.join(base, f"trial_{t:03d}")
            shutil.rmtree(wd, ignore_errors=True)
            record = {"trial": t, "kills": [], "resumes": 0}
            for _ in range(rng.randint(lo, hi)):
                record["resumes"] += _has_step(wd)
                kind = rng.choice(["random", "save", "eval"])
                if kind == "random":
                    code, in_save = _run(_cmd(wd, a.steps), kill_after=rng.uniform(1.0, ref_seconds), workdir=wd)
                elif kind == "save":
                    arg = f"{rng.randint(1, a.steps)}:{rng.randint(0, 20)}"
                    code, in_save = _run(_cmd(wd, a.steps, "save", arg), workdir=wd)
                else:
                    code, in_save = _run(_cmd(wd, a.steps, "eval", str(rng.randint(1, n_evals))), workdir=wd)
                if code == 0:                # it finished before the planned kill
                    record["kills"].append({"kind": kind, "landed": False})
                    break
                record["kills"].append({"kind": kind, "landed": True, "during_save": in_save})
            else:
                record["resumes"] += _has_step(wd)
                _run(_cmd(wd, a.steps))
            got = _losses(wd)
            leftovers = glob.glob(os.path.join(wd, "checkpoints", "*tmp*")) + \
                glob.glob(os.path.join(wd, "checkpoints", "*.corrupt*"))
            record["losses_equal"] = got == want_losses
            record["params_equal"] = _same_params(_params(wd, a.steps), want_params)
            record["leftovers"] = [os.path.basename(x) for x in leftovers]
            record["ok"] = record["losses_equal"] and record["params_equal"] and not leftovers
            trials.append(record)
            kills = ", ".join(k["kind"] + ("" if k["landed"] else " (finished first)") +
                              (" mid-save" if k.get("during_save") else "") for k in record["kills"])
            print(f"trial {t + 1:>3}/{a.trials}: {'bit-exact' if record['ok'] else 'MISMATCH'}  "
                  f"resumes: {record['resumes']}  kills: {kills}", flush=True)
            if not a.workdir:
                shutil.rmtree(wd, ignore_errors=True)

        landed = [k for r in trials for k in r["kills"] if k["landed"]]
        summary = {
            "trials": len(trials), "bit_exact": sum(r["ok"] for r in trials),
            "mismatches": sum(not r["ok"] for r in trials),
            "kills": len(landed), "kills_by_kind": {k: sum(x["kind"] == k for x in landed)
                                                     for k in ("random", "save", "eval")},
            "kills_while_a_save_was_being_written": sum(bool(x.get("during_save")) for x in landed),
            "resumes": sum(r["resumes"] for r in trials), "steps_per_run": a.steps, "seed": a.seed}
        print(json.dumps(summary, indent=1))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"summary": summary, "trials": trials}, f, indent=1)
        return 0 if summary["mismatches"] == 0 else 1
    finally:
        if not a.workdir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
