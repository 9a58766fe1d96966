"""Sources over the files people actually have, read without TensorFlow.

  TableSource        rows of CSV / TSV (a header row), JSONL or Parquet files: split -> glob(s)
  C4JsonSource       allenai/c4 json.gz shards ("text" of each line, held as one str per document)
  FilesOrTfdsSource  a T5 task's TFDS dataset, or the same data in Hugging Face's file layout under the
                     same TFDS data dir: allenai/c4 json.gz shards, GLUE / SuperGLUE parquet exports

Every source loads a split on first use and raises a one-line UserError naming the file for a missing
file, a missing column or field, a file that is not what its name says (a Git LFS pointer included) and
an empty split.  Parquet is read with pyarrow, CSV/TSV with python's csv module.
"""

from __future__ import annotations

import csv
import difflib
import glob
import gzip
import lzma
import os
import sys
from typing import Mapping, Sequence

from t5x_lite.data.sources import DataSource, TfdsSource, _expand, _Rows, iter_jsonl
from t5x_lite.errors import UserError

TABLE_KINDS = ("csv", "tsv", "jsonl", "parquet")
_LFS_MAGIC = b"version https://git-lfs"


def lfs_hint(path: str) -> str:
    """' (...)' when `path` is a Git LFS pointer (a clone without `git lfs pull`), else ''."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LFS_MAGIC))
    except OSError:
        return ""
    if head == _LFS_MAGIC:
        return " (it is a Git LFS pointer, not the data: run `git lfs pull` in its repository)"
    return ""


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _missing_field(path: str, field: str, have: Sequence[str], what: str = "column") -> UserError:
    shown = ", ".join(repr(h) for h in list(have)[:20]) or "none"
    return UserError(f"{path}: no {what} {field!r}{_did_you_mean(field, have)} ({what}s: {shown})")


def _open_csv(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_csv(path: str, fields: Sequence[str] | None, delimiter: str = ",") -> list[dict]:
    """Rows of a CSV/TSV file with a header row (python's csv module, quoted fields allowed) as dicts
    of strings; with `fields`, only those columns (each must be in the header)."""
    csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))   # long documents: the default cap is 128 KiB a field
    rows: list[dict] = []
    reader = None
    try:
        with _open_csv(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path}: empty file (a {'TSV' if delimiter == chr(9) else 'CSV'} file needs a "
                                f"header row naming its columns){lfs_hint(path)}")
            header = [h.strip() for h in header]
            keep = list(fields) if fields else header
            for name in keep:
                if name not in header:
                    raise _missing_field(path, name, header)
            index = [header.index(name) for name in keep]
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue   # blank line
                if len(row) != len(header):
                    raise UserError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}"
                                    + (" (a TSV file? use tsv:)" if delimiter == "," and "\t" in row[0] else ""))
                rows.append({name: row[i] for name, i in zip(keep, index)})
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        line = f":{reader.line_num}" if reader is not None else ""
        raise UserError(f"{path}{line}: not valid CSV ({e})") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e}{lfs_hint(path)}") from None
    return rows


def read_jsonl_records(path: str, fields: Sequence[str] | None) -> list[dict]:
    """The JSON objects of a JSONL file (.gz/.xz too); with `fields`, only those keys (each must be
    in every record)."""
    rows: list[dict] = []
    for n, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
        if fields:
            for name in fields:
                if name not in record:
                    raise UserError(f"{path}:{n}: record has no field {name!r}{_did_you_mean(name, record)} "
                                    f"(fields: {', '.join(repr(k) for k in list(record)[:20])})")
            record = {name: record[name] for name in fields}
        rows.append(record)
    return rows


def read_parquet(path: str, fields: Sequence[str] | None = None) -> list[dict]:
    """The rows of a Parquet file as python dicts (pyarrow; structs become dicts, lists lists); with
    `fields`, only those columns."""
    import pyarrow.parquet as pq   # lazy: pyarrow is large and only parquet files need it
    if not os.path.isfile(path):
        raise UserError(f"input file not found: {path}")
    try:
        names = pq.read_schema(path).names
        for name in fields or ():
            if name not in names:
                raise _missing_field(path, name, names)
        return pq.read_table(path, columns=list(fields) if fields else None).to_pylist()
    except UserError:
        raise
    except Exception as e:   # pyarrow raises ArrowInvalid / OSError for a file that is not Parquet
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"cannot read {path} as Parquet: {type(e).__name__}: {first}{lfs_hint(path)}") from None


def read_table(path: str, kind: str, fields: Sequence[str] | None = None) -> list[dict]:
    if kind == "csv":
        return read_csv(path, fields, ",")
    if kind == "tsv":
        return read_csv(path, fields, "\t")
    if kind == "jsonl":
        return read_jsonl_records(path, fields)
    if kind == "parquet":
        return read_parquet(path, fields)
    raise UserError(f"unknown table kind {kind!r}; one of {', '.join(TABLE_KINDS)}")


class TableSource(DataSource):
    """split -> file pattern(s) of one kind (csv, tsv, jsonl, parquet).  Examples are the rows as
    dicts; with `fields` only those columns are read (each one must exist), and `rename` maps a
    column to the key the task reads (e.g. {"body": "text"})."""

    def __init__(self, split_to_patterns: Mapping[str, str | Sequence[str]], kind: str,
                 fields: Sequence[str] | None = None, rename: Mapping[str, str] | None = None):
        super().__init__()
        if kind not in TABLE_KINDS:
            raise UserError(f"unknown table kind {kind!r}; one of {', '.join(TABLE_KINDS)}")
        self.split_to_patterns, self.kind = dict(split_to_patterns), kind
        self.fields = list(dict.fromkeys(fields)) if fields else None
        self.rename = dict(rename or {})
        cols = f" columns {', '.join(self.fields)}" if self.fields else ""
        self.description = f"{kind.upper()} {self.split_to_patterns}{cols}"

    @property
    def splits(self):
        return tuple(self.split_to_patterns)

    def _load(self, split):
        rows: list[dict] = []
        for path in _expand(self.split_to_patterns[split]):
            rows.extend(read_table(path, self.kind, self.fields))
        if self.rename:
            rows = [{self.rename.get(k, k): v for k, v in r.items()} for r in rows]
        return rows

    def __repr__(self):
        return f"TableSource({self.kind}, {self.split_to_patterns})"


def read_c4_texts(files: Sequence[str], field: str = "text") -> list[str]:
    """The `field` of every line of allenai/c4 json.gz shards, in file order."""
    texts: list[str] = []
    for path in files:
        try:
            for n, record in iter_jsonl(path):
                if not isinstance(record, dict) or field not in record:
                    raise UserError(f"{path}:{n}: record has no field {field!r}")
                texts.append(str(record[field]))
        except UserError as e:
            hint = lfs_hint(path)
            raise UserError(f"{e}{hint}" if hint and hint not in str(e) else str(e)) from None
    return texts


class C4JsonSource(DataSource):
    """allenai/c4 json.gz shards: split -> pattern(s); each line {"text", "timestamp", "url"} is one
    document {"text": ...}.  The texts are held in memory (one str each), so a split costs about the
    decompressed text of the shards it matches."""

    def __init__(self, split_to_patterns: Mapping[str, str | Sequence[str]], field: str = "text"):
        super().__init__()
        self.split_to_patterns, self.field = dict(split_to_patterns), field
        self.description = f"allenai/c4 json.gz {self.split_to_patterns}"

    @property
    def splits(self):
        return tuple(self.split_to_patterns)

    def _load(self, split):
        return _Rows(read_c4_texts(_expand(self.split_to_patterns[split]), self.field), "text")

    def __repr__(self):
        return f"C4JsonSource({self.split_to_patterns})"


def tfds_data_dir(data_dir: str | None = None) -> str:
    """The TFDS data dir as tfds resolves it: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


LAYOUTS = ("c4_json", "hf_parquet")


class FilesOrTfdsSource(TfdsSource):
    """A TFDS dataset (`name`, e.g. "glue/cola:2.0.0") that is read from files in Hugging Face's layout
    when they are there, under the same TFDS data dir (make_pipeline's/`data inspect`'s data_dir, else
    $TFDS_DATA_DIR, else ~/tensorflow_datasets), and from TFDS array_record as before otherwise:

      layout "c4_json":    DIR/<subdir>/c4-<split>.NNNNN-of-MMMMM.json.gz     (a clone of allenai/c4)
      layout "hf_parquet": DIR/<subdir>/<split>-NNNNN-of-MMMMM.parquet          (a clone of nyu-mll/glue,
                           or DIR/<subdir>/<split>/NNNN.parquet                  aps/super_glue, ...)

    `subdir` defaults to the TFDS name without its version ("c4/en", "glue/cola", "super_glue/wsc.fixed"),
    so both layouts sit side by side with TFDS's own DIR/glue/cola/2.0.0/.  `split_map` renames a split
    for both (glue/mnli: validation -> validation_matched)."""

    def __init__(self, name: str, data_dir: str | None = None, splits: Sequence[str] = ("train", "validation"),
                 split_map: Mapping[str, str] | None = None, *, layout: str, subdir: str | None = None):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        super().__init__(name, data_dir, splits, split_map)
        self.layout, self.subdir = layout, subdir or name.split(":")[0]
        self._reading = "<split>"
        what = "allenai/c4 json.gz" if layout == "c4_json" else "Hugging Face parquet"
        self.description = f"TFDS {name} or {what} files in <TFDS data dir>/{self.subdir}"

    def with_data_dir(self, data_dir: str | None) -> "FilesOrTfdsSource":
        return FilesOrTfdsSource(self.name, data_dir, self._splits, self.split_map, layout=self.layout,
                                 subdir=self.subdir)

    def file_dir(self) -> str:
        return os.path.join(tfds_data_dir(self.data_dir), self.subdir)

    def file_patterns(self, split: str) -> list[str]:
        s, d = self.split_map.get(split, split), self.file_dir()
        if self.layout == "c4_json":
            return [os.path.join(d, f"c4-{s}.*.json.gz"), os.path.join(d, f"c4-{s}.*.json")]
        return [os.path.join(d, f"{s}-*.parquet"), os.path.join(d, s, "*.parquet")]

    def files(self, split: str) -> list[str]:
        return sorted(p for pattern in self.file_patterns(split) for p in glob.glob(pattern))

    def missing_hint(self) -> str:
        s = self.split_map.get(self._reading, self._reading)
        example = (f"c4-{s}.00000-of-01024.json.gz, a clone of allenai/c4" if self.layout == "c4_json"
                   else f"{s}-00000-of-00001.parquet, Hugging Face's parquet export")
        return (f"nor files in {self.file_dir()} ({example}); see docs/data.md; t5x-lite never downloads "
                "datasets")

    def _load(self, split):
        files = self.files(split)
        if not files:
            self._reading = split   # for missing_hint, which TfdsSource._load calls without the split
            return super()._load(split)
        if self.layout == "c4_json":
            return _Rows(read_c4_texts(files), "text")
        rows: list[dict] = []
        for path in files:
            rows.extend(read_parquet(path))
        return rows

    def __repr__(self):
        return f"FilesOrTfdsSource({self.name!r}, data_dir={self.data_dir!r}, layout={self.layout!r})"
