"""`t5x-lite study run`: pretrain, fine-tune and evaluate every cell of a study, then the report.

    run_study(study_name, scale, workdir, cells=None, seeds=None, progress=True) -> results dict

Per cell, each stage trains in-process with t5x_lite.train.loop.train in its own directory
(stages.py): DIR/cells/<cell>/pretrain, then DIR/cells/<cell>/finetune/<task> from that
checkpoint (the no_pretraining control: from scratch), each keeping its best validation
score per metric (the trainer's best_checkpoints.json and best/<metric>/).  A stage is done
once its DONE.json exists; running the same command again skips done stages and resumes an
interrupted one from its latest checkpoint, exactly (the trainer's bit-identical resume, plus
stages.repair for a kill between a checkpoint and its evaluation).  A SIGKILL loses at most
the current stage's steps since its last checkpoint.  One tqdm bar counts every step of the
study, with an ETA.

Afterwards DIR/results.json holds every cell of the study whose stages are all done (see
report.py for its shape), and DIR/table.md, table.png and report.md are written from it.
DIR/study.json records the study and scale, so a directory is never mixed between them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from t5x_lite.data import TaskRegistry, get_vocabulary
from t5x_lite.data.tasks import pretraining_task, task_from_spec
from t5x_lite import jsonio
from t5x_lite.errors import UserError, ensure_dir
from t5x_lite.study import stages as S
from t5x_lite.tasks.builtin import c4_source
from t5x_lite.tasks.local import local_corpus_manifest, local_corpus_spec
from t5x_lite.study.report import atomic_write, write_report, write_results
from t5x_lite.study.scales import Scale, get_scale
from t5x_lite.study.studies import Study, budget, cell_plan, get_study
from t5x_lite.train import loop
from t5x_lite.train.metrics import log_line

STUDY_JSON = "study.json"


class StageFailed(UserError):
    """A stage's trainer exited non-zero (e.g. a NaN loss): one line naming the cell and stage."""


class StageInterrupted(UserError):
    """A stage's trainer exited 0 before its last step (SIGTERM: it saved a checkpoint and
    stopped).  The stage is not done and the study stops: nothing after it runs on a job that
    is being preempted, and running the command again resumes the stage from that checkpoint."""


def _log(msg: str) -> None:
    log_line(f"[t5x-lite study] {msg}")


def base_model(scale: Scale):
    """The scale's baseline encoder-decoder with vocab_size 0 filled in from its vocabulary
    (rounded up to a multiple of 128, as the trainer does)."""
    if int(scale.model.vocab_size) > 0:
        return scale.model
    size = int(get_vocabulary(scale.vocabulary).vocab_size)
    return dataclasses.replace(scale.model, vocab_size=-(-size // 128) * 128)


def select_cells(study: Study, names=None) -> list:
    if not names:
        return list(study.cells)
    by_name = {c.name: c for c in study.cells}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"study {study.name} has no cell {unknown[0]!r}; its cells: {', '.join(by_name)}")
    return [by_name[n] for n in dict.fromkeys(names)]


def source_spec(source: str) -> str:
    """A Recipe.source as a task spec: "local" -> the local corpus's "jsonl:..." spec (one line
    saying how to build it when it is not built); a "text:" / "jsonl:" spec as it is."""
    if source != "local":
        return source
    spec = local_corpus_spec()
    if spec is None:
        raise UserError("this scale pretrains on the local corpus, which is not built; run "
                        "`t5x-lite data build-local --only local_corpus` (about a minute)")
    return spec


def pretraining_source(source: str):
    """A Recipe.source other than "builtin" -> the DataSource the cells pretrain on: "c4" is T5's C4
    en (allenai/c4 json.gz shards in <TFDS data dir>/c4/en/, else TFDS c4/en:2.2.0, as T5's
    c4_v220_* tasks read it); "local" and "text:" / "jsonl:" specs go through source_spec."""
    if source == "c4":
        return c4_source()
    return task_from_spec(source_spec(source)).source


def pretraining_task_name(plan, scale: Scale) -> str:
    """The cell's pretraining task: the registered builtin one, or (recipe.source "c4", "local" or
    a "text:GLOB" / "jsonl:GLOB" spec) the cell's objective over that text."""
    if plan.source == "builtin":
        return plan.task
    name = f"study_{plan.objective}@{plan.source}"
    if name not in TaskRegistry.names():
        source = pretraining_source(plan.source)
        TaskRegistry.add(pretraining_task(name, source, plan.preprocessor, get_vocabulary(scale.vocabulary),
                                          description=f"{plan.objective} on {source.description}",
                                          **dict(plan.preprocessor_kwargs)))
    return name


def _claim(workdir: str, study: Study, scale: Scale) -> None:
    """DIR/study.json: one study at one scale per directory."""
    ensure_dir(workdir, "--workdir")
    path = os.path.join(workdir, STUDY_JSON)
    mine = {"study": study.name, "scale": scale.name}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                theirs = json.load(f)
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e}); is {workdir} a study directory?") from None
        if not isinstance(theirs, dict):
            raise UserError(f"{path} does not hold a JSON object; is {workdir} a study directory?")
        if {k: theirs.get(k) for k in mine} != mine:
            raise UserError(f"{workdir} holds study {theirs.get('study')} at scale {theirs.get('scale')}, "
                            f"not {study.name} at {scale.name}; use another --workdir")
        return
    atomic_write(path, jsonio.dumps(mine) + "\n")


def run_stage(stage: S.Stage, plan, scale: Scale, workdir: str, bar=None) -> dict:
    """Train one stage to the end and write its DONE.json; returns that record."""
    cell = stage.cell
    if stage.name == S.PRETRAIN:
        config, names = S.pretrain_config(plan, scale, pretraining_task_name(plan, scale)), None
    else:
        pretrained = os.path.join(S.cell_dir(workdir, cell), S.PRETRAIN) if plan.pretrain_steps else None
        config, names = S.finetune_config(plan, scale, stage, pretrained)
    before = stage.steps_done()
    note = S.repair(stage, config)
    if note:
        _log(note)
        if bar is not None:
            bar.update(stage.steps_done() - before)
    if bar is not None:
        bar.set_description(f"{cell.name} {stage.name}", refresh=False)
    t0 = time.perf_counter()
    try:
        code = loop.train(config, stage.directory, show_progress=False, progress=bar)
    except UserError as e:
        raise UserError(f"cell {cell.name}, stage {stage.name}: {e}") from None
    if code != 0:
        raise StageFailed(f"cell {cell.name}, stage {stage.name} stopped with exit code {code} "
                          f"(see the log above and {stage.directory})")
    reached = S.checkpoint_step(stage)
    if reached < stage.steps:
        raise StageInterrupted(f"cell {cell.name}, stage {stage.name} stopped at step {reached} of {stage.steps} "
                               "(SIGTERM); its checkpoint is saved: run the same command again to resume")
    record = {"cell": cell.name, "stage": stage.name, "task": config.data.task, "steps": stage.steps,
              "wall_s": time.perf_counter() - t0}
    record.update(S.pretrain_metrics(stage) if names is None else S.finetune_metrics(stage, names))
    S.write_done(stage, record)
    return record


def enable_compile_cache(directory: str) -> str:
    """JAX's persistent compilation cache in `directory`, unless one is configured already
    (JAX_COMPILATION_CACHE_DIR).  The cells of a study compile the same few programs over and
    over (every fine-tuning stage of one architecture is the same program); the cache turns
    every compile after the first into a read (a smoke stage: 40 s -> 11 s on 2 cores)."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def run_study(study_name: str, scale: Scale | str, workdir: str, cells=None, seeds: int | None = None,
              progress: bool = True, compile_cache: bool = True) -> dict:
    """Run (or resume) `cells` (names; default all) of a built-in study at `scale`; write
    DIR/results.json and the report; return the results.  compile_cache: JAX's persistent
    compilation cache in DIR/jax_cache (enable_compile_cache)."""
    scale = get_scale(scale) if isinstance(scale, str) else scale
    study = get_study(study_name, seeds=scale.seeds if seeds is None else seeds)
    chosen = select_cells(study, cells)
    workdir = os.path.abspath(workdir)
    _claim(workdir, study, scale)
    if compile_cache:
        enable_compile_cache(os.path.join(workdir, "jax_cache"))
    base = base_model(scale)
    plans = {c: cell_plan(c, base, scale.recipe) for c in study.cells}
    todo = [(c, S.cell_stages(workdir, plans[c], scale)) for c in chosen]
    stages = [s for _, st in todo for s in st]
    _log(f"{study.name} at scale {scale.name}: {len(chosen)} cells, {len(stages)} stages "
         f"({sum(s.is_done() for s in stages)} done) in {workdir}")
    bar = tqdm(total=sum(s.steps for s in stages), initial=sum(s.steps_done() for s in stages),
               desc=study.name, unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stderr,
               disable=not progress)
    try:
        for cell, cell_stages in todo:
            for stage in cell_stages:
                if not stage.is_done():
                    run_stage(stage, plans[cell], scale, workdir, bar if progress else None)
    finally:
        bar.close()
    results = collect_results(study, scale, base, plans, workdir)
    write_results(workdir, results)
    if results["cells"]:
        write_report(workdir)
    return results


def collect_results(study: Study, scale: Scale, base, plans: dict, workdir: str) -> dict:
    """results.json from the DONE.json of every cell whose stages are all done."""
    recipe, out = scale.recipe, []
    for cell in study.cells:
        stages = S.cell_stages(workdir, plans[cell], scale)
        if not all(s.is_done() for s in stages):
            continue
        done = {s.name: S.read_done(s) for s in stages}
        tasks = {t: m for d in done.values() for t, m in d.get("tasks", {}).items()}
        metrics = {}
        for column, fts in scale.finetune.columns.items():
            scores = [S.column_task_score(scale, ft, done) for ft in fts]
            metrics[column] = float(np.mean(scores)) if scores and None not in scores else None
        b = budget(cell, base, recipe.pretrain_tokens, recipe.sequence_length)
        out.append({"architecture": cell.architecture, "objective": cell.objective, "seed": cell.seed,
                    "params": b["params"], "flops_per_token": b["flops_per_token"],
                    "pretrain_flops": b["pretrain_flops"], "metrics": metrics,
                    "wall_s": sum(d["wall_s"] for d in done.values()), "tasks": tasks,
                    "pretrain_eval_loss": done.get(S.PRETRAIN, {}).get("eval/loss")})
    return {"study": study.name, "scale": scale.name, "columns": scale.columns, "cells": out,
            "notes": notes(study, scale)}


def notes(study: Study, scale: Scale) -> list[str]:
    r, ft = scale.recipe, scale.finetune
    corpus = {"builtin": "builtin: the shipped corpus (WordNet 3.0 glosses + Shakespeare, about 4.8M tokens)",
              "c4": "c4: C4 en, as T5 (allenai/c4 json.gz shards in <TFDS data dir>/c4/en/, or TFDS "
                    "c4/en:2.2.0)"}.get(r.source, r.source)
    if r.source == "local":
        m = local_corpus_manifest() or {}
        total = m.get("total", {})
        corpus = (f"local: the local corpus of `t5x-lite data build-local` ({', '.join(m.get('sources', {}))}; "
                  f"{total.get('bytes', 0) / 1e6:.1f} MB, {total.get('words', 0):,} words; no WordNet or Debian "
                  "description text, the downstream tasks' inputs)" if m else "local (not built)")
    cols = "; ".join(f"{c} = " + " + ".join(f"{t.task} {t.metric or 'benchmark average'}" for t in ts)
                     for c, ts in ft.columns.items())
    cap = (f"low-resource: {ft.max_train_examples} training examples per task (a fixed shuffle)"
           if ft.max_train_examples else "all training examples")
    return [f"scale {scale.name}: {scale.description}",
            f"pretraining corpus {corpus}; every cell {r.pretrain_steps} steps of {r.batch_size} x "
            f"{r.sequence_length} tokens ({r.pretrain_tokens:,} tokens), "
            f"optimizer {dict(r.hparams.get('optimizer', {}))}",
            f"fine-tuning: {'one run per cell on an equal-rate mixture of every task (T5 multi-task fine-tuning; the paper fine-tunes each task on its own)' if ft.mixture else 'each task on its own'}, {ft.steps} steps of batch {ft.batch_size}, Adafactor at a constant "
            f"{ft.learning_rate}, dropout {ft.dropout_rate}, {cap}; a task's score is its best validation score "
            f"over evaluations every {ft.eval_every} steps on the first {ft.eval_examples} validation examples "
            "(greedy decoding), the paper's best checkpoint per task; decoder-only cells fine-tune on "
            "'<inputs> target: <targets>'",
            f"columns: {cols}",
            f"seeds: the baseline over {sum(c.key == study.baseline for c in study.cells)} seeds; a cell's seed "
            "sets its initialisation, dropout and data order in pretraining and fine-tuning",
            *scale.notes]
