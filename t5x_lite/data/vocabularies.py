"""Vocabularies with T5 conventions.

Ids: PAD=0, EOS=1, UNK=2.  `extra_ids` sentinel ids sit on top of the base vocabulary and count DOWN from
the last id: <extra_id_0> = vocab_size - 1, <extra_id_1> = vocab_size - 2, ... (T5 / seqio
`reverse_extra_ids=True`; HF's Flax collator once got this backwards, transformers#14282).

* SentencePieceVocabulary: any SentencePiece model trained with pad=0, eos=1, unk=2 (no BOS), like T5's.
* ByteVocabulary: ByT5 style, 3 special ids then the 256 byte values (byte b -> id b + 3), extra ids on top.

`encode` never adds EOS (preprocessors do).  The literal text "<extra_id_N>" encodes to the sentinel id, so
prompts written by hand can contain sentinels.  `decode` stops at the first EOS, drops PAD, renders sentinel
ids as "<extra_id_N>" and drops ids >= vocab_size (a model's embedding table may be padded past the vocab).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from typing import Iterable, Sequence

import sentencepiece as spm

from t5x_lite.errors import UserError

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
DEFAULT_EXTRA_IDS = 100
_SENTINEL_RE = re.compile(r"<extra_id_(\d+)>")
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")


class Vocabulary:
    """Shared logic: sentinels, EOS/PAD handling, batches.  Subclasses map text <-> base ids."""

    pad_id, eos_id, unk_id = PAD_ID, EOS_ID, UNK_ID

    def __init__(self, extra_ids: int):
        if extra_ids < 0:
            raise UserError(f"extra_ids must be >= 0, got {extra_ids}")
        self.extra_ids = int(extra_ids)

    # --- subclass interface -------------------------------------------------------------------
    @property
    def base_vocab_size(self) -> int:
        raise NotImplementedError

    def _encode_plain(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode_plain(self, ids: list[int]) -> str:
        raise NotImplementedError

    # --- public API ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + self.extra_ids

    def sentinel_id(self, k: int) -> int:
        """Id of <extra_id_k> (k = 0 is the last id of the vocabulary)."""
        if not 0 <= k < self.extra_ids:
            raise UserError(f"<extra_id_{k}> out of range: this vocabulary has {self.extra_ids} extra ids")
        return self.vocab_size - 1 - k

    @property
    def first_sentinel_id(self) -> int:
        """Smallest sentinel id: every id >= this is a sentinel."""
        return self.base_vocab_size

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        pos = 0
        for m in _SENTINEL_RE.finditer(text):
            if m.start() > pos:
                ids.extend(self._encode_plain(text[pos:m.start()]))
            ids.append(self.sentinel_id(int(m.group(1))))
            pos = m.end()
        if pos < len(text) or not ids:
            ids.extend(self._encode_plain(text[pos:]))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        run: list[int] = []
        for i in (int(x) for x in ids):
            if i == EOS_ID:
                break
            if i == PAD_ID or i >= self.vocab_size or i < 0:
                continue
            if i >= self.base_vocab_size:
                if run:
                    out.append(self._decode_run(run, bool(out)))
                    run = []
                out.append(f"<extra_id_{self.vocab_size - 1 - i}>")
            else:
                run.append(i)
        if run:
            out.append(self._decode_run(run, bool(out)))
        return "".join(out)

    def _decode_run(self, run: list[int], after_sentinel: bool) -> str:
        return self._decode_plain(run)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def piece(self, i: int) -> str:
        """Human-readable piece for one id (for `data inspect`)."""
        return self.decode([i]) if i not in (PAD_ID, EOS_ID) else ("<pad>" if i == PAD_ID else "</s>")


class SentencePieceVocabulary(Vocabulary):
    def __init__(self, model_file: str, extra_ids: int = DEFAULT_EXTRA_IDS):
        super().__init__(extra_ids)
        if not os.path.isfile(model_file):
            raise UserError(f"SentencePiece model not found: {model_file}")
        self.model_file = model_file
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(model_file)
        except Exception as e:  # sentencepiece raises OSError/RuntimeError on a corrupt file
            raise UserError(f"cannot load SentencePiece model {model_file}: {e}") from None
        if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (PAD_ID, EOS_ID, UNK_ID):
            raise UserError(
                f"{model_file}: T5 vocabularies need pad=0 eos=1 unk=2, this model has pad={self._sp.pad_id()} "
                f"eos={self._sp.eos_id()} unk={self._sp.unk_id()} (retrain with `t5x-lite vocab train`)")

    @property
    def base_vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    def _encode_plain(self, text: str) -> list[int]:
        return list(self._sp.EncodeAsIds(text))

    def _decode_plain(self, ids: list[int]) -> str:
        return self._sp.DecodeIds(ids)

    def _decode_run(self, run: list[int], after_sentinel: bool) -> str:
        # SentencePiece drops the word-boundary space of the first piece; keep it after a sentinel so
        # "there? <extra_id_0> the dog" reads back with its spaces.
        text = self._sp.DecodeIds(run)
        if after_sentinel and self._sp.IdToPiece(run[0]).startswith("\u2581"):
            text = " " + text
        return text

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if any("<extra_id_" in t for t in texts):
            return super().encode_batch(texts)
        return [list(x) for x in self._sp.EncodeAsIds(list(texts))]   # one C++ call for the batch

    def __repr__(self) -> str:
        return f"SentencePieceVocabulary({self.model_file!r}, extra_ids={self.extra_ids})"


class ByteVocabulary(Vocabulary):
    """ByT5: id = byte + 3; invalid UTF-8 on decode is replaced (U+FFFD), as ByT5 does."""

    OFFSET = 3

    def __init__(self, extra_ids: int = DEFAULT_EXTRA_IDS):
        super().__init__(extra_ids)

    @property
    def base_vocab_size(self) -> int:
        return self.OFFSET + 256

    def _encode_plain(self, text: str) -> list[int]:
        return [b + self.OFFSET for b in text.encode("utf-8")]

    def _decode_plain(self, ids: list[int]) -> str:
        return bytes(i - self.OFFSET for i in ids if i >= self.OFFSET).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"ByteVocabulary(extra_ids={self.extra_ids})"


def builtin_spm_path() -> str:
    return os.path.join(BUILTIN_DIR, "spm.model")


def vocabulary_fingerprint(vocab: Vocabulary) -> str:
    """A short content hash: the SentencePiece model file's bytes (or the byte scheme) plus the
    number of extra ids.  Stored in checkpoints beside the vocabulary *spec*, because a spec such
    as "builtin" or "spm:PATH" names a file whose content can change under a trained checkpoint."""
    h = hashlib.sha256()
    if isinstance(vocab, SentencePieceVocabulary):
        with open(vocab.model_file, "rb") as f:
            h.update(f.read())
    else:
        h.update(type(vocab).__name__.encode())
    h.update(f":{vocab.extra_ids}".encode())
    return h.hexdigest()[:16]


def checkpoint_vocabulary(config: dict, override_spec: str | None = None) -> Vocabulary | None:
    """The vocabulary a checkpoint's config names (or `override_spec`), or None if it has none.
    If the checkpoint recorded a fingerprint and the file the spec resolves to today differs,
    that is a clear error instead of silently decoding ids with the wrong pieces."""
    spec = override_spec or config.get("vocabulary")
    if not spec:
        return None
    vocab = get_vocabulary(spec)
    saved = config.get("vocabulary_fingerprint")
    if saved and not override_spec and vocabulary_fingerprint(vocab) != saved:
        raise UserError(f"the checkpoint was trained with a different {spec!r} vocabulary file than this "
                        f"installation has (fingerprint {saved} vs {vocabulary_fingerprint(vocab)}); pass "
                        "--vocabulary with the original model file")
    return vocab


@functools.lru_cache(maxsize=32)
def get_vocabulary(spec: str) -> Vocabulary:
    """"builtin" | "byte" | "byte:N" | "spm:PATH" | "spm:PATH:N"  (N = number of extra ids, default 100)."""
    if not isinstance(spec, str) or not spec:
        raise UserError(f"vocabulary spec must be a non-empty string, got {spec!r}")
    if spec == "builtin":
        vocab: Vocabulary = SentencePieceVocabulary(builtin_spm_path(), DEFAULT_EXTRA_IDS)
    elif spec == "byte" or spec.startswith("byte:"):
        vocab = ByteVocabulary(_parse_extra(spec[5:], spec) if spec != "byte" else DEFAULT_EXTRA_IDS)
    elif spec.startswith("spm:"):
        rest = spec[4:]
        path, extra = rest, DEFAULT_EXTRA_IDS
        head, _, tail = rest.rpartition(":")
        if head and tail.isdigit():
            path, extra = head, int(tail)
        vocab = SentencePieceVocabulary(os.path.expanduser(path), extra)
    else:
        raise UserError(f"unknown vocabulary spec {spec!r}: use 'builtin', 'byte', 'byte:N', 'spm:PATH' or "
                        "'spm:PATH:N' (N extra ids)")
    return vocab


def _parse_extra(s: str, spec: str) -> int:
    if not s.isdigit():
        raise UserError(f"bad number of extra ids in vocabulary spec {spec!r}")
    return int(s)
