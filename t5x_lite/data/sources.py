"""Random-access data sources (grain indexes them with __len__/__getitem__).

A DataSource maps a split name to a sequence of examples (dicts).  All sources load lazily (only when a
split is first read) and raise UserError for missing files, empty splits or unknown splits.

  TextLineSource    plain text files/globs: one document per line, or blank-line separated documents
  JsonlSource       JSON lines, one field (or all fields) per example
  TfdsSource        TFDS through tfds.data_source (array_record; needs no TensorFlow)
  InMemorySource    lists of dicts (tests, small generated datasets)
  BuiltinSource     the corpus shipped in t5x_lite/data/builtin/ (WordNet glosses + Shakespeare)
"""

from __future__ import annotations

import glob as glob_lib
import gzip
import hashlib
import json
import lzma
import os
from typing import Any, Mapping, Sequence

import numpy as np

from t5x_lite.errors import UserError


class DataSource:
    """Base: subclasses implement _load(split) -> a random-access sequence of dicts."""

    description = ""

    def __init__(self):
        self._loaded: dict[str, Sequence[dict]] = {}

    @property
    def splits(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _load(self, split: str) -> Sequence[dict]:
        raise NotImplementedError

    def get(self, split: str) -> Sequence[dict]:
        if split not in self.splits:
            raise UserError(f"unknown split {split!r} for {self!r}; available: {', '.join(self.splits)}")
        if split not in self._loaded:
            data = self._load(split)
            if len(data) == 0:
                raise UserError(f"{self!r} split {split!r} is empty: no examples to read")
            self._loaded[split] = data
        return self._loaded[split]

    def num_examples(self, split: str) -> int:
        return len(self.get(split))


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _text_lines(path: str):
    """The lines of a text file (.gz/.xz too); a file that is not UTF-8 text or is damaged is a
    one-line UserError naming it."""
    try:
        with _open_text(path) as f:
            yield from f
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError, lzma.LZMAError) as e:   # a truncated or corrupt .gz/.xz, a directory, ...
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def _expand(patterns: str | Sequence[str]) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: list[str] = []
    for p in patterns:
        matched = sorted(glob_lib.glob(os.path.expanduser(p)))
        if not matched:
            raise UserError(f"no file matches {p!r}")
        files.extend(matched)
    return files


class _Rows:
    """A list of strings presented as {field: string} dicts without copying."""

    def __init__(self, texts: list[str], field: str):
        self.texts, self.field = texts, field

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {self.field: self.texts[i]}


def read_documents(files: Sequence[str], blank_line_separated: bool = False) -> list[str]:
    docs: list[str] = []
    for path in files:
        if blank_line_separated:
            current: list[str] = []
            for line in _text_lines(path):
                line = line.strip()
                if line:
                    current.append(line)
                elif current:
                    docs.append(" ".join(current))
                    current = []
            if current:
                docs.append(" ".join(current))
        else:
            docs.extend(line.rstrip("\n") for line in _text_lines(path) if line.strip())
    return docs


class TextLineSource(DataSource):
    """split -> file pattern(s); every non-empty line (or blank-line separated paragraph) is a document
    {field: text}.  .gz and .xz files are read transparently."""

    def __init__(self, split_to_patterns: Mapping[str, str | Sequence[str]], field: str = "text",
                 blank_line_separated: bool = False):
        super().__init__()
        self.split_to_patterns, self.field, self.blank = dict(split_to_patterns), field, blank_line_separated
        self.description = f"text files {self.split_to_patterns}"

    @property
    def splits(self):
        return tuple(self.split_to_patterns)

    def _load(self, split):
        return _Rows(read_documents(_expand(self.split_to_patterns[split]), self.blank), self.field)

    def __repr__(self):
        return f"TextLineSource({self.split_to_patterns})"


class JsonlSource(DataSource):
    """split -> JSONL pattern(s).  With `field`, examples are {rename or field: record[field]}; without,
    the whole record."""

    def __init__(self, split_to_patterns: Mapping[str, str | Sequence[str]], field: str | None = None,
                 rename: str | None = None):
        super().__init__()
        self.split_to_patterns, self.field, self.rename = dict(split_to_patterns), field, rename or field
        self.description = f"JSONL {self.split_to_patterns}" + (f" field {field!r}" if field else "")

    @property
    def splits(self):
        return tuple(self.split_to_patterns)

    def _load(self, split):
        rows: list[Any] = []
        for path in _expand(self.split_to_patterns[split]):
            for n, record in iter_jsonl(path):
                if self.field is not None:
                    if not isinstance(record, dict) or self.field not in record:
                        raise UserError(f"{path}:{n}: record has no field {self.field!r}")
                    rows.append(record[self.field])
                else:
                    rows.append(record)
        if self.field is not None:
            return _Rows(rows, self.rename)
        return rows

    def __repr__(self):
        return f"JsonlSource({self.split_to_patterns}, field={self.field!r})"


def iter_jsonl(path: str):
    """(line number, parsed value) for each non-blank line of a JSONL file (.gz/.xz too);
    a missing file or a line that is not JSON is a one-line UserError naming path:line."""
    if not os.path.isfile(path):
        raise UserError(f"input file not found: {path}")
    for n, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: invalid JSON ({e.msg})") from None
        yield n, value


class InMemorySource(DataSource):
    def __init__(self, split_to_examples: Mapping[str, Sequence[dict]], description: str = "in-memory examples"):
        super().__init__()
        self.split_to_examples = {k: list(v) for k, v in split_to_examples.items()}
        self.description = description

    @property
    def splits(self):
        return tuple(self.split_to_examples)

    def _load(self, split):
        return self.split_to_examples[split]

    def __repr__(self):
        return f"InMemorySource({ {k: len(v) for k, v in self.split_to_examples.items()} })"


class _TfdsRows:
    """tfds.data_source rows -> dicts of python values (bytes text decoded to str)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        row = self.ds[i]
        return {k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in row.items()}


class TfdsSource(DataSource):
    """A TFDS dataset prepared in array_record format, read with tfds.data_source (no TensorFlow).
    `data_dir` None means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR)."""

    def __init__(self, name: str, data_dir: str | None = None, splits: Sequence[str] = ("train", "validation"),
                 split_map: Mapping[str, str] | None = None):
        super().__init__()
        self.name, self.data_dir = name, data_dir
        self._splits = tuple(splits)
        self.split_map = dict(split_map or {})
        self.description = f"TFDS {name}"

    @property
    def splits(self):
        return self._splits

    def with_data_dir(self, data_dir: str | None) -> "TfdsSource":
        return type(self)(self.name, data_dir, self._splits, self.split_map)

    def missing_hint(self) -> str:
        """What to do when the dataset cannot be opened (a subclass names the command that builds it)."""
        return "prepare it in array_record format first; t5x-lite never downloads datasets"

    def _load(self, split):
        import tensorflow_datasets as tfds   # lazy: keeps `import t5x_lite.data` (and the CLIs) fast
        try:
            ds = tfds.data_source(self.name, split=self.split_map.get(split, split), data_dir=self.data_dir,
                                  download=False)
        except Exception as e:  # tfds raises AssertionError/DatasetNotFoundError/... for missing data
            where = self.data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
            raise UserError(f"cannot open TFDS dataset {self.name} split {split} in {where}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                            f"({self.missing_hint()})") from None
        return _TfdsRows(ds)

    def __repr__(self):
        return f"TfdsSource({self.name!r}, data_dir={self.data_dir!r})"


def in_validation(text: str, fraction: float = 4 / 256) -> bool:
    """The deterministic validation rule of the shipped corpus and of HashSplitSource: md5(text) read as a
    number in [0, 1) is below `fraction` (default 4/256 = 1.6%, i.e. md5(text)[0] < 4); stable when
    documents are added, removed or reordered."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:4], "big") < fraction * 2 ** 32


class HashSplitSource(DataSource):
    """Derives train/validation splits from one split of another source with `in_validation(text)` on
    the example's `field` (a `validation_fraction` of them go to validation, 1.6% by default)."""

    def __init__(self, base: DataSource, base_split: str, field: str = "text", validation_fraction: float = 4 / 256):
        super().__init__()
        if not 0 < validation_fraction < 1:
            raise UserError(f"validation fraction must be in (0, 1), got {validation_fraction}")
        self.base, self.base_split, self.field, self.fraction = base, base_split, field, float(validation_fraction)
        rule = ("md5(text)[0] < 4 (1.6%)" if self.fraction == 4 / 256
                else f"md5({field}) < {self.fraction:g} ({100 * self.fraction:g}%)")
        self.description = f"{base.description}, validation = {rule}"

    @property
    def splits(self):
        return ("train", "validation")

    def _load(self, split):
        rows = self.base.get(self.base_split)
        want_validation = split == "validation"
        out = [rows[i] for i in range(len(rows))
               if in_validation(str(rows[i][self.field]), self.fraction) == want_validation]
        if not out:
            raise UserError(f"{self!r}: none of the {len(rows)} examples fell in split {split!r} (validation "
                            f"takes the {100 * self.fraction:g}% whose md5({self.field}) is lowest); add examples "
                            "or give each split its own files")
        return out

    def __repr__(self):
        return f"HashSplitSource({self.base!r})"


class SubsetSource(DataSource):
    """A fixed random subset of some splits of another source: `sizes` maps split -> number of
    examples (low-resource fine-tuning).  The subset depends only on `seed` and the base split's
    length, so every run (and every cell of a study) sees the same examples."""

    def __init__(self, base: DataSource, sizes: Mapping[str, int], seed: int = 0):
        super().__init__()
        self.base, self.sizes, self.seed = base, dict(sizes), int(seed)
        for split, n in self.sizes.items():
            if int(n) <= 0:
                raise UserError(f"subset size for split {split!r} must be positive, got {n}")
        caps = ", ".join(f"{k}: {v}" for k, v in sorted(self.sizes.items()))
        self.description = f"{base.description} (random subset {caps}, seed {self.seed})"

    @property
    def splits(self):
        return self.base.splits

    def _load(self, split):
        rows = self.base.get(split)
        n = self.sizes.get(split)
        if n is None or n >= len(rows):
            return rows
        keep = np.sort(np.random.default_rng(self.seed).permutation(len(rows))[:int(n)])
        return [rows[int(i)] for i in keep]

    def __repr__(self):
        return f"SubsetSource({self.base!r}, {self.sizes})"


BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")


class BuiltinSource(DataSource):
    """The shipped corpus: ~120k documents (WordNet 3.0 glosses + Shakespeare), validation ~1.6%."""

    description = "shipped corpus: WordNet 3.0 glosses + Shakespeare (t5x_lite/data/builtin)"

    @property
    def splits(self):
        return ("train", "validation")

    def _load(self, split):
        path = os.path.join(BUILTIN_DIR, f"{split}.txt.xz")
        if not os.path.isfile(path):
            raise UserError(f"the builtin corpus is missing ({path}); rebuild it with tools/build_builtin_corpus.py")
        return _Rows(read_documents([path]), "text")

    def __repr__(self):
        return "BuiltinSource()"
