"""Local downstream stand-ins, registered as tasks with T5-style prefixes.

The data comes from `t5x-lite data build-local` (t5x_lite/builders/local.py), which writes TFDS
array_record datasets into $T5X_LITE_DATA_DIR or ~/.cache/t5x_lite/local_tfds; these tasks read
from the same default (`Task.with_data_dir(dir)` / `--data-dir` for another place).

  local_translate_en_de/_fr/_ro  "translate English to German: <msgid>" -> <msgstr>      SacreBLEU
  local_summarize_debian         "summarize: <long description>" -> <synopsis>          ROUGE-2-F
  local_debian_section           "section description: ... synopsis: ..." -> "libs"     accuracy, macro F1
  local_wordnet_lexname          "lexname gloss: <gloss>" -> "noun.animal"               accuracy, macro F1
  local_qa_wordnet               "question: ... context: ..." -> definition span         EM, F1
                                 (SEMI-SYNTHETIC: real WordNet contexts, templated questions)

The same command builds an English pre-training corpus (builders/local_corpus.py, no WordNet or
Debian descriptions in it); `local_corpus_spec()` is its task spec, "jsonl:<dir>/corpus-*.jsonl.gz".
"""

from __future__ import annotations

import json
import os

from t5x_lite.data.sources import TfdsSource
from t5x_lite.data.tasks import TaskRegistry
from t5x_lite.tasks import metrics as M
from t5x_lite.tasks import postprocessors as P
from t5x_lite.tasks.downstream import (LANGUAGE_NAMES, glue_text, squad_text, summarize_text, text_task,
                                       translate_text)

LOCAL_VERSION = "1.0.0"

# WordNet 3.0 lexicographer files, by number (lexnames(5WN)); the labels of local_wordnet_lexname.
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl")

# Debian bookworm archive sections (main), the labels of local_debian_section.
DEBIAN_SECTIONS = (
    "admin", "cli-mono", "comm", "database", "debug", "devel", "doc", "editors", "education",
    "electronics", "embedded", "fonts", "games", "gnome", "gnu-r", "gnustep", "golang", "graphics",
    "hamradio", "haskell", "httpd", "interpreters", "introspection", "java", "javascript", "kde",
    "kernel", "libdevel", "libs", "lisp", "localization", "mail", "math", "metapackages", "misc",
    "net", "news", "ocaml", "oldlibs", "otherosfs", "perl", "php", "python", "ruby", "rust",
    "science", "shells", "sound", "tasks", "tex", "text", "utils", "vcs", "video", "web", "x11",
    "xfce", "zope")


def default_data_dir() -> str:
    """$T5X_LITE_DATA_DIR, else ~/.cache/t5x_lite/local_tfds: where the local tasks read and
    `t5x-lite data build-local` writes."""
    return os.environ.get("T5X_LITE_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "t5x_lite", "local_tfds")


LOCAL_CORPUS_VERSION = "1.0.0"


def local_corpus_dir(data_dir: str | None = None) -> str:
    """Where `t5x-lite data build-local --only local_corpus` writes the pre-training corpus."""
    return os.path.join(data_dir or default_data_dir(), "local_corpus", LOCAL_CORPUS_VERSION)


def local_corpus_manifest(data_dir: str | None = None) -> dict | None:
    """The corpus's manifest.json (sources, licenses, counts), or None when it is not built."""
    try:
        with open(os.path.join(local_corpus_dir(data_dir), "manifest.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def local_corpus_spec(data_dir: str | None = None) -> str | None:
    """The task spec "jsonl:<dir>/corpus-*.jsonl.gz" (for get_task_or_mixture / --task: span corruption
    on the corpus; append ";objective=prefix_lm" etc.) when the corpus is built, else None."""
    if local_corpus_manifest(data_dir) is None:
        return None
    return "jsonl:" + os.path.join(local_corpus_dir(data_dir), "corpus-*.jsonl.gz")


class LocalTfdsSource(TfdsSource):
    """A dataset of `t5x-lite data build-local`: data_dir None means `default_data_dir()` at read
    time (so $T5X_LITE_DATA_DIR set after import counts), and a dataset that is not there says
    which command builds it."""

    def __init__(self, name, data_dir=None, splits=("train", "validation"), split_map=None):
        self._dir = data_dir
        super().__init__(name, data_dir, splits, split_map)

    @property
    def data_dir(self) -> str:
        return self._dir or default_data_dir()

    @data_dir.setter
    def data_dir(self, value):
        self._dir = value

    def missing_hint(self) -> str:
        out = "" if os.path.abspath(self.data_dir) == os.path.abspath(default_data_dir()) else f" --out {self.data_dir}"
        return f"build it with `t5x-lite data build-local --only {self.name.split(':')[0]}{out}`"


def _source(name: str, data_dir: str | None = None) -> TfdsSource:
    return LocalTfdsSource(f"{name}:{LOCAL_VERSION}", data_dir=data_dir, splits=("train", "validation"))


def local_tasks(vocabulary="builtin", data_dir: str | None = None, suffix: str = "") -> list:
    """The local tasks with a given vocabulary (spec string or Vocabulary) and data_dir.

    The registered defaults use the "builtin" vocabulary; pass e.g. "byte" or "spm:PATH" (and a
    name suffix) to register variants for a model trained with another vocabulary.
    """
    tasks = []
    for lang in ("de", "fr", "ro"):
        name = f"local_translate_en_{lang}"
        tasks.append(text_task(
            name + suffix, _source(name, data_dir), translate_text("en", lang), [M.bleu],
            vocabulary=vocabulary,
            description=f"English -> {LANGUAGE_NAMES[lang]} UI strings from gettext catalogs "
                        "(split by catalog); SacreBLEU intl/exp (the paper's EnDe/EnFr/EnRo stand-in)"))
    tasks.append(text_task(
        "local_summarize_debian" + suffix, _source("local_summarize_debian", data_dir),
        summarize_text("description", "synopsis"), [M.rouge], vocabulary=vocabulary,
        description="Debian package long description -> synopsis; ROUGE-2-F (the paper's CNN/DM stand-in)"))
    tasks.append(text_task(
        "local_debian_section" + suffix, _source("local_debian_section", data_dir),
        glue_text("section", DEBIAN_SECTIONS, ("description", "synopsis")), [M.accuracy_and_macro_f1],
        P.make_label_postprocessor(DEBIAN_SECTIONS), vocabulary=vocabulary,
        description="Debian package description -> archive section (60 classes); accuracy, macro F1"))
    tasks.append(text_task(
        "local_wordnet_lexname" + suffix, _source("local_wordnet_lexname", data_dir),
        glue_text("lexname", WORDNET_LEXNAMES, ("gloss",)), [M.accuracy_and_macro_f1],
        P.make_label_postprocessor(WORDNET_LEXNAMES), vocabulary=vocabulary,
        description="WordNet 3.0 gloss -> lexicographer category (45 classes); accuracy, macro F1"))
    tasks.append(text_task(
        "local_qa_wordnet" + suffix, _source("local_qa_wordnet", data_dir), squad_text, [M.squad],
        P.squad_answers, vocabulary=vocabulary,
        description="SEMI-SYNTHETIC extractive QA: real WordNet entries as contexts, templated "
                    "questions 'What does <word> mean as a <pos>?'; EM/F1 (the paper's SQuAD stand-in)"))
    return tasks


LOCAL_TASK_NAMES = (
    "local_translate_en_de", "local_translate_en_fr", "local_translate_en_ro", "local_summarize_debian",
    "local_debian_section", "local_wordnet_lexname", "local_qa_wordnet")

if "local_translate_en_de" not in TaskRegistry:
    for _task in local_tasks():
        TaskRegistry.add(_task)
