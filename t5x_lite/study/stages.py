"""A study cell's stages: their directories, training configs, task variants, and what a finished
stage records.

    DIR/cells/<cell.name>/pretrain             a training workdir (not for the no_pretraining control)
    DIR/cells/<cell.name>/finetune/<task>      one per fine-tuning task, init_checkpoint = pretrain
    .../<stage>/DONE.json                      written atomically once the stage has finished

A stage's config is t5x_lite/train/default_config.py plus the scale's values; the model section
comes from the cell plan (pretraining, the control) or from the pretrained checkpoint (fine-tuning,
as configs/finetune.py).  Decoder-only cells fine-tune on the paper's "<inputs> target: <targets>"
format (evaluator.lm_format_task); a scale's max_train_examples (low-resource fine-tuning) trains
on that many rows of a fixed shuffle of each task's training split (validation is unchanged).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import ml_collections
import numpy as np

from t5x_lite import checkpoints, jsonio
from t5x_lite.data import Mixture, MixtureRegistry, TaskRegistry, get_task_or_mixture
from t5x_lite.evaluation.evaluator import lm_format_task
from t5x_lite.study.report import atomic_write
from t5x_lite.study.scales import FinetuneTask, Scale
from t5x_lite.study.studies import Cell, CellPlan
from t5x_lite.tasks import metrics as M
from t5x_lite.train import default_config
from t5x_lite.train.metrics import higher_is_better

DONE = "DONE.json"
PRETRAIN = "pretrain"


@dataclasses.dataclass(frozen=True)
class Stage:
    cell: Cell
    name: str                   # "pretrain" | "finetune/<task>"
    directory: str              # the stage's training workdir
    steps: int
    task: FinetuneTask | None = None

    @property
    def done_path(self) -> str:
        return os.path.join(self.directory, DONE)

    def is_done(self) -> bool:
        return os.path.isfile(self.done_path)

    def steps_done(self) -> int:
        """Steps finished on disk: all of them, or the latest checkpoint's."""
        if self.is_done():
            return self.steps
        return checkpoint_step(self)


def checkpoint_step(stage: Stage) -> int:
    """The stage's newest complete checkpoint step (0 without one): where its trainer stopped."""
    return checkpoints.latest_step(os.path.join(stage.directory, "checkpoints")) or 0


def cell_dir(workdir: str, cell: Cell) -> str:
    return os.path.join(workdir, "cells", cell.name)


def finetune_mixture(scale: Scale) -> str:
    """Name of the scale's fine-tuning mixture (registered once): every task at an equal rate, as
    examples-proportional mixing would let the biggest training set dominate."""
    name = f"study_{scale.name}_finetune_mixture"
    if name not in MixtureRegistry.names():
        MixtureRegistry.add(Mixture(name, [(t.task, 1.0) for t in scale.finetune.tasks()],
                                    description=f"the {scale.name} study scale's downstream tasks, equal rates"))
    return name


def finetune_stage(scale: Scale, ft: FinetuneTask) -> str:
    """The stage that scores task `ft`: its own run, or the mixture run."""
    return "finetune/mixture" if scale.finetune.mixture else f"finetune/{ft.task}"


def cell_stages(workdir: str, plan: CellPlan, scale: Scale) -> list[Stage]:
    root = cell_dir(workdir, plan.cell)
    out = [Stage(plan.cell, PRETRAIN, os.path.join(root, PRETRAIN), plan.pretrain_steps)] if plan.pretrain_steps else []
    runs = scale.finetune.runs(finetune_mixture(scale) if scale.finetune.mixture else "")
    for ft in runs:
        leaf = "mixture" if scale.finetune.mixture else ft.task
        out.append(Stage(plan.cell, f"finetune/{leaf}", os.path.join(root, "finetune", leaf),
                         scale.finetune.steps, ft))
    return out


# --------------------------------------------------------------------------------------------------
# Task variants: low-resource (capped training split) and the decoder-only format
# --------------------------------------------------------------------------------------------------
def task_variant(name: str, cap: int, lm_format: bool) -> tuple[str, dict[str, str]]:
    """(registered name, {evaluated task name: the original task it stands for}) of task or mixture
    `name` with its training split capped (cap > 0) and/or in the decoder-only format."""
    obj = get_task_or_mixture(name)
    if isinstance(obj, Mixture):
        parts = [(task_variant(t.name, cap, lm_format), rate) for t, rate in obj.tasks_and_rates]
        new = name + (f"_train{cap}" if cap else "") + ("_lm_format" if lm_format else "")
        if new != name and new not in MixtureRegistry.names():
            MixtureRegistry.add(Mixture(new, [(n, r) for (n, _), r in parts],
                                        description=f"{obj.description} ({new})"))
        return new, {k: v for (_, names), _ in parts for k, v in names.items()}
    new = name
    if cap:
        new = f"{name}_train{cap}"
        if new not in TaskRegistry.names():
            TaskRegistry.add(obj.with_max_examples(new, {"train": cap}))
    if lm_format:
        new = lm_format_task(new)
    return new, {new: name}


# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------
def _model_section(model) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in model.to_dict().items()}


def _base_config(plan: CellPlan, scale: Scale) -> ml_collections.ConfigDict:
    c = default_config.get_config()
    c.seed = plan.seed
    c.vocabulary = scale.vocabulary
    return c


def pretrain_config(plan: CellPlan, scale: Scale, task: str) -> ml_collections.ConfigDict:
    c = _base_config(plan, scale)
    c.model.update(_model_section(plan.model))
    c.data.task = task
    c.data.feature_lengths = ml_collections.ConfigDict(dict(plan.feature_lengths))
    c.data.batch_size = plan.batch_size
    for section, values in plan.hparams.items():
        c[section].update(dict(values))
    c.train.num_steps = plan.pretrain_steps
    c.train.eval_every = plan.pretrain_steps   # the held-out loss once, at the end
    return c


def finetune_config(plan: CellPlan, scale: Scale, stage: Stage, pretrain_dir: str | None) -> tuple:
    """(config, {evaluated task: original task}) of a fine-tuning stage."""
    ft, t = scale.finetune, stage.task
    c = _base_config(plan, scale)
    if pretrain_dir:   # the model section (and vocabulary) from the checkpoint; only dropout changes
        c.init_checkpoint = pretrain_dir
        c.model.dropout_rate = ft.dropout_rate
    else:              # the control: the same model, from scratch
        c.model.update(_model_section(dataclasses.replace(plan.model, dropout_rate=ft.dropout_rate)))
    task, names = task_variant(t.task, ft.max_train_examples, plan.model.architecture == "decoder_only")
    c.data.task = task
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=t.inputs_length, targets=t.targets_length))
    c.data.batch_size = ft.batch_size
    c.train.update(dict(num_steps=ft.steps, eval_every=ft.eval_every, checkpoint_every=ft.checkpoint_every or
                        ft.eval_every, log_every=min(50, ft.eval_every), eval_steps=2, keep_checkpoints=2))
    c.optimizer.update(dict(name="adafactor", schedule="constant", learning_rate=float(ft.learning_rate)))
    c.evaluation.update(dict(tasks=(task,), num_examples=ft.eval_examples, batch_size=ft.eval_batch_size,
                             max_decode_length=min(t.targets_length, ft.max_decode_length), decode="greedy"))
    return c, names


# --------------------------------------------------------------------------------------------------
# What a stage leaves on disk
# --------------------------------------------------------------------------------------------------
def read_jsonl(path: str) -> list[dict]:
    rows = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:   # a line cut by a kill
                    pass
    return rows


def _best_json(directory: str) -> dict:
    path = os.path.join(directory, "best_checkpoints.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _is_eval_step(step: int, config) -> bool:
    every = int(config.train.eval_every)
    return bool(every) and (step % every == 0 or step == int(config.train.num_steps))


def repair(stage: Stage, config) -> str | None:
    """Make a resumed stage evaluate exactly as an uninterrupted one.  The trainer saves step s's
    checkpoint before it evaluates step s, so a kill in between leaves a checkpoint whose
    evaluation never happened (or whose best-checkpoint update did not); resuming from it would skip
    that evaluation.  Then drop that checkpoint: the trainer replays from the previous one, bit for
    bit, and evaluates.  Returns a line saying so, or None."""
    ckpt_dir = os.path.join(stage.directory, "checkpoints")
    step = checkpoints.latest_step(ckpt_dir)
    if step is None or not _is_eval_step(step, config):
        return None
    rows = [r for r in read_jsonl(os.path.join(stage.directory, "metrics.jsonl"))
            if r.get("step") == step and "eval/loss" in r]
    best = _best_json(stage.directory)

    def recorded(key, value):
        entry = best.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return True
        if entry is None:
            return False
        return entry["value"] >= value if higher_is_better(key) else entry["value"] <= value

    if rows and all(recorded(k, v) for k, v in rows[-1].items() if k.startswith("eval/")):
        return None
    shutil.rmtree(os.path.join(ckpt_dir, str(step)))
    return f"{stage.cell.name} {stage.name}: step {step}'s evaluation was interrupted; replaying from the " \
           "previous checkpoint"


def pretrain_metrics(stage: Stage) -> dict:
    rows = read_jsonl(os.path.join(stage.directory, "metrics.jsonl"))
    last = lambda key: next((r[key] for r in reversed(rows) if key in r), None)  # noqa: E731
    return {"loss": last("loss"), "eval/loss": last("eval/loss")}


def finetune_metrics(stage: Stage, names: dict[str, str]) -> dict:
    """{"best": {eval key: {value, step, checkpoint}}, "tasks": {original task: {metric: best value}}}."""
    best = _best_json(stage.directory)
    tasks: dict[str, dict] = {}
    for key, entry in best.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[1] in names:
            tasks.setdefault(names[parts[1]], {})[parts[2]] = entry["value"]
    return {"best": best, "tasks": tasks}


def task_score(ft: FinetuneTask, tasks: dict[str, dict]) -> float | None:
    """One FinetuneTask's score from its stage's {original task: {metric: best value}}."""
    if ft.metric:
        values = [m[ft.metric] for m in tasks.values() if ft.metric in m]
        return float(np.mean(values)) if values else None
    if not tasks:
        return None
    average = M.superglue_average if ft.task.startswith("super_glue") else M.glue_average
    return average(tasks)


def column_task_score(scale: Scale, ft: FinetuneTask, done: dict[str, dict]) -> float | None:
    """Task `ft`'s score from the DONE.json records of its cell ({stage name: record})."""
    tasks = done[finetune_stage(scale, ft)].get("tasks", {})
    if scale.finetune.mixture:   # the mixture run scored every task: keep this one's
        tasks = {name: m for name, m in tasks.items() if name == ft.task}
    return task_score(ft, tasks)


def write_done(stage: Stage, record: dict) -> None:
    atomic_write(stage.done_path, jsonio.dumps(record, indent=1, sort_keys=True) + "\n")


def read_done(stage: Stage) -> dict:
    with open(stage.done_path) as f:
        return json.load(f)
