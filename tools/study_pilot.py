"""Scale pilots: does pretraining beat no pretraining at a candidate cpu scale?

Runs a few cells of t5_table2 (default: the baseline seed 0 and the no_pretraining control) at a
variant of the cpu scale (`--set KEY=VALUE`, keys of t5x_lite.study.scales.CPU_SCALE) through the
study runner itself, then prints every column, the GLUE-like tasks and the wall time per cell.
Each variant needs its own --workdir (a study directory holds one scale); --pretrained-from DIR
reuses DIR's finished pretraining stages (symlinked), so fine-tuning settings can be compared on the
same pretrained checkpoints without pretraining again.

    python tools/study_pilot.py --workdir /tmp/p1 --set pretrain_steps=400 --set "columns=('GLUE',)"
    python tools/study_pilot.py --workdir /tmp/p2 --pretrained-from /tmp/p1 --set pretrain_steps=400 \\
        --set mixture=True --set finetune_learning_rate=0.001

Append a line per run to --log (JSONL) so the experiments that chose the scale are kept.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

from t5x_lite.study import scales
from t5x_lite.study.runner import run_study

DEFAULT_CELLS = ["encoder_decoder-denoising-s0", "encoder_decoder-no_pretraining-s0"]


def parse_set(items):
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CPU_SCALE value")
    p.add_argument("--cells", nargs="+", default=DEFAULT_CELLS)
    p.add_argument("--pretrained-from", default="", help="a pilot workdir whose pretraining stages to reuse")
    p.add_argument("--log", default="", help="append a JSON line with the settings and the scores")
    args = p.parse_args(argv)
    overrides = parse_set(args.set)
    scale = scales.cpu_scale(**overrides)
    if args.pretrained_from:
        for cell in args.cells:
            src = os.path.join(os.path.abspath(args.pretrained_from), "cells", cell, "pretrain")
            dst = os.path.join(args.workdir, "cells", cell, "pretrain")
            if os.path.isdir(src) and not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.symlink(src, dst)
    t0 = time.time()
    results = run_study("t5_table2", scale, args.workdir, cells=args.cells, seeds=3)
    wall = time.time() - t0
    rows = []
    for c in results["cells"]:
        name = f"{c['architecture']}-{c['objective']}-s{c['seed']}"
        if name not in args.cells:
            continue
        glue_tasks = {t: m for t, m in c["tasks"].items() if t in ("local_wordnet_lexname", "local_debian_section")}
        rows.append({"cell": name, "metrics": c["metrics"], "glue_tasks": glue_tasks, "wall_s": round(c["wall_s"]),
                     "pretrain_eval_loss": c["pretrain_eval_loss"]})
        print(f"{name:40s} " + " ".join(f"{k}={v:.2f}" if v is not None else f"{k}=-"
                                        for k, v in c["metrics"].items()) + f"  wall {c['wall_s']:.0f}s")
        print(f"{'':40s} {json.dumps(glue_tasks)}")
    print(f"pilot wall {wall:.0f}s")
    if args.log:
        with open(args.log, "a") as f:
            f.write(json.dumps({"workdir": args.workdir, "set": overrides, "cells": rows,
                                "wall_s": round(wall)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
