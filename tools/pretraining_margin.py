"""How much pretraining does the cpu scale need before it beats no pretraining?  The margin of the
t5_table2 baseline over the no_pretraining control, in baseline standard deviations, as a function
of pretraining steps.

One pretraining of the baseline (encoder-decoder, i.i.d. denoising, seed 0) runs through the study
runner to the first step count, is fine-tuned and scored with --seeds fine-tuning seeds, then
resumes (exactly: the study runner's own resume) to the next step count, and so on.  The control is
fine-tuned once (seed 0), as in a study.  Every setting is the cpu scale's (`--set KEY=VALUE` for
a variant), so the numbers are what a `t5x-lite study run t5_table2 --scale cpu` with that many
pretraining steps would give for these two rows, with one difference: the baseline's extra seeds
here re-use seed 0's pretraining (fine-tuning seeds only; a study pretrains each seed on its own),
so sigma here covers fine-tuning noise and the validation sample, not pretraining noise.

    python tools/pretraining_margin.py --workdir /tmp/budget --steps 1000 3000 6000 --log budget.jsonl

Prints one line per step count (tokens, pretraining eval loss, each seed's GLUE-like score, mean,
sigma, margin in sigma) and appends it as a JSON line to --log.  Re-running skips finished stages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

from t5x_lite.study import scales
from t5x_lite.study import stages as S
from t5x_lite.study.runner import run_study
from study_pilot import parse_set   # tools/: the same --set KEY=VALUE as the scale pilots

BASE = "encoder_decoder-denoising"
CONTROL = "encoder_decoder-no_pretraining-s0"


def _pretrain_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, "cells", f"{BASE}-s{seed}", S.PRETRAIN)


def _seed_from(workdir: str, seeds: int) -> None:
    """Seeds 1.. re-use seed 0's pretraining stage (a symlink)."""
    src = _pretrain_dir(workdir, 0)
    for s in range(1, seeds):
        dst = _pretrain_dir(workdir, s)
        if not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(src, dst)


def _continue_from(prev: str, workdir: str) -> None:
    """Start this step count's pretraining from the previous one's (copied, not marked done): the
    runner resumes it from its latest checkpoint to the new step count."""
    dst = _pretrain_dir(workdir, 0)
    if os.path.exists(dst):
        return
    shutil.copytree(_pretrain_dir(prev, 0), dst, symlinks=True)
    os.remove(os.path.join(dst, S.DONE))


def _glue(results: dict, cell: str) -> float | None:
    for c in results["cells"]:
        if f"{c['architecture']}-{c['objective']}-s{c['seed']}" == cell:
            return c["metrics"].get("GLUE")
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, nargs="+", required=True, help="pretraining step counts, ascending")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per step count (default 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CPU_SCALE value")
    p.add_argument("--log", default="", help="append one JSON line per step count")
    args = p.parse_args(argv)
    if sorted(args.steps) != args.steps or args.steps[0] < 1:
        sys.exit("pretraining_margin: --steps must be positive and ascending")
    overrides = parse_set(args.set)
    root = os.path.abspath(args.workdir)
    t0 = time.time()
    control = run_study("t5_table2", scales.cpu_scale(**overrides), os.path.join(root, "control"),
                        cells=[CONTROL], seeds=1, progress=False)
    c_score = _glue(control, CONTROL)
    if c_score is None:
        print(f"pretraining_margin: no GLUE score for the control {CONTROL} in {root}/control", file=sys.stderr)
        return 1
    print(f"control (no pretraining): GLUE {c_score:.2f}", flush=True)
    prev = None
    for steps in args.steps:
        scale = scales.cpu_scale(**{**overrides, "pretrain_steps": steps})
        wd = os.path.join(root, f"steps{steps}")
        os.makedirs(wd, exist_ok=True)
        if prev is not None:
            _continue_from(prev, wd)
        t1 = time.time()
        run_study("t5_table2", scale, wd, cells=[f"{BASE}-s0"], seeds=1, progress=False)
        _seed_from(wd, args.seeds)
        res = run_study("t5_table2", scale, wd, cells=[f"{BASE}-s{s}" for s in range(args.seeds)],
                        seeds=args.seeds, progress=False)
        scores = [_glue(res, f"{BASE}-s{s}") for s in range(args.seeds)]
        if None in scores:
            missing = [f"{BASE}-s{s}" for s, v in enumerate(scores) if v is None]
            print(f"pretraining_margin: no GLUE score for {', '.join(missing)} in {wd} (a stage without its "
                  "best checkpoint?); fix or delete that cell's stage and rerun", file=sys.stderr)
            return 1
        cells = {f"{c['architecture']}-{c['objective']}-s{c['seed']}": c for c in res["cells"]}
        mean = statistics.mean(scores)
        sd = statistics.stdev(scores) if len(scores) > 1 else float("nan")
        margin = (mean - c_score) / sd if sd and sd == sd else float("nan")
        row = {"pretrain_steps": steps, "pretrain_tokens": scale.recipe.pretrain_tokens,
               "pretrain_eval_loss": cells[f"{BASE}-s0"]["pretrain_eval_loss"],
               "baseline": scores, "mean": mean, "std": sd, "control": c_score, "margin_sigma": margin,
               "tasks": {s: {t: m.get("accuracy") for t, m in cells[f"{BASE}-s{s}"]["tasks"].items()}
                         for s in range(args.seeds)},
               "control_tasks": {t: m.get("accuracy") for t, m in control["cells"][0]["tasks"].items()},
               "set": overrides, "wall_s": round(time.time() - t1)}
        print(f"{steps} steps ({scale.recipe.pretrain_tokens:,} tokens, eval loss "
              f"{row['pretrain_eval_loss']:.3f}): baseline {', '.join(f'{s:.2f}' for s in scores)} -> "
              f"{mean:.2f} +- {sd:.2f}; control {c_score:.2f}; margin {mean - c_score:+.2f} ({margin:+.1f} sigma)"
              f"  [{row['wall_s']} s]", flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")
        prev = wd
    print(f"total wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
