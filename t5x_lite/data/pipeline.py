"""The input pipeline on grain: deterministic, sharded per host, resumable from a small JSON state.

  grain.MapDataset.source(split)[process_index::process_count]    each host reads only its documents
    .shuffle(seed)  .repeat(num_epochs)                          grain reseeds the shuffle per epoch
    .map_with_index(document preprocessors)                      per-document RNG = f(seed, global index)
    .to_iter_dataset(ReadOptions(num_threads, prefetch))         threaded read-ahead
  -> ExampleStream: optional ConcatAndSplit (T5 reduce_concat_tokens + split_tokens) and the per-chunk
     preprocessors (RNG = f(seed, chunk index)): one preprocessed example at a time
  -> (MixtureStream: picks a task per example with RNG = f(seed, example count))
  -> Batches: feature converter + first-fit packing into the LOCAL batch (batch_size // process_count rows)

State (get_state/set_state, JSON): grain's iterator index of the document being read, the token offset
inside it and the chunk counter; the packer stores the state *before* the example that did not fit in the
last batch, so restoring replays exactly the batches an uninterrupted run would produce.
"""

from __future__ import annotations

import copy
from typing import Mapping

import grain
import numpy as np

from t5x_lite.data.feature_converters import Packer, get_feature_converter
from t5x_lite.data.preprocessors import ConcatAndSplit, Context
from t5x_lite.errors import UserError

STATE_VERSION = 2
DOCS_PER_BLOCK = 32   # documents per grain element before ConcatAndSplit (amortizes grain's per-element cost)
# grain silently skips None elements (and would spin forever on a source whose every document is filtered);
# the document stage returns this marker instead so that we can count filtered documents ourselves.
_FILTERED = "__filtered__"
_MAX_CONSECUTIVE_DROPS = 10_000
_STAGE_DOCUMENT, _STAGE_CHUNK, _STAGE_MIXTURE = 0, 1, 2


def _apply(fns, ex, ctx):
    for fn in fns:
        if ex is None:
            return None
        ex = fn(ex, ctx)
    return ex


class ExampleStream:
    """Preprocessed examples of one task/split for one host.  Iterator with get_state()/set_state()."""

    def __init__(self, task, split: str, *, feature_lengths: Mapping[str, int], seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, process_index: int = 0, process_count: int = 1,
                 num_threads: int = 2, prefetch: int = 64, docs_per_block: int = DOCS_PER_BLOCK):
        if not 0 <= process_index < process_count:
            raise UserError(f"process_index {process_index} out of range for process_count {process_count}")
        self.task, self.split, self.seed = task, split, int(seed)
        self.feature_lengths = dict(feature_lengths)
        pre = task.preprocessors
        cut = next((i for i, p in enumerate(pre) if isinstance(p, ConcatAndSplit)), None)
        self.doc_fns = pre if cut is None else pre[:cut]
        self.split_step = None if cut is None else pre[cut]
        self.chunk_fns = [] if cut is None else pre[cut + 1:]
        self.chunk_length = None
        if self.split_step is not None:
            try:
                self.chunk_length = int(self.split_step.length_fn(self.feature_lengths))
            except KeyError as e:
                raise UserError(f"task {task.name} needs feature_lengths[{e.args[0]!r}]") from None
            if self.chunk_length <= 0:
                raise UserError(f"feature_lengths {self.feature_lengths} give a non-positive chunk length")

        rows = task.source.get(split)   # UserError for a missing file / empty split
        num_docs = len(rows)
        ds = grain.MapDataset.source(rows)
        if process_count > 1:
            ds = ds[process_index::process_count]
            if len(ds) == 0:
                raise UserError(f"split {split!r} of {task.name} has {num_docs} documents, fewer than the "
                                f"{process_count} hosts: host {process_index} would read nothing")
        self.num_documents = len(ds)
        if shuffle:
            ds = ds.shuffle(self.seed & 0xFFFFFFFF)
        ds = ds.repeat(num_epochs)
        out_features, split_name, lengths, fns, seed_ = task.output_features, split, self.feature_lengths, self.doc_fns, self.seed

        def process_document(index, ex):
            ctx = Context(seed_, _STAGE_DOCUMENT, index, lengths, out_features, split_name)
            out = _apply(fns, dict(ex), ctx)
            return {_FILTERED: True} if out is None else out

        ds = ds.map_with_index(process_document)
        if self.split_step is not None and docs_per_block > 1:
            # Documents are concatenated anyway: hand them to the stream in blocks of consecutive (already
            # shuffled, already preprocessed with their own per-document seeds) documents, joined into one
            # token array.  Same token stream as block size 1, a fraction of the per-element overhead.
            feature = self.split_step.feature

            def join_block(block):
                kept = [np.asarray(ex[feature], np.int32) for ex in block if _FILTERED not in ex]
                tokens = np.concatenate(kept) if kept else np.zeros(0, np.int32)
                if len(tokens) == 0:
                    return {_FILTERED: True, "_docs": len(block)}
                return {feature: tokens, "_docs": len(block)}

            ds = ds.batch(docs_per_block, batch_fn=join_block)
            prefetch = max(2, prefetch // 8)   # blocks are 32x larger elements: keep read-ahead moderate
        self._docs = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
        self._it = iter(self._docs)
        # ConcatAndSplit cursor: the current document's tokens, the grain state before it, our offset.
        self._doc_tokens: np.ndarray | None = None
        self._doc_state = self._it.get_state()
        self._offset = 0
        self._resume_offset = 0
        self._chunk = 0
        self._skipped = 0

    # -- reading documents ---------------------------------------------------------------------
    def _next_document(self):
        """Next non-filtered preprocessed document from grain (StopIteration at the end)."""
        while True:
            state = self._it.get_state()
            ex = next(self._it)
            if _FILTERED not in ex:
                self._skipped = 0
                return state, ex
            self._skipped += ex.get("_docs", 1)
            if self._skipped > self.num_documents:
                raise UserError(f"task {self.task.name} split {self.split}: every document was filtered out "
                                "by the preprocessors (empty texts?)")

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.split_step is None:
            return self._next_document()[1]
        return self._next_chunk()

    def _next_chunk(self) -> dict:
        while True:   # a chunk preprocessor may drop a chunk (returns None): take the next one
            chunk, ctx = self._read_chunk()
            out = _apply(self.chunk_fns, chunk, ctx)
            if out is not None:
                return out

    def _read_chunk(self) -> tuple[dict, Context]:
        """The next `chunk_length` tokens of the concatenated document stream (shorter only at the end)."""
        feature, length = self.split_step.feature, self.chunk_length
        pieces, have = [], 0
        while have < length:
            if self._doc_tokens is None or self._offset >= len(self._doc_tokens):
                try:
                    self._doc_state, ex = self._next_document()
                except StopIteration:
                    self._doc_tokens = None
                    if have == 0:
                        raise
                    break
                self._doc_tokens = np.asarray(ex[feature], np.int32)
                self._offset, self._resume_offset = self._resume_offset, 0
                continue
            take = min(length - have, len(self._doc_tokens) - self._offset)
            pieces.append(self._doc_tokens[self._offset:self._offset + take])
            self._offset += take
            have += take
        ctx = Context(self.seed, _STAGE_CHUNK, self._chunk, self.feature_lengths, self.task.output_features, self.split)
        self._chunk += 1
        return {feature: np.concatenate(pieces).astype(np.int32)}, ctx

    # -- state ---------------------------------------------------------------------------------
    def get_state(self) -> dict:
        if self.split_step is None:
            return {"docs": _plain(self._it.get_state())}
        if self._doc_tokens is not None and self._offset < len(self._doc_tokens):
            return {"docs": _plain(self._doc_state), "offset": int(self._offset), "chunk": self._chunk}
        if self._doc_tokens is None and self._resume_offset:   # restored but not yet read
            return {"docs": _plain(self._doc_state), "offset": int(self._resume_offset), "chunk": self._chunk}
        return {"docs": _plain(self._it.get_state()), "offset": 0, "chunk": self._chunk}

    def set_state(self, state: dict) -> None:
        self._it.set_state(copy.deepcopy(state["docs"]))
        self._doc_state = copy.deepcopy(state["docs"])
        self._doc_tokens = None
        self._offset = 0
        self._resume_offset = int(state.get("offset", 0))
        self._chunk = int(state.get("chunk", 0))


def _plain(state):
    """grain states are dicts of ints; make sure they are plain JSON types."""
    if isinstance(state, dict):
        return {str(k): _plain(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_plain(v) for v in state]
    if isinstance(state, np.integer):
        return int(state)
    return state


class MixtureStream:
    """Samples the task of each example with probability rate / sum(rates), RNG = f(seed, example count)."""

    def __init__(self, streams: list[ExampleStream], rates: list[float], seed: int):
        self.streams, self.seed = streams, int(seed)
        self.probs = np.asarray(rates, np.float64) / np.sum(rates)
        self._count = 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, _STAGE_MIXTURE, self._count])
        k = int(rng.choice(len(self.streams), p=self.probs))
        self._count += 1
        return next(self.streams[k])

    def get_state(self):
        return {"count": self._count, "tasks": [s.get_state() for s in self.streams]}

    def set_state(self, state):
        self._count = int(state["count"])
        for s, st in zip(self.streams, state["tasks"]):
            s.set_state(st)


class Pipeline:
    """Batches of model features (contracts.md section A) for this host.  Iterator + get/set_state."""

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
                  process_index: int | None = None, process_count: int | None = None, decoder_mask: str = "causal",
                  trim: bool = True, data_dir: str | None = None, num_threads: int = 2,
                  docs_per_block: int = DOCS_PER_BLOCK) -> Pipeline:
    """Contract C.  batch_size is GLOBAL; each host yields batch_size // process_count rows.
    data_dir overrides the TFDS data_dir of TFDS-backed tasks (e.g. c4_v220_*)."""
    from t5x_lite.data.tasks import Mixture, get_task_or_mixture
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if decoder_mask not in ("causal", "prefix"):
        raise UserError(f"decoder_mask must be 'causal' or 'prefix', got {decoder_mask!r}")
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
