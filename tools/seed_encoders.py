"""seed_encoders: which pretraining objective gives the best classifier for the compute?

BERT (MLM + next-sentence prediction), BERT (MLM only), ELECTRA (replaced-token detection against
a 1/4-width MLM generator) and the T5 encoder-decoder (span corruption) are each pretrained with
the SAME number of training FLOPs on the same shipped English corpus, then fine-tuned and
evaluated on the local classification tasks.  Two no-pretraining controls (the encoder and the
encoder-decoder trained from scratch on each task) say whether pretraining mattered at all.

Every model has the same width and depth (d_model 128, 2 layers per stack, 2 heads of 64, d_ff 512,
pretraining sequences of 64 tokens, batch 32); each family keeps its own block (BERT/ELECTRA: plain exact-GELU
MLP, learned positions, token types; T5: gated GELU, relative positions, a decoder).  The FLOP
budget is `--bert-steps` steps of BERT (MLM+NSP); every other model gets
floor(budget / its own FLOPs per step) steps (t5x_lite.models.flops_per_step; ELECTRA counts its
generator and its discriminator).  Fine-tuning uses each family's committed preset
(encoders: configs/bert.py:finetune_TASK, AdamW; T5: configs/finetune.py, Adafactor, text-to-text)
with the number of steps, the eval cadence, the eval size and the learning rate (ENCODER_LR, T5_LR:
the rates this project uses for its tiny models, chosen once on the baseline cell) set here, the
same for every cell of a family; the score of a cell on a task is its best validation score over the evals
(the paper keeps the best validation checkpoint per task).  Nothing here was tuned per cell.

    python tools/seed_encoders.py --workdir /tmp/seed_encoders --output docs/studies/seed_encoders_cpu
    python tools/seed_encoders.py --plan        # print the cells, steps and FLOPs, run nothing

Re-running skips finished stages (each writes DONE.json), so an interrupted study continues.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("local_wordnet_lexname", "local_debian_section")
SHAPE = dict(d_model=128, num_heads=2, d_kv=64, d_ff=512, num_encoder_layers=2, num_decoder_layers=2)
LENGTHS = dict(inputs=64, targets=16)    # pretraining lengths; T5's span-corruption targets for 64 inputs fit in 16
BATCH = 32

# cell -> (family, pretraining config, overrides); family "encoder" fine-tunes a classifier head.
CELLS = {
    "bert_mlm_nsp": ("encoder", "configs/bert.py:tiny", {"data.feature_lengths.inputs": LENGTHS["inputs"]}),
    "bert_mlm_only": ("encoder", "configs/bert.py:tiny_mlm_only", {"data.feature_lengths.inputs": LENGTHS["inputs"]}),
    "electra": ("encoder", "configs/electra.py:tiny",
                {"model.embedding_size": 0, "model.max_position_embeddings": 128,
                 "data.feature_lengths.inputs": LENGTHS["inputs"], "data.batch_size": BATCH}),
    "t5_span_corruption": ("t5", None, {"data.batch_size": BATCH}),
}
CONTROLS = {"encoder_no_pretraining": "encoder", "t5_no_pretraining": "t5"}
# Fine-tuning rates for models this small, the same for every cell of a family: the presets' 1e-4
# (encoders, BERT-base's) underfits a 1.5M-param encoder in a few hundred steps (the baseline cell,
# BERT MLM+NSP, reached 19.3% on lexname against a 11.7% majority class); 1e-3 is the rate the encoder
# line's own tiny fine-tune used, with warm-up over the first 10% of steps as the preset's; 3e-3 is the
# rate docs/evaluation.md and tools/e2e_finetune.sh use for the tiny T5 (the preset's 1e-3 is T5-base's).
ENCODER_LR, T5_LR = 1e-3, 3e-3


def _shape_overrides(family: str) -> dict:
    out = {f"model.{k}": v for k, v in SHAPE.items()}
    if family == "encoder":
        out["model.max_position_embeddings"] = 128
    return out


def _load_config(spec: str | None, overrides: dict):
    from t5x_lite.train.default_config import get_config as default_config
    if spec is None:
        c = default_config()
    else:
        path, _, name = spec.partition(":")
        mod_spec = importlib.util.spec_from_file_location(f"_cfg_{abs(hash(path))}", os.path.join(REPO, path))
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        c = mod.get_config(name) if name else mod.get_config()
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def flops_per_step(spec, overrides) -> float:
    from t5x_lite.models import flops_per_step as fps
    from t5x_lite.train import config as config_lib
    c = _load_config(spec, overrides)
    model_cfg, _ = config_lib.resolve(c)
    lengths = c.data.feature_lengths
    return fps(model_cfg, int(c.data.batch_size), int(lengths["inputs"]), int(lengths.get("targets", 0) or 0))


def plan(bert_steps: int) -> dict:
    cells = {}
    for name, (family, spec, extra) in CELLS.items():
        overrides = {**_shape_overrides(family), **extra}
        if family == "t5":
            overrides.update({"data.feature_lengths.inputs": LENGTHS["inputs"],
                              "data.feature_lengths.targets": LENGTHS["targets"]})
        cells[name] = {"family": family, "config": spec, "overrides": overrides,
                       "flops_per_step": flops_per_step(spec, overrides)}
    budget = bert_steps * cells["bert_mlm_nsp"]["flops_per_step"]
    for cell in cells.values():
        cell["steps"] = int(math.floor(budget / cell["flops_per_step"]))
        cell["flops"] = cell["steps"] * cell["flops_per_step"]
    return {"budget_flops": budget, "cells": cells}


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "(" + "".join(f"{v!r}," for v in value) + ")"
    return repr(value)


def _run(stage_dir: str, args: list[str], log) -> float:
    """One `t5x-lite train` stage; skipped when its DONE.json exists.  -> wall seconds."""
    done = os.path.join(stage_dir, "DONE.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)["wall_s"]
    cmd = [sys.executable, "-m", "t5x_lite", "train", "--workdir", stage_dir, "--no-progress"] + args
    log(f"$ {' '.join(cmd[2:])}")
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    with open(done, "w") as f:
        json.dump({"wall_s": wall, "command": cmd[2:]}, f)
    return wall


def _best(stage_dir: str, task: str) -> dict:
    """Best validation score per metric of `task` over the stage's evals (metrics.jsonl)."""
    best = {}
    with open(os.path.join(stage_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            for key, value in row.items():
                prefix = f"eval/{task}/"
                if key.startswith(prefix) and isinstance(value, (int, float)):
                    metric = key[len(prefix):]
                    if metric not in best or value > best[metric]["value"]:
                        best[metric] = {"value": value, "step": row["step"]}
    return best


def finetune_args(family: str, task: str, init: str | None, steps: int, eval_every: int,
                  eval_examples: int) -> list[str]:
    if family == "encoder":
        args = ["--config", os.path.join(REPO, f"configs/bert.py:finetune_{task}")]
        shape = {} if init else _shape_overrides("encoder")
        if not init:   # from scratch: BERT-tiny's block, without its pretraining heads
            shape.update({"model.position_embedding": "learned", "model.type_vocab_size": 2,
                          "model.mlp_activations": ("gelu_exact",), "model.tie_embeddings": True})
    else:
        args = ["--config", os.path.join(REPO, "configs/finetune.py:local_wordnet_lexname")]
        inputs = 128 if task == "local_debian_section" else 64
        shape = {"data.task": task, "evaluation.tasks": (task,), "data.feature_lengths.inputs": inputs}
        if not init:
            shape.update(_shape_overrides("t5"))
    if init:
        args.append(f"--config.init_checkpoint={init}")
    if family == "encoder":
        shape.update({"optimizer.learning_rate": ENCODER_LR, "optimizer.warmup_steps": max(steps // 10, 1)})
    else:
        shape["optimizer.learning_rate"] = T5_LR
    settings = {**shape, "train.num_steps": steps, "train.eval_every": eval_every,
                "train.checkpoint_every": eval_every, "evaluation.num_examples": eval_examples,
                "evaluation.batch_size": 64}
    return args + [f"--config.{k}={_fmt(v)}" for k, v in settings.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/seed_encoders")
    p.add_argument("--output", default="", help="write results.json, README.md and the plot here")
    p.add_argument("--bert-steps", type=int, default=600, help="the FLOP budget, in steps of BERT (MLM+NSP)")
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=150)
    p.add_argument("--eval-examples", type=int, default=512)
    p.add_argument("--plan", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    t_start = time.time()

    def log(msg):
        print(f"[seed_encoders {time.time() - t_start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    the_plan = plan(args.bert_steps)
    for name, cell in the_plan["cells"].items():
        log(f"{name:20s} {cell['steps']:6d} steps x {cell['flops_per_step']:.3e} FLOPs = {cell['flops']:.3e}")
    if args.plan:
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    results = {"budget_flops": the_plan["budget_flops"],
               "settings": {**vars(args), "encoder_learning_rate": ENCODER_LR, "t5_learning_rate": T5_LR},
               "cells": {}}
    for name, cell in the_plan["cells"].items():
        pre = os.path.join(args.workdir, name, "pretrain")
        pre_args = (["--config", os.path.join(REPO, cell["config"])] if cell["config"] else [])
        settings = {**cell["overrides"], "train.num_steps": cell["steps"], "train.eval_every": 0,
                    "train.checkpoint_every": 0}
        wall = _run(pre, pre_args + [f"--config.{k}={_fmt(v)}" for k, v in settings.items()], log)
        results["cells"][name] = {"family": cell["family"], "pretrain_steps": cell["steps"],
                                  "pretrain_flops": cell["flops"], "pretrain_wall_s": wall, "tasks": {}}
    for name, family in CONTROLS.items():
        results["cells"][name] = {"family": family, "pretrain_steps": 0, "pretrain_flops": 0.0,
                                  "pretrain_wall_s": 0.0, "tasks": {}}
    for name, entry in results["cells"].items():
        init = os.path.join(args.workdir, name, "pretrain") if entry["pretrain_steps"] else None
        for task in TASKS:
            ft = os.path.join(args.workdir, name, task)
            wall = _run(ft, finetune_args(entry["family"], task, init, args.finetune_steps, args.eval_every,
                                          args.eval_examples), log)
            entry["tasks"][task] = {"best": _best(ft, task), "wall_s": wall}
            log(f"{name} {task}: {json.dumps(entry['tasks'][task]['best'])}")
    results["wall_s"] = time.time() - t_start
    path = os.path.join(args.workdir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    log(f"wrote {path}")
    if args.output:
        from seed_encoders_report import write_report   # tools/seed_encoders_report.py
        for written in write_report(results, args.output):
            log(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
