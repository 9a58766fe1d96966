"""Feature converters: task examples {"inputs", "targets"} -> model batches.

Each converter
  1. `prepare(example)`: turns one task example into per-stack token arrays ("streams"), trimmed to the
     stack's length (or a UserError when trimming is off and the example does not fit); None for an
     example with empty targets (nothing to learn) or, encoder-decoder, empty inputs (nothing to attend
     to): those are dropped;
  2. the `Packer` places prepared examples into the rows of a batch;
  3. `finalize(rows)`: builds the model features from the packed rows.

Packing is greedy FIRST-FIT over the rows of the batch being filled: an example goes into the first row
where every stack still has room; when it fits in no row the batch is emitted and the example opens the
next batch.  Each packed example gets its own segment id (1, 2, ...; 0 = padding) and positions that
restart at 0, so attention masks and relative positions never cross examples.  decoder_input_tokens
are the targets shifted right with BOS=0 at every segment start.  Without packing each example is one
row (segment ids/positions are still emitted: 1 / 0..n-1 on the example, 0 on padding).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from t5x_lite.errors import UserError


def _trim(tokens: np.ndarray, length: int, what: str, trim: bool) -> np.ndarray:
    if len(tokens) > length:
        if not trim:
            raise UserError(f"an example's {what} has {len(tokens)} tokens, more than the feature length "
                            f"{length}, and trimming is off: raise feature_lengths or allow trimming")
        tokens = tokens[:length]
    return tokens


def _shift_right(tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Targets -> decoder inputs: shift by one, BOS (0) wherever a segment starts."""
    shifted = np.zeros_like(tokens)
    shifted[:, 1:] = tokens[:, :-1]
    return np.where(positions == 0, 0, shifted).astype(np.int32)


class FeatureConverter:
    """Base: `stacks` maps a stack name to its length; streams of a stack are packed together."""

    name = "base"

    def __init__(self, feature_lengths: Mapping[str, int], trim: bool = True):
        self.feature_lengths = {k: int(v) for k, v in feature_lengths.items()}
        self.trim = trim
        self.stacks: dict[str, int] = {}

    def prepare(self, ex: dict) -> dict[str, dict[str, np.ndarray]]:
        raise NotImplementedError

    def finalize(self, rows: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _need(self, key: str) -> int:
        if key not in self.feature_lengths:
            raise UserError(f"the {self.name} converter needs feature_lengths[{key!r}] (got {self.feature_lengths})")
        return self.feature_lengths[key]

    @staticmethod
    def _tokens(ex: dict, key: str) -> np.ndarray:
        if key not in ex:
            raise UserError(f"example has no {key!r} feature (it has {sorted(ex)})")
        return np.asarray(ex[key], np.int32).reshape(-1)


class EncDecFeatureConverter(FeatureConverter):
    name = "encoder_decoder"

    def __init__(self, feature_lengths, trim=True):
        super().__init__(feature_lengths, trim)
        self.stacks = {"encoder": self._need("inputs"), "decoder": self._need("targets")}

    def prepare(self, ex):
        inputs, targets = self._tokens(ex, "inputs"), self._tokens(ex, "targets")
        if len(inputs) == 0 or len(targets) == 0:
            return None   # nothing to attend to / nothing to learn (and it would break segment pairing)
        return {"encoder": {"tokens": _trim(inputs, self.stacks["encoder"], "inputs", self.trim)},
                "decoder": {"tokens": _trim(targets, self.stacks["decoder"], "targets", self.trim)}}

    def finalize(self, rows):
        enc, dec = rows["encoder"], rows["decoder"]
        return {
            "encoder_input_tokens": enc["tokens"], "encoder_segment_ids": enc["segment_ids"],
            "encoder_positions": enc["positions"],
            "decoder_input_tokens": _shift_right(dec["tokens"], dec["positions"]),
            "decoder_target_tokens": dec["tokens"],
            "decoder_loss_weights": (dec["segment_ids"] > 0).astype(np.int32),
            "decoder_segment_ids": dec["segment_ids"], "decoder_positions": dec["positions"],
        }


class LMFeatureConverter(FeatureConverter):
    """Decoder-only on a targets-only task (full LM)."""
    name = "decoder_only"

    def __init__(self, feature_lengths, trim=True):
        super().__init__(feature_lengths, trim)
        self.stacks = {"decoder": self._need("targets")}

    def prepare(self, ex):
        targets = self._tokens(ex, "targets")
        if len(targets) == 0:
            return None
        return {"decoder": {"tokens": _trim(targets, self.stacks["decoder"], "targets", self.trim)}}

    def finalize(self, rows):
        dec = rows["decoder"]
        return {"decoder_input_tokens": _shift_right(dec["tokens"], dec["positions"]),
                "decoder_target_tokens": dec["tokens"],
                "decoder_loss_weights": (dec["segment_ids"] > 0).astype(np.int32),
                "decoder_segment_ids": dec["segment_ids"], "decoder_positions": dec["positions"]}


class PrefixLMFeatureConverter(FeatureConverter):
    """Decoder-only on a task with inputs: one sequence inputs ++ targets of length inputs+targets;
    loss only on the targets; decoder_causal_attention = 1 on the inputs plus one position (the first
    decoder input after the prefix is the last input token, shifted), as seqio's PrefixLMFeatureConverter."""
    name = "prefix_lm"

    def __init__(self, feature_lengths, trim=True):
        super().__init__(feature_lengths, trim)
        self.stacks = {"decoder": self._need("inputs") + self._need("targets")}

    def prepare(self, ex):
        inputs, targets = self._tokens(ex, "inputs"), self._tokens(ex, "targets")
        if len(targets) == 0:
            return None
        tokens = np.concatenate([inputs, targets]).astype(np.int32)
        loss = np.concatenate([np.zeros(len(inputs), np.int32), np.ones(len(targets), np.int32)])
        causal = (np.arange(len(tokens)) <= len(inputs)).astype(np.int32)
        n = self.stacks["decoder"]
        tokens = _trim(tokens, n, "inputs+targets", self.trim)
        return {"decoder": {"tokens": tokens, "loss": loss[:n], "causal": causal[:n]}}

    def finalize(self, rows):
        dec = rows["decoder"]
        return {"decoder_input_tokens": _shift_right(dec["tokens"], dec["positions"]),
                "decoder_target_tokens": dec["tokens"],
                "decoder_loss_weights": dec["loss"].astype(np.int32),
                "decoder_causal_attention": dec["causal"].astype(np.int32),
                "decoder_segment_ids": dec["segment_ids"], "decoder_positions": dec["positions"]}


class EncoderFeatureConverter(FeatureConverter):
    """Encoder-only MLM: inputs (corrupted), targets (original), loss_weights (1 on chosen positions;
    when the task gives none, 1 where inputs != targets); BERT pairs (t5x_lite/data/bert.py) add
    token_type_ids -> encoder_token_type_ids and nsp_label -> encoder_nsp_labels (the label on every
    token of its packed example; the objective reads it at the example's first position)."""
    name = "encoder_only"

    def __init__(self, feature_lengths, trim=True):
        super().__init__(feature_lengths, trim)
        self.stacks = {"encoder": self._need("inputs")}

    def prepare(self, ex):
        inputs, targets = self._tokens(ex, "inputs"), self._tokens(ex, "targets")
        if len(inputs) != len(targets):
            raise UserError("the encoder_only converter needs an MLM task (inputs and targets of equal length, "
                            f"got {len(inputs)} and {len(targets)}): use e.g. builtin_mlm")
        if len(inputs) == 0:
            return None
        weights = np.asarray(ex["loss_weights"], np.int32) if "loss_weights" in ex else (inputs != targets).astype(np.int32)
        n = self.stacks["encoder"]
        inputs = _trim(inputs, n, "inputs", self.trim)
        out = {"tokens": inputs, "targets": targets[:n], "loss": weights[:n]}
        if "token_type_ids" in ex:
            out["types"] = np.asarray(ex["token_type_ids"], np.int32)[:n]
        if "nsp_label" in ex:
            out["nsp"] = np.full(len(inputs), int(ex["nsp_label"]), np.int32)
        return {"encoder": out}

    def finalize(self, rows):
        enc = rows["encoder"]
        out = {"encoder_input_tokens": enc["tokens"], "encoder_target_tokens": enc["targets"],
               "encoder_loss_weights": enc["loss"].astype(np.int32),
               "encoder_segment_ids": enc["segment_ids"], "encoder_positions": enc["positions"]}
        for stream, feature in (("types", "encoder_token_type_ids"), ("nsp", "encoder_nsp_labels")):
            if stream in enc:
                out[feature] = enc[stream]
        return out


CLASSIFIER = "encoder_classifier"   # an encoder_only model with num_classes > 0 (data/classification.py)
ARCHITECTURES = ("encoder_decoder", "decoder_only", "encoder_only", "electra", CLASSIFIER)


def get_feature_converter(architecture: str, task_has_inputs: bool, feature_lengths, trim: bool = True) -> FeatureConverter:
    if architecture == "encoder_decoder":
        if not task_has_inputs:
            raise UserError("an encoder_decoder model needs a task with inputs (for the LM objective use a "
                            "prefix-LM task such as builtin_prefix_lm)")
        return EncDecFeatureConverter(feature_lengths, trim)
    if architecture == "decoder_only":
        cls = PrefixLMFeatureConverter if task_has_inputs else LMFeatureConverter
        return cls(feature_lengths, trim)
    if architecture in ("encoder_only", "electra"):   # electra trains on the same MLM batches
        return EncoderFeatureConverter(feature_lengths, trim)
    if architecture == CLASSIFIER:   # an encoder_only model with num_classes > 0
        from t5x_lite.data.classification import ClassifierFeatureConverter   # lazy: it imports this module
        return ClassifierFeatureConverter(feature_lengths, trim)
    raise UserError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")


class Packer:
    """Fills `batch_size` rows with prepared examples (first-fit when pack=True, one per row otherwise).

    add(prepared) -> a finished batch (dict of stack -> stream -> [batch, length]) when the example did
    not fit and the batch had to be emitted first (the example then starts the new batch), else None.
    """

    def __init__(self, stacks: Mapping[str, int], batch_size: int, pack: bool):
        self.stacks, self.batch_size, self.pack = dict(stacks), batch_size, pack
        self.reset()

    def reset(self):
        # rows[r][stack] = list of per-example stream dicts
        self.rows: list[dict[str, list[dict[str, np.ndarray]]]] = []
        self.used: list[dict[str, int]] = []

    def empty(self) -> bool:
        return not self.rows

    def _fits(self, r: int, lengths: dict[str, int]) -> bool:
        return all(self.used[r][s] + lengths[s] <= self.stacks[s] for s in self.stacks)

    def try_add(self, prepared: dict[str, dict[str, np.ndarray]]) -> bool:
        lengths = {s: len(prepared[s]["tokens"]) for s in self.stacks}
        if self.pack:
            for r in range(len(self.rows)):
                if self._fits(r, lengths):
                    self._put(r, prepared, lengths)
                    return True
        if len(self.rows) < self.batch_size:
            self.rows.append({s: [] for s in self.stacks})
            self.used.append({s: 0 for s in self.stacks})
            self._put(len(self.rows) - 1, prepared, lengths)
            return True
        return False

    def _put(self, r, prepared, lengths):
        for s in self.stacks:
            self.rows[r][s].append(prepared[s])
            self.used[r][s] += lengths[s]

    def full(self) -> bool:
        """No further example can be added (unpacked: all rows used)."""
        return not self.pack and len(self.rows) >= self.batch_size

    def emit(self) -> dict[str, dict[str, np.ndarray]]:
        """Pad and stack the rows (missing rows are all padding) and reset."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for s, length in self.stacks.items():
            names = {k for row in self.rows for ex in row[s] for k in ex} or {"tokens"}
            arrays = {k: np.zeros((self.batch_size, length), np.int32) for k in names}
            seg = np.zeros((self.batch_size, length), np.int32)
            pos = np.zeros((self.batch_size, length), np.int32)
            for r, row in enumerate(self.rows):
                offset = 0
                for i, ex in enumerate(row[s]):
                    n = len(ex["tokens"])
                    for k, v in ex.items():
                        arrays[k][r, offset:offset + n] = v
                    seg[r, offset:offset + n] = i + 1
                    pos[r, offset:offset + n] = np.arange(n)
                    offset += n
            out[s] = {**arrays, "segment_ids": seg, "positions": pos}
        self.reset()
        return out
