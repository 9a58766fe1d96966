"""Task / Mixture and their global registries (seqio-style).

    Task(name, source, preprocessors, output_features, metric_fns=(), postprocess_fn=None)
    Mixture(name, [(task_or_name, rate), ...])       rates are relative sampling weights
    TaskRegistry.add(task) / .get(name) / .names();  MixtureRegistry likewise
    get_task_or_mixture(name)                        UserError with close matches for unknown names
    pretraining_task(name, source, objective, vocab) a task with one of preprocessors.OBJECTIVES
    task_from_spec("csv:GLOB?inputs=q&targets=a")    a task on your own files (file_tasks.py: text, jsonl,
                                                     csv, tsv, parquet; pre-training or supervised)

This module only holds the machinery: the registries start empty.  `import t5x_lite.tasks` registers
the built-in tasks (t5x_lite/tasks/builtin.py, downstream.py, local.py); `--module NAME` imports a
user's module that registers more.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Mapping, Sequence

from t5x_lite.data import file_tasks
from t5x_lite.data import preprocessors as pp
from t5x_lite.data.preprocessors import ConcatAndSplit, Feature
from t5x_lite.data.sources import DataSource, SubsetSource, TfdsSource
from t5x_lite.data.streams import ExampleStream
from t5x_lite.data.vocabularies import get_vocabulary
from t5x_lite.errors import UserError


class Task:
    def __init__(self, name: str, source: DataSource, preprocessors: Sequence, output_features: Mapping[str, Feature],
                 metric_fns: Sequence[Callable] = (), postprocess_fn: Callable | None = None, description: str = ""):
        if not name or not isinstance(name, str):
            raise UserError(f"task name must be a non-empty string, got {name!r}")
        splits = [i for i, p in enumerate(preprocessors) if isinstance(p, ConcatAndSplit)]
        if len(splits) > 1:
            raise UserError(f"task {name}: at most one ConcatAndSplit step is supported")
        self.name, self.source = name, source
        self.preprocessors = list(preprocessors)
        self.output_features = dict(output_features)
        self.metric_fns = list(metric_fns)
        self.postprocess_fn = postprocess_fn
        self.description = description or getattr(source, "description", "")

    @property
    def has_inputs(self) -> bool:
        return "inputs" in self.output_features

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.source.splits)

    @property
    def vocabulary(self):
        return self.output_features["targets"].vocabulary

    def with_max_examples(self, name: str, sizes: Mapping[str, int], seed: int = 0) -> "Task":
        """The same task, named `name`, on a fixed random subset of some splits (SubsetSource)."""
        return Task(name, SubsetSource(self.source, sizes, seed), self.preprocessors, self.output_features,
                    self.metric_fns, self.postprocess_fn, self.description)

    def with_data_dir(self, data_dir: str | None) -> "Task":
        """The same task reading its TFDS source from data_dir (other sources are returned unchanged)."""
        if data_dir is None or not isinstance(self.source, TfdsSource):
            return self
        return Task(self.name, self.source.with_data_dir(data_dir), self.preprocessors, self.output_features,
                    self.metric_fns, self.postprocess_fn, self.description)

    def get_examples(self, split: str = "train", *, seed: int = 0, shuffle: bool = False,
                     feature_lengths: Mapping[str, int] | None = None, num_epochs: int | None = 1,
                     process_index: int = 0, process_count: int = 1):
        """Iterator of preprocessed examples (before packing); it has get_state()/set_state()."""
        return ExampleStream(self, split, feature_lengths=feature_lengths or {}, seed=seed, shuffle=shuffle,
                             num_epochs=num_epochs, process_index=process_index, process_count=process_count)

    def __repr__(self):
        return f"Task({self.name!r})"


class Mixture:
    def __init__(self, name: str, tasks: Iterable[tuple["Task | str", float]], description: str = ""):
        self.name = name
        self._tasks = [(t, float(r)) for t, r in tasks]
        if not self._tasks:
            raise UserError(f"mixture {name} has no tasks")
        if any(r <= 0 for _, r in self._tasks):
            raise UserError(f"mixture {name}: rates must be positive")
        self.description = description or "mixture of " + ", ".join(
            f"{t if isinstance(t, str) else t.name}:{r:g}" for t, r in self._tasks)

    @property
    def tasks_and_rates(self) -> list[tuple[Task, float]]:
        return [(_task(t) if isinstance(t, str) else t, r) for t, r in self._tasks]

    @property
    def has_inputs(self) -> bool:
        flags = {t.has_inputs for t, _ in self.tasks_and_rates}
        if len(flags) != 1:
            raise UserError(f"mixture {self.name} mixes tasks with and without inputs")
        return flags.pop()

    @property
    def output_features(self):
        return self.tasks_and_rates[0][0].output_features

    @property
    def vocabulary(self):
        return self.tasks_and_rates[0][0].vocabulary

    def __repr__(self):
        return f"Mixture({self.name!r})"


def _unknown(kind: str, name: str, candidates: Iterable[str]) -> UserError:
    candidates = sorted(candidates)
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return UserError(f"unknown {kind} {name!r}{hint} (`t5x-lite data list` shows all {len(candidates)}; "
                     "a task defined in your own module needs `--module NAME`)")


class _Registry:
    """name -> provider.  The only global mutable state in the data package (by design)."""

    kind = "provider"

    def __init__(self):
        self._items: dict = {}

    def add(self, item, replace: bool = False):
        if item.name in self._items and not replace:
            raise UserError(f"{self.kind} {item.name!r} is already registered (pass replace=True to override)")
        other = MixtureRegistry if self is TaskRegistry else TaskRegistry
        if item.name in other._items:
            raise UserError(f"{item.name!r} is already registered as a {other.kind}")
        self._items[item.name] = item
        return item

    def get(self, name: str):
        if name not in self._items:
            raise _unknown(self.kind, name, self._items)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def remove(self, name: str) -> None:
        self._items.pop(name, None)

    def __contains__(self, name):
        return name in self._items


class _TaskRegistry(_Registry):
    kind = "task"


class _MixtureRegistry(_Registry):
    kind = "mixture"


TaskRegistry = _TaskRegistry()
MixtureRegistry = _MixtureRegistry()


def get_task_or_mixture(name: str) -> "Task | Mixture":
    """A registered task or mixture, or a task built on the fly (and registered) from a file spec
    ("text:GLOB", "jsonl:GLOB?field=body", "csv:GLOB?inputs=question&targets=answer", ...; see
    task_from_spec)."""
    if file_tasks.is_spec(name):
        known = _SPEC_TASKS.get(name)
        if known is not None and known in TaskRegistry:
            return TaskRegistry.get(known)
        if name in TaskRegistry:
            return TaskRegistry.get(name)
        task = TaskRegistry.add(task_from_spec(name))
        _SPEC_TASKS[name] = task.name
        return task
    if name in TaskRegistry:
        return TaskRegistry.get(name)
    if name in MixtureRegistry:
        return MixtureRegistry.get(name)
    kind, colon, _ = name.partition(":")
    if colon and difflib.get_close_matches(kind, file_tasks.SPEC_KINDS, n=1):
        file_tasks.parse_spec(name)   # a misspelled kind ("cvs:..."): the spec's own error, with a did-you-mean
    raise _unknown("task or mixture", name, TaskRegistry.names() + MixtureRegistry.names())


def _task(name: str) -> Task:
    """A mixture member: a registered task, or a file spec built on first use."""
    return get_task_or_mixture(name) if file_tasks.is_spec(name) else TaskRegistry.get(name)


_SPEC_TASKS: dict[str, str] = {}   # spec -> the name its task is registered under (name= option)


def pretraining_task(name: str, source: DataSource, objective: str, vocabulary, text_key: str = "text",
                     description: str = "", **objective_kw) -> Task:
    """A pre-training task on a text source with one of preprocessors.OBJECTIVES, or "bert" (MLM + NSP
    pairs, which pair each document with another: t5x_lite/data/bert.py)."""
    if objective == "bert":
        from t5x_lite.data.bert import bert_task   # lazy: data/bert.py imports this module (Task)
        return bert_task(name, source, vocabulary, text_key, description, **objective_kw)
    features = {"targets": Feature(vocabulary)}
    if objective != "full_lm":
        features = {"inputs": Feature(vocabulary), "targets": Feature(vocabulary)}
    return Task(name, source, pp.pretraining_preprocessors(objective, text_key, **objective_kw), features,
                description=description)


SPEC_OPTIONS = file_tasks.OPTIONS


def task_from_spec(spec: str) -> Task:
    """A task on your own files without writing Python (grammar: t5x_lite/data/file_tasks.py):
        text:/data/*.txt                                  span corruption, builtin vocabulary, one doc per line
        text:/data/*.txt?objective=prefix_lm&vocab=spm:/v/my.model&paragraphs=1
        jsonl:/data/*.jsonl.gz?field=body&objective=full_lm
        csv:/data/qa.csv?inputs=question&targets=answer&prefix=question:&metrics=exact_match
        parquet:?train=/d/train-*.parquet&validation=/d/dev-*.parquet&inputs=src&targets=tgt&metrics=bleu
    Splits: one pattern -> train / validation by md5 (of the text: 1.6%, like the shipped corpus; of the
    inputs of a supervised task: 10%; validation_fraction= changes it), or train=/validation=/test= files.
    The older `KIND:GLOB;option=value;...` spelling reads the same."""
    fs = file_tasks.parse_spec(spec)
    source = file_tasks.spec_source(fs)
    vocab = get_vocabulary(fs.vocab)
    if not fs.supervised:
        return pretraining_task(fs.name, source, fs.options.get("objective", "span_corruption"), vocab,
                                description=file_tasks.describe(fs, source))
    return Task(fs.name, source, file_tasks.supervised_preprocessors(fs),
                {"inputs": Feature(vocab), "targets": Feature(vocab)}, metric_fns=file_tasks.metric_fns(fs),
                postprocess_fn=file_tasks.strip_text, description=file_tasks.describe(fs, source))
