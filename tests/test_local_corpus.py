"""The local pre-training corpus: text extraction (builders/local_corpus_text.py) on tiny inline samples,
and the shard writer / manifest / task spec (builders/local_corpus.py, tasks/local.py) on a fake corpus.
Nothing is downloaded."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from t5x_lite.builders import local as builder
from t5x_lite.builders import local_corpus as corpus
from t5x_lite.builders import local_corpus_text as T
from t5x_lite.data import get_vocabulary
from t5x_lite.data.sources import in_validation
from t5x_lite.data.tasks import task_from_spec
from t5x_lite.errors import UserError
from t5x_lite.tasks.local import local_corpus_dir, local_corpus_manifest, local_corpus_spec


# ----------------------------------------------------------------------------
# reST
# ----------------------------------------------------------------------------

RST = """\
:orphan:

:Author: Jane Doe

=======================
Kernel widget interface
=======================

The widget layer lets drivers register **widgets** with :c:func:`widget_register()`
and see :ref:`the guide <widget-guide>` for the ``flags`` field [#f1]_.

.. note::
   Widgets must be registered before use.

.. code-block:: c

   int x = widget_register(w);

Example::

    $ echo 1 > /sys/widget/enable

+------+------+
| a    | b    |
+------+------+

Usage
-----

.. function:: widget_open(name)

   Open the widget called *name*.

.. versionadded:: 3.8

>>> widget_open("x")
'ok'

.. toctree::
   :maxdepth: 2

   other
"""


def test_rst_paragraphs_keeps_prose_and_drops_markup_and_code():
    paras = T.rst_paragraphs(RST)
    texts = [p for p, _ in paras]
    assert ("Kernel widget interface", True) in paras and ("Usage", True) in paras
    assert texts[0] == "Author: Jane Doe"                      # field list kept, ":orphan:" dropped
    assert ("The widget layer lets drivers register widgets with widget_register() and see the guide "
            "for the flags field.") in texts
    assert "Widgets must be registered before use." in texts  # prose directive body kept
    assert "Example:" in texts                                 # "::" -> ":", the literal block dropped
    assert "widget_open(name)" in texts and "Open the widget called name." in texts
    assert "New in version 3.8." in texts
    joined = "\n".join(texts)
    for gone in ("int x", "echo 1", "| a", ">>>", "'ok'", "maxdepth", "other", "orphan", "::", "``", ":c:"):
        assert gone not in joined, gone


def test_strip_rst_inline():
    assert T.strip_rst_inline(":py:meth:`~foo.Bar.baz` and `text <http://x>`_") == "baz and text"
    assert T.strip_rst_inline("*a* **b** ``c`` |d|_ e\\ f") == "a b c d ef"


# ----------------------------------------------------------------------------
# dictd and GCIDE
# ----------------------------------------------------------------------------

def _b64(n: int) -> str:
    digits = ""
    while True:
        digits = T._B64[n % 64] + digits
        n //= 64
        if not n:
            return digits


def _dictd(entries: dict[str, str], aliases: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A tiny dictd database: entries in file order, and an index (headword TAB b64 offset TAB b64 length)."""
    data, index, spans = b"", [], {}
    header = "00-database-short\nA test dictionary\n"
    for word, text in [("00-database-short", header)] + list(entries.items()):
        raw = text.encode("utf-8")
        spans[word] = (len(data), len(raw))
        data += raw
    for word, target in {**{w: w for w in spans}, **(aliases or {})}.items():
        start, length = spans[target]
        index.append(f"{word}\t{_b64(start)}\t{_b64(length)}")
    return data, "\n".join(sorted(index)) + "\n"


def test_b64_number_and_dict_entries():
    assert T.b64_number("A") == 0 and T.b64_number("B") == 1 and T.b64_number("BA") == 64 and T.b64_number("/") == 63
    assert T.b64_number(_b64(123456)) == 123456
    cat = "cat\n   A small domesticated feline.\n\n"
    dog = "dog\n   A domesticated {canid}, kept as a pet.\n\n"
    data, index = _dictd({"cat": cat, "dog": dog * 40}, aliases={"hound": "dog"})
    entries = T.dict_entries(data, index)
    # file order, the shared entry once, the 00-database header skipped
    assert entries == [cat, dog * 40]
    assert T.clean_dict_entry(dog) == "dog A domesticated canid, kept as a pet."


def test_dict_entries_falls_back_to_cp1252():
    data = "caf\xe9\n   coffee house\n".encode("cp1252")
    assert T.dict_entries(data, f"cafe\tA\t{_b64(len(data))}\n") == ["caf\xe9\n   coffee house\n"]


GCIDE = """Abuse \\A*buse"\\, v. t. [F. abuser.]
   1. To put to a wrong use; to misapply; as, to abuse {inherited} gold.
      [1913 Webster]

   2. To make bad use of something; a wordnet sense.
      [WordNet 1.5]

   Syn: To maltreat; injure.
        [1913 Webster]
"""


def test_gcide_markup_and_wordnet_blocks_dropped():
    assert T.strip_gcide_markup('Co*ag"u*late \\Co*ag"u*late\\, v. [1913 Webster]') == 'Co*ag"u*late, v. '
    cleaned = T.clean_dict_entry(GCIDE, gcide=True)
    assert cleaned == ("Abuse, v. t. [F. abuser.] 1. To put to a wrong use; to misapply; as, to abuse "
                       "inherited gold. Syn: To maltreat; injure.")
    assert "wordnet" not in cleaned.lower() and "Webster" not in cleaned and "\\" not in cleaned
    # an entry made only of WordNet blocks disappears; a first WordNet block leaves the headword line
    only_wn = "1st-class \\1st-class\\ n.\n   1. a class mail.\n\n   Syn: first-class\n        [WordNet 1.5 +PJC]\n"
    assert T.drop_wordnet_blocks(only_wn) == ""
    first_wn = "Foo \\Foo\\ n.\n   1. wn sense\n      [WordNet 1.5]\n   2. old sense\n      [1913 Webster]\n"
    assert T.clean_dict_entry(first_wn, gcide=True) == "Foo n. 2. old sense"
    # an inline [WordNet sense 1] drops its block too; a tag with text after it still ends a block
    inline = ("Hike \\Hike\\, n.\n   1. The act of hiking.\n      [Webster 1913 Suppl.]\n"
              "   2. A long walk for exercise. [WordNet sense 1]\n      [PJC]\n")
    assert T.clean_dict_entry(inline, gcide=True) == "Hike, n. 1. The act of hiking."
    run_on = "Bar \\Bar\\ n.\n   a wn gloss.\n   [WordNet 1.5] Baz\n   2. kept sense.\n   [1913 Webster]\n"
    assert T.clean_dict_entry(run_on, gcide=True) == "Bar n. Baz 2. kept sense."
    # lower-case headwords (mostly WordNet 1.5 imports, some tagged [1913 Webster]) go whole
    assert T.drop_wordnet_blocks("coenobite \\coenobite\\, n.\n   a member of an order.\n   [1913 Webster]\n") == ""


# ----------------------------------------------------------------------------
# fortune, bible, Gutenberg
# ----------------------------------------------------------------------------

def test_split_fortunes():
    text = "First   fortune,\n\tsecond line.\n%\n%\nSecond one -- Someone\n%\n100% sure\n%\n"
    assert T.split_fortunes(text) == ["First fortune, second line.", "Second one -- Someone", "100% sure"]
    assert T.split_fortunes("no separator at all") == ["no separator at all"]


def test_bible_chapters():
    text = ("\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n  2 And the earth was"
            " without form,\nand void.\n\nGenesis 2\n\n  1 Thus the heavens were finished.\n")
    assert T.bible_chapters(text) == [
        ("Genesis 1", "In the beginning God created the heaven and the earth. And the earth was without form, and void."),
        ("Genesis 2", "Thus the heavens were finished.")]


def test_strip_gutenberg_and_plain_paragraphs():
    text = ("The Project Gutenberg EBook of Hamlet\n\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
            "ACT I.\n\nHam.\nTo be, or not\n   to be.\n\nThis etext is from Project Gutenberg.\n\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nLicense text.\n")
    body = T.strip_gutenberg(text)
    assert body.startswith("ACT I.") and "License" not in body and "START OF" not in body
    assert T.plain_paragraphs(body) == ["ACT I.", "Ham. To be, or not to be."]
    assert T.strip_gutenberg("no header\n") == "no header\n"


# ----------------------------------------------------------------------------
# documents
# ----------------------------------------------------------------------------

def test_split_long():
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. " * 10
    pieces = T.split_long(text.strip(), 60)
    assert all(len(p) <= 60 for p in pieces) and len(pieces) > 5
    assert " ".join(pieces).split() == text.split()           # nothing lost, sentence ends kept
    assert all(p.endswith(".") for p in pieces)
    hard = T.split_long("x" * 25, 10)                         # no space: hard cuts
    assert hard == ["x" * 10, "x" * 10, "x" * 5]
    assert T.split_long("short", 10) == ["short"]


def test_pack():
    docs = T.pack(["a" * 1000] * 7, max_chars=3000, min_doc=1)
    assert [len(d) for d in docs] == [2001, 2001, 2001, 1000]
    # a heading opens a new document once the current one holds min_section characters
    units = ["p" * 60, ("Heading", True), "b" * 200, ("Second", True), "c" * 80]
    docs = T.pack(units, max_chars=3000, min_section=100, min_doc=1)
    assert docs == ["p" * 60 + "\nHeading\n" + "b" * 200, "Second\n" + "c" * 80]
    # a heading never ends a document, even when the text after it fills one
    docs = T.pack([("Title", True), "a" * 2999], max_chars=3000, min_doc=1)
    assert docs == ["Title\n" + "a" * 2999]
    docs = T.pack(["x" * 2000, ("Tail", True), "y" * 1500], max_chars=3000, min_doc=1)
    assert docs == ["x" * 2000, "Tail\n" + "y" * 1500]
    # short documents dropped
    assert T.pack(["tiny"], min_doc=50) == []


def test_dedup_and_mostly_text():
    seen = {"old"}
    kept, dropped = T.dedup(iter(["a", "b", "a", "old", "c"]), seen)
    assert kept == ["a", "b", "c"] and dropped == 2 and seen == {"old", "a", "b", "c"}
    assert T.mostly_text("Plain English words here.")
    assert not T.mostly_text("0x00 0x1f 0xff | -- | ++ |")


# ----------------------------------------------------------------------------
# shards, manifest, task spec
# ----------------------------------------------------------------------------

def _fake_corpus():
    docs = {"alpha": [f"Alpha document number {i} talks about widgets and gadgets at length." for i in range(30)],
            "beta": [f"Beta text {i}: the quick brown fox jumps over the lazy dog again and again." for i in range(20)]}
    info = {"alpha": {"packages": {"alpha-pkg": "1.0-1"}, "license": "public domain"},
            "beta": {"packages": {"beta (PyPI)": "0.6"}, "license": "MIT"}}
    return docs, info


def _read_shards(path):
    rows = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".jsonl.gz"):
            with gzip.open(os.path.join(path, name), "rt", encoding="utf-8") as f:
                rows.extend(json.loads(line) for line in f)
    return rows


def test_write_corpus_shards_manifest_and_spec(tmp_path):
    data_dir = str(tmp_path / "data")
    assert local_corpus_spec(data_dir) is None and local_corpus_manifest(data_dir) is None
    assert not corpus.is_built(data_dir)
    docs, info = _fake_corpus()
    out = local_corpus_dir(data_dir)
    manifest = corpus.write_corpus(out, docs, info, num_shards=3, extra={"max_examples": None})

    names = sorted(os.listdir(out))
    assert names == ["corpus-00000-of-00003.jsonl.gz", "corpus-00001-of-00003.jsonl.gz",
                     "corpus-00002-of-00003.jsonl.gz", "manifest.json"]
    assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".")]    # no temp folder left
    rows = _read_shards(out)
    assert sorted((r["text"], r["source"]) for r in rows) == sorted((d, s) for s, ds in docs.items() for d in ds)
    order = [r["text"] for r in rows]
    assert order == sorted(order, key=corpus.shuffle_key) and order != docs["alpha"] + docs["beta"]   # shuffled

    on_disk = local_corpus_manifest(data_dir)
    assert on_disk == manifest and corpus.is_built(data_dir) and not corpus.is_built(data_dir, max_examples=5)
    alpha = on_disk["sources"]["alpha"]
    assert alpha["packages"] == {"alpha-pkg": "1.0-1"} and alpha["license"] == "public domain"
    assert alpha["documents"] == 30 and alpha["characters"] == sum(map(len, docs["alpha"]))
    assert alpha["words"] == sum(len(d.split()) for d in docs["alpha"])
    total = on_disk["total"]
    assert total["documents"] == 50 and total["words"] == alpha["words"] + on_disk["sources"]["beta"]["words"]
    assert "WordNet" in on_disk["excluded"] and "Debian package descriptions" in on_disk["excluded"]

    spec = local_corpus_spec(data_dir)
    assert spec == "jsonl:" + os.path.join(out, "corpus-*.jsonl.gz")
    task = task_from_spec(spec)                                   # span corruption, builtin vocabulary
    train = [r["text"] for r in task.source.get("train")]       # the hash split: md5(text)[0] < 4 is validation
    assert sorted(train) == sorted(t for t in order if not in_validation(t)) and len(train) > 40
    vocab = get_vocabulary("builtin")
    ex = next(iter(task.get_examples("train", feature_lengths={"inputs": 64, "targets": 16})))
    inputs, targets = vocab.decode(list(ex["inputs"])), vocab.decode(list(ex["targets"]))
    assert "<extra_id_0>" in inputs and targets.startswith("<extra_id_0>")
    assert any(word in inputs for word in ("Alpha", "Beta", "widgets", "fox"))


def test_write_corpus_is_deterministic_and_replaces_atomically(tmp_path):
    docs, info = _fake_corpus()
    out = str(tmp_path / "c" / "1.0.0")
    corpus.write_corpus(out, docs, info, num_shards=2)
    first = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out) if n.endswith(".gz")}
    corpus.write_corpus(out, {"alpha": docs["alpha"][:5]}, info, num_shards=2)     # replaced, not merged
    assert len(_read_shards(out)) == 5
    # gzip without a timestamp: the same input gives the same bytes, whatever the input order
    corpus.write_corpus(out, {"beta": docs["beta"], "alpha": docs["alpha"][::-1]}, info, num_shards=2)
    again = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out) if n.endswith(".gz")}
    assert again == first
    assert sorted(os.listdir(tmp_path / "c")) == ["1.0.0"]


def test_write_corpus_failure_leaves_the_old_corpus(tmp_path, monkeypatch):
    docs, info = _fake_corpus()
    out = str(tmp_path / "c" / "1.0.0")
    corpus.write_corpus(out, docs, info, num_shards=1)

    def broken_dump(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(corpus.jsonio, "dump", broken_dump)
    with pytest.raises(OSError):
        corpus.write_corpus(out, {"alpha": ["other text"] * 3}, info)
    assert len(_read_shards(out)) == 50 and sorted(os.listdir(tmp_path / "c")) == ["1.0.0"]


def _fake_source(name, texts):
    return corpus.Source(name, "test license", lambda root: list(texts))


def test_build_corpus_dedups_across_sources_and_checks_size(tmp_path, monkeypatch):
    """build_corpus with in-memory sources (no downloads): duplicates dropped across sources, progress
    logged, and a corpus under the minimum size is refused without writing anything."""
    a = [f"Document {i} of source a, a sentence long enough to be kept." for i in range(4)]
    b = [a[0], a[1], "A document only source b has, also long enough."]
    sources = (_fake_source("a", a), _fake_source("b", b))
    log = []
    data_dir = str(tmp_path)
    with pytest.raises(UserError, match="below the"):
        corpus.build_corpus(data_dir, sources=sources, log=log.append, min_bytes=10**9)
    assert local_corpus_spec(data_dir) is None
    manifest = corpus.build_corpus(data_dir, sources=sources, log=log.append, min_bytes=100)
    assert manifest["sources"]["b"]["documents"] == 1 and manifest["sources"]["b"]["duplicates_dropped"] == 2
    assert manifest["total"]["documents"] == 5
    assert any("[2/2] b" in line and "2 duplicates dropped" in line for line in log)
    assert sorted(os.listdir(os.path.dirname(local_corpus_dir(data_dir)))) == ["1.0.0"]    # download dir gone


def test_build_local_hooks_in_the_corpus(tmp_path, monkeypatch, capsys):
    """`build-local` knows local_corpus: built by default, selectable alone, skipped once built."""
    assert "local_corpus" in builder.DATASETS
    calls = []

    def fake_build(data_dir, *, max_examples=None, log=print):
        calls.append(max_examples)
        docs, info = _fake_corpus()
        return corpus.write_corpus(local_corpus_dir(data_dir), docs, info, extra={"max_examples": max_examples})
    monkeypatch.setattr(corpus, "build_corpus", fake_build)
    out = str(tmp_path / "tfds")
    assert builder.main(["--only", "local_corpus", "--out", out, "--no-install"]) == 0
    printed = capsys.readouterr().out
    assert calls == [None] and "local_corpus" in printed and "50 documents" in printed
    assert json.load(open(os.path.join(out, "build_summary.json")))["local_corpus"]["documents"] == 50
    res = builder.build(["local_corpus"], out, install=False, log=lambda m: None)
    assert res["local_corpus"]["status"] == "exists" and calls == [None]
    res = builder.build(["local_corpus"], out, force=True, install=False, log=lambda m: None)
    assert res["local_corpus"]["status"].startswith("built") and calls == [None, None]
