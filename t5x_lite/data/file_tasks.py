"""Task specs: a task named after your files, for pre-training or for supervised input -> target pairs.

    KIND:GLOB[?option=value&option=value...]        KIND: text, jsonl, csv, tsv, parquet

Pre-training (no inputs=/targets=): the documents of text files (one per line, or blank-line separated
with paragraphs=1) or one field of a table (field=, default "text") under an objective (objective=,
default span_corruption).

Supervised (inputs=FIELD&targets=FIELD, jsonl/csv/tsv/parquet): each row is one example, inputs =
prefix + row[inputs], targets = row[targets]; metrics= (names joined by +) scores `t5x-lite eval`.

Splits: one GLOB -> train / validation by md5 of the document (pre-training: 1.6%) or of the inputs
field (supervised: 10%), `validation_fraction=` to change it; or train=GLOB&validation=GLOB&test=GLOB
(the leading GLOB, if given, is the train split).  The older spelling KIND:GLOB;option=value;... reads
the same.  This module parses specs and builds their sources and preprocessors; t5x_lite.data.tasks
turns them into a Task (task_from_spec) and registers it (get_task_or_mixture).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Callable

from t5x_lite.data import preprocessors as pp
from t5x_lite.data.file_sources import TableSource
from t5x_lite.data.sources import DataSource, HashSplitSource, TextLineSource
from t5x_lite.errors import UserError

SPEC_KINDS = ("text", "jsonl", "csv", "tsv", "parquet")
SPLIT_OPTIONS = ("train", "validation", "test")
COMMON_OPTIONS = ("vocab", "name", "validation_fraction") + SPLIT_OPTIONS
PRETRAINING_OPTIONS = ("objective", "field", "paragraphs")
SUPERVISED_OPTIONS = ("inputs", "targets", "prefix", "metrics")
OPTIONS = COMMON_OPTIONS + PRETRAINING_OPTIONS + SUPERVISED_OPTIONS
DEFAULT_METRICS = ("accuracy",)
PRETRAINING_VALIDATION_FRACTION = 4 / 256    # the shipped corpus's rule, md5(text)[0] < 4
SUPERVISED_VALIDATION_FRACTION = 0.1

# Metric name -> fn(targets, predictions) -> {name: score}.  Metrics live in t5x_lite.tasks (a layer to
# the right of this one), which fills this table when it is imported (tasks/builtin.py); every CLI that
# takes a task name imports it.
METRICS: dict[str, Callable] = {}

_KEY = r"[A-Za-z_][A-Za-z0-9_]*="
_OPTIONS_START = re.compile(rf";|\?(?={_KEY})")       # ";" always; "?" only before key= (a glob may hold "?")
_OPTION_SEP = re.compile(rf";|&(?={_KEY})")           # ";" always; "&" only before key=
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def is_spec(name: str) -> bool:
    """True for a name that is a file spec ("csv:/data/*.csv?inputs=q&targets=a"), not a registered name."""
    kind, sep, _ = name.partition(":")
    return bool(sep) and kind in SPEC_KINDS


@dataclasses.dataclass(frozen=True)
class FileSpec:
    spec: str
    kind: str
    splits: dict                  # split -> glob
    hash_split: bool              # one glob, split into train/validation by md5
    options: dict                 # every option given, as strings

    @property
    def supervised(self) -> bool:
        return "inputs" in self.options

    @property
    def name(self) -> str:
        return self.options.get("name") or self.spec

    @property
    def vocab(self) -> str:
        return self.options.get("vocab", "builtin")

    @property
    def validation_fraction(self) -> float:
        default = SUPERVISED_VALIDATION_FRACTION if self.supervised else PRETRAINING_VALIDATION_FRACTION
        raw = self.options.get("validation_fraction")
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value < 1:
            raise UserError(f"validation_fraction={raw!r} in task spec {self.spec!r}: need a number in (0, 1), "
                            "e.g. 0.1")
        return value


def _bad(spec: str, message: str) -> UserError:
    return UserError(f"task spec {spec!r}: {message}")


def parse_spec(spec: str) -> FileSpec:
    """KIND:GLOB?key=value&key=value (or KIND:GLOB;key=value;...) -> FileSpec; every mistake is a
    one-line UserError naming it (unknown kinds and option names with a did-you-mean)."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in SPEC_KINDS:
        close = difflib.get_close_matches(kind, SPEC_KINDS, n=1)
        hint = f"; did you mean {close[0]}:?" if close else ""
        raise UserError(f"task spec {spec!r}: unknown kind {kind!r}{hint} (kinds: {', '.join(SPEC_KINDS)})")
    m = _OPTIONS_START.search(rest)
    pattern, option_text = (rest[:m.start()], rest[m.end():]) if m else (rest, "")
    options: dict[str, str] = {}
    for item in (_OPTION_SEP.split(option_text) if option_text else []):
        key, eq, value = item.partition("=")
        if not eq or key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _bad(spec, f"bad option {item!r}{hint} (options: {', '.join(OPTIONS)})")
        if key in options:
            raise _bad(spec, f"option {key!r} is given twice")
        options[key] = value
    pattern = pattern.strip()
    splits = {s: options[s] for s in SPLIT_OPTIONS if s in options}
    if pattern and "train" in splits:
        raise _bad(spec, "give the train files once: either KIND:GLOB or train=GLOB")
    hash_split = bool(pattern) and not splits
    if pattern:
        splits = {"train": pattern, **splits}
    if not splits:
        raise _bad(spec, "no file pattern (KIND:GLOB, or train=GLOB / validation=GLOB / test=GLOB)")
    for split, glob in splits.items():
        if not glob.strip():
            raise _bad(spec, f"{split}= has no file pattern")
    if "validation_fraction" in options and not hash_split:
        raise _bad(spec, "validation_fraction= splits a single file pattern; with train=/validation= files "
                   "the splits are given")
    fs = FileSpec(spec, kind, splits, hash_split, options)
    _check_options(fs)
    return fs


def _check_options(fs: FileSpec) -> None:
    o, spec = fs.options, fs.spec
    if "name" in o and not _NAME.match(o["name"]):
        raise _bad(spec, f"name={o['name']!r} must be letters, digits, '_', '.' or '-' (it names output "
                   "directories and metrics)")
    if ("inputs" in o) != ("targets" in o):
        raise _bad(spec, "supervised tasks need both inputs=FIELD and targets=FIELD")
    if fs.supervised:
        if fs.kind == "text":
            raise _bad(spec, "text: files have no fields; inputs=/targets= need jsonl:, csv:, tsv: or parquet:")
        extra = [k for k in PRETRAINING_OPTIONS if k in o]
        if extra:
            raise _bad(spec, f"{', '.join(extra)} is a pre-training option; a task with inputs=/targets= "
                       "trains on the pairs as they are")
        if not o["inputs"] or not o["targets"]:
            raise _bad(spec, "inputs= and targets= need a field name")
        metric_names(fs)
    else:
        extra = [k for k in SUPERVISED_OPTIONS if k in o]
        if extra:
            raise _bad(spec, f"{', '.join(extra)} needs a supervised task (inputs=FIELD&targets=FIELD)")
        if fs.kind == "text" and "field" in o:
            raise _bad(spec, "field= reads a column of a table; text: files are one document per line")
        if fs.kind != "text" and "paragraphs" in o:
            raise _bad(spec, "paragraphs= applies to text: files only")
        if o.get("paragraphs", "0") not in ("0", "1", "true", "false"):
            raise _bad(spec, f"paragraphs={o['paragraphs']!r}: use 1 or 0")
        if o.get("objective", "span_corruption") not in pp.OBJECTIVES:
            close = difflib.get_close_matches(o["objective"], pp.OBJECTIVES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _bad(spec, f"unknown objective {o['objective']!r}{hint} (objectives: {', '.join(pp.OBJECTIVES)})")
    fs.validation_fraction   # noqa: B018  (validates the value)


def metric_names(fs: FileSpec) -> list[str]:
    raw = fs.options.get("metrics")
    names = [n.strip() for n in re.split(r"[+,]", raw) if n.strip()] if raw is not None else list(DEFAULT_METRICS)
    if not names:
        raise _bad(fs.spec, "metrics= names no metric")
    known = sorted(METRICS) or ["accuracy", "bleu", "exact_match", "macro_f1", "rouge"]
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _bad(fs.spec, f"unknown metric {n!r}{hint} (metrics: {', '.join(known)}; join several with +)")
    return names


def metric_fns(fs: FileSpec) -> list[Callable]:
    names = metric_names(fs)
    if not METRICS:
        raise UserError(f"task spec {fs.spec!r}: metrics are registered by `import t5x_lite.tasks`; import it "
                        "before building a supervised task")
    return [METRICS[n] for n in names]


def spec_source(fs: FileSpec) -> DataSource:
    """The source of a spec: the files per split, or one pattern split by md5 of the text / inputs."""
    splits = {"all": fs.splits["train"]} if fs.hash_split else fs.splits
    o = fs.options
    if fs.kind == "text":
        base: DataSource = TextLineSource(splits, blank_line_separated=o.get("paragraphs", "0") in ("1", "true"))
        key = "text"
    elif fs.supervised:
        base = TableSource(splits, fs.kind, fields=[o["inputs"], o["targets"]])
        key = o["inputs"]
    else:
        field = o.get("field", "text")
        base = TableSource(splits, fs.kind, fields=[field], rename={field: "text"})
        key = "text"
    if fs.hash_split:
        return HashSplitSource(base, "all", field=key, validation_fraction=fs.validation_fraction)
    return base


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def text_pair(inputs_field: str, targets_field: str, prefix: str = ""):
    """row -> {"inputs": prefix + row[inputs], "targets": row[targets]} (numbers and labels as text)."""
    if prefix and not prefix[-1].isspace():
        prefix += " "

    def fmt(ex, ctx):
        return {"inputs": prefix + _text(ex[inputs_field]).strip(), "targets": _text(ex[targets_field]).strip()}

    fmt.__name__ = f"text_pair({inputs_field!r} -> {targets_field!r}, prefix={prefix!r})"
    return fmt


def strip_text(text, example=None, is_target=False) -> str:
    """The postprocessor of supervised file tasks: the decoded text without surrounding whitespace."""
    return _text(text).strip()


def supervised_preprocessors(fs: FileSpec) -> list:
    o = fs.options
    return [text_pair(o["inputs"], o["targets"], o.get("prefix", "")), pp.tokenize, pp.append_eos_after_trim]


def describe(fs: FileSpec, source: DataSource) -> str:
    if fs.supervised:
        o = fs.options
        prefix = f" with prefix {o['prefix']!r}" if o.get("prefix") else ""
        return (f"{o['inputs']} -> {o['targets']}{prefix}; {', '.join(metric_names(fs))}; {source.description}")
    return f"{fs.options.get('objective', 'span_corruption')} on {source.description}"
