"""Preprocessed examples of one task (ExampleStream) or a mixture of tasks (MixtureStream), read with grain.

  grain.MapDataset.source(split)[process_index::process_count]    each host reads only its documents
    .shuffle(seed)  .repeat(num_epochs)                          grain reseeds the shuffle per epoch
    .map_with_index(document preprocessors)                      per-document RNG = f(seed, global index)
    .to_iter_dataset(ReadOptions(num_threads, prefetch))         threaded read-ahead
  -> ExampleStream: optional ConcatAndSplit (T5 reduce_concat_tokens + split_tokens) and the per-chunk
     preprocessors (RNG = f(seed, chunk index)): one preprocessed example at a time
  -> MixtureStream: picks a task per example with RNG = f(seed, example count)

State (get_state/set_state, JSON): grain's iterator index of the document being read, the token offset
inside it and the chunk counter.  A stream only needs the task's `name`, `source`, `preprocessors` and
`output_features`, so this module does not import the registry (t5x_lite.data.tasks imports it).
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np

from t5x_lite.data.preprocessors import ConcatAndSplit, Context
from t5x_lite.errors import UserError

DOCS_PER_BLOCK = 32   # documents per grain element before ConcatAndSplit (amortizes grain's per-element cost)
# grain silently skips None elements (and would spin forever on a source whose every document is filtered);
# the document stage returns this marker instead so that we can count filtered documents ourselves.
_FILTERED = "__filtered__"
_STAGE_DOCUMENT, _STAGE_CHUNK, _STAGE_MIXTURE = 0, 1, 2


def _apply(fns, ex, ctx):
    for fn in fns:
        if ex is None:
            return None
        ex = fn(ex, ctx)
    return ex


def process_shard(documents, process_index: int, process_count: int):
    """The documents process `process_index` of `process_count` reads: every process_count-th one,
    starting at its index (a grain MapDataset or any sliceable sequence).  The shards of all
    processes partition the documents (tests/test_data_pod_scale.py checks 16 and 64 processes)."""
    return documents[process_index::process_count]


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

        import grain   # lazy: grain imports jax; keeps `import t5x_lite.data` and `t5x-lite data list` fast
        rows = task.source.get(split)   # UserError for a missing file / empty split
        num_docs = len(rows)
        ds = grain.MapDataset.source(rows)
        if process_count > 1:
            ds = process_shard(ds, process_index, process_count)
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
