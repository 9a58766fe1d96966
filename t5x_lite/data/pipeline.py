"""The input pipeline: preprocessed examples (t5x_lite.data.streams) -> packed batches of model features.

  ExampleStream per task (MixtureStream for a mixture)
  -> Batches: feature converter + first-fit packing into the LOCAL batch (batch_size // process_count rows)

State (get_state/set_state, JSON): the example stream's state; the packer stores the state *before* the
example that did not fit in the last batch, so restoring replays exactly the batches an uninterrupted run
would produce.
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np

from t5x_lite.data.feature_converters import Packer, get_feature_converter
from t5x_lite.data.streams import DOCS_PER_BLOCK, ExampleStream, MixtureStream
from t5x_lite.data.tasks import Mixture, get_task_or_mixture
from t5x_lite.errors import UserError

STATE_VERSION = 2
_MAX_CONSECUTIVE_DROPS = 10_000


class Pipeline:
    """Batches of model features (the feature converter's arrays, see feature_converters.py) for this host.
    Iterator + get/set_state."""

    def __init__(self, examples, converter, local_batch_size: int, pack: bool, description: dict):
        self.examples, self.converter = examples, converter
        self.local_batch_size = local_batch_size
        self.packer = Packer(converter.stacks, local_batch_size, pack)
        self.description = description
        self._pending = None          # a prepared example that did not fit in the previous batch
        self._pending_state = None    # the example stream's state before that example
        self._batches = 0
        self._done = False
        self._dropped = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._done:
            raise StopIteration
        if self._pending is not None:
            self.packer.try_add(self._pending)
            self._pending = self._pending_state = None
        while not self.packer.full():
            state = self.examples.get_state()
            try:
                ex = next(self.examples)
            except StopIteration:
                self._done = True
                break
            prepared = self.converter.prepare(ex)
            if prepared is None:
                self._dropped += 1
                if self._dropped > _MAX_CONSECUTIVE_DROPS:
                    raise UserError(f"{_MAX_CONSECUTIVE_DROPS} examples in a row had empty targets (or empty "
                                    f"inputs for {self.converter.name}): check the task's preprocessors")
                continue
            self._dropped = 0
            if not self.packer.try_add(prepared):
                self._pending, self._pending_state = prepared, state
                break
        if self.packer.empty():
            raise StopIteration
        self._batches += 1
        return self.converter.finalize(self.packer.emit())

    def get_state(self) -> dict:
        examples = self._pending_state if self._pending is not None else self.examples.get_state()
        return {"version": STATE_VERSION, "examples": copy.deepcopy(examples), "batches": self._batches,
                "pipeline": self.description}

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise UserError(f"data iterator state has version {state.get('version')}, expected {STATE_VERSION}")
        if state.get("pipeline") != self.description:
            diff = {k: (state.get("pipeline", {}).get(k), v) for k, v in self.description.items()
                    if state.get("pipeline", {}).get(k) != v}
            raise UserError(f"data iterator state was saved for a different pipeline (saved, now): {diff}")
        self.examples.set_state(copy.deepcopy(state["examples"]))
        self._pending = self._pending_state = None
        self.packer.reset()
        self._batches = int(state["batches"])
        self._done = False


def make_pipeline(name: str, *, split: str, feature_lengths: Mapping[str, int], architecture: str,
                  batch_size: int, seed: int, shuffle: bool = True, pack: bool = True, num_epochs: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  trim: bool = True, data_dir: str | None = None, num_threads: int = 2,
                  docs_per_block: int = DOCS_PER_BLOCK) -> Pipeline:
    """Packed batches of the registered task or mixture `name` (or a text:/jsonl: spec) for this host.
    batch_size is GLOBAL; each host yields batch_size // process_count rows (process_index/process_count
    default to jax's).  data_dir overrides the TFDS data_dir of TFDS-backed tasks (e.g. c4_v220_*)."""
    if process_index is None or process_count is None:
        import jax   # lazy: keeps `import t5x_lite.data` (and `t5x-lite data list`) free of jax, fast
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if batch_size <= 0 or batch_size % process_count:
        raise UserError(f"global batch_size {batch_size} must be a positive multiple of the {process_count} hosts")
    if num_epochs is not None and num_epochs <= 0:
        raise UserError(f"num_epochs must be positive or None, got {num_epochs}")
    provider = get_task_or_mixture(name)
    tasks = provider.tasks_and_rates if isinstance(provider, Mixture) else [(provider, 1.0)]
    if data_dir is not None:
        tasks = [(t.with_data_dir(data_dir), r) for t, r in tasks]
    converter = get_feature_converter(architecture, provider.has_inputs, feature_lengths, trim)
    streams = [ExampleStream(t, split, feature_lengths=feature_lengths, seed=seed + 7919 * i, shuffle=shuffle,
                             num_epochs=num_epochs, process_index=process_index, process_count=process_count,
                             num_threads=num_threads, docs_per_block=docs_per_block)
               for i, (t, _) in enumerate(tasks)]
    examples = streams[0] if len(streams) == 1 else MixtureStream(streams, [r for _, r in tasks], seed)
    description = {"task": name, "split": split,
                   "feature_lengths": {str(k): int(v) for k, v in sorted(feature_lengths.items())},
                   "architecture": architecture, "batch_size": int(batch_size), "seed": int(seed),
                   "shuffle": bool(shuffle), "pack": bool(pack), "process_index": int(process_index),
                   "process_count": int(process_count), "docs_per_block": int(docs_per_block)}
    return Pipeline(examples, converter, batch_size // process_count, pack, description)
