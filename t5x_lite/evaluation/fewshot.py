"""Few-shot in-context evaluation for decoder-only checkpoints (`t5x-lite eval --num-shots K`).

Each evaluated example gets a prompt of K demonstrations drawn from the task's train
split, written in the T5 paper's decoder-only format ("<inputs> target: <targets>"),
followed by the example's own "<inputs> target:"; the model continues it greedily
(or with beam search) and the task's postprocessor and metrics score the answer.

    translate English to German: Open file target: Datei öffnen translate English to
    German: Close target: Schließen translate English to German: Save as target:  -> ...

Prompts are text (the T5 vocabulary has no newline, so demonstrations are separated by
a space) tokenized with the task's inputs vocabulary, no EOS.  A model that was not
fine-tuned rarely emits EOS after its answer, so the continuation is cut where the next
demonstration would start: at the next "target:" or at the task's common input prefix
(e.g. "translate English to German:").  Demonstrations are drawn per example with a
seeded RNG (same seed, same prompts); when a prompt is too long the oldest
demonstrations are dropped first.
"""

from __future__ import annotations

import numpy as np

from t5x_lite.errors import UserError
from t5x_lite.evaluation import evaluator as ev


def common_input_prefix(texts) -> str:
    """The words every text starts with (a task prefix like "translate English to German:")."""
    words = [t.split() for t in texts if t]
    if len(words) < 2:
        return ""
    prefix = []
    for column in zip(*words):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return " ".join(prefix)


def make_cutter(stops):
    stops = [s for s in stops if s]

    def cut(text: str) -> str:
        end = len(text)
        for s in stops:
            i = text.find(s)
            if i >= 0:
                end = min(end, i)
        return text[:end].strip()
    return cut


def build_prompts(task, examples, demos, num_shots: int, *, seed: int = 0, max_prompt_length: int = 1024,
                  marker: str = ev.LM_TARGET_MARKER) -> tuple[list[list[int]], list[str]]:
    """(prompt ids, prompt texts) for each example: num_shots demonstrations from `demos`."""
    vocab_in = task.output_features.get("inputs", task.output_features["targets"]).vocabulary
    vocab_out = task.output_features["targets"].vocabulary
    demo_text = [f"{ev.feature_text(d, 'inputs', vocab_in)} {marker} {ev.feature_text(d, 'targets', vocab_out)}"
                 for d in demos]
    ids, texts = [], []
    for n, ex in enumerate(examples):
        query = f"{ev.feature_text(ex, 'inputs', vocab_in)} {marker}"
        rng = np.random.default_rng([seed, n])
        own = ev.feature_text(ex, "inputs", vocab_in)
        pool = [i for i, d in enumerate(demos) if ev.feature_text(d, "inputs", vocab_in) != own]
        chosen = list(rng.choice(pool, size=min(num_shots, len(pool)), replace=False)) if pool else []
        while True:
            text = " ".join([demo_text[i] for i in chosen] + [query])
            tokens = vocab_in.encode(text)
            if len(tokens) <= max_prompt_length or not chosen:
                break
            chosen = chosen[1:]            # drop the oldest demonstration
        ids.append(tokens[-max_prompt_length:])
        texts.append(text)
    return ids, texts


def evaluate_fewshot(model, task, *, num_shots: int, split: str = "validation", max_examples: int | None = None,
                     settings: ev.DecodeSettings | None = None, seed: int = 0, demo_split: str = "train",
                     demo_pool: int = 256, max_prompt_length: int | None = None,
                     progress: bool | str = False, inputs_length: int | None = None) -> tuple[list[dict], dict]:
    """K-shot evaluation of a decoder-only model.  Returns (records, metrics) like
    evaluator.evaluate_task; records also carry the "prompt" text."""
    cfg = model.config
    if cfg.architecture != "decoder_only":
        raise UserError(f"few-shot evaluation needs a decoder_only model, got {cfg.architecture}")
    if num_shots < 1:
        raise UserError(f"--num-shots must be >= 1, got {num_shots}")
    if demo_split not in task.splits:
        raise UserError(f"task {task.name} has no {demo_split!r} split to draw demonstrations from")
    settings = (settings or ev.DecodeSettings()).validate()
    examples = ev.task_examples(task, split, max_examples, inputs_length)
    demos = ev.task_examples(task, demo_split, demo_pool, inputs_length)
    vocab_in = task.output_features.get("inputs", task.output_features["targets"]).vocabulary
    decode_len = settings.max_decode_length or max(len(ev._strip_eos(ex["targets"])) + 1 for ex in examples)
    if max_prompt_length is None:
        max_prompt_length = 1024
        if cfg.position_embedding != "relative":
            max_prompt_length = min(max_prompt_length, cfg.max_position_embeddings - decode_len - 1)
    if max_prompt_length < 1:
        raise UserError(f"no room for a prompt: max_position_embeddings {cfg.max_position_embeddings}")
    prompts, texts = build_prompts(task, examples, demos, num_shots, seed=seed,
                                   max_prompt_length=max_prompt_length)
    prefix = common_input_prefix([ev.feature_text(d, "inputs", vocab_in) for d in demos])
    cut = make_cutter([ev.LM_TARGET_MARKER, prefix])
    settings = ev.DecodeSettings(**{**settings.__dict__, "max_decode_length": decode_len})
    records, metrics = ev.evaluate_task(model, task, examples=examples, prompts=prompts, settings=settings,
                                        progress=progress, postprocess_prediction=cut)
    for r, t in zip(records, texts):
        r["prompt"] = t
    return records, metrics
