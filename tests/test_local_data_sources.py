"""build-local parsers, filters and splits on tiny inline samples (no network, no apt)."""

import gettext
import io
import os
import struct

import pytest

from t5x_lite.builders import local as builder
from t5x_lite.builders import local_sources as src
from t5x_lite.data import TaskRegistry
from t5x_lite.errors import UserError
from t5x_lite.tasks.local import LOCAL_TASK_NAMES, WORDNET_LEXNAMES, default_data_dir, local_tasks


def write_mo(entries, charset="UTF-8") -> bytes:
    """A GNU .mo file, as msgfmt writes it: header (magic, revision 0, N, offset of the
    msgid table, offset of the msgstr table, hash size 0, hash offset), the two tables of
    (length, offset) pairs sorted by msgid, then the NUL-terminated strings."""
    entries = dict(entries)
    entries[""] = f"Content-Type: text/plain; charset={charset}\n"
    keys = sorted(entries, key=lambda k: k.encode(charset))
    ids = [k.encode(charset) for k in keys]
    strs = [entries[k].encode(charset) for k in keys]
    n = len(keys)
    orig_table, trans_table = 7 * 4, 7 * 4 + 8 * n
    pos = trans_table + 8 * n
    blob, o_tab, t_tab = b"", [], []
    for s in ids:
        o_tab += [len(s), pos + len(blob)]
        blob += s + b"\0"
    for s in strs:
        t_tab += [len(s), pos + len(blob)]
        blob += s + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, orig_table, trans_table, 0, 0)
    return header + struct.pack(f"<{4 * n}I", *o_tab, *t_tab) + blob


ENTRIES = {
    "Open the selected file now": "Die ausgewählte Datei jetzt öffnen",              # kept
    "_Save the current document to disk": "Das aktuelle Dokument auf Platte _speichern",  # accelerators
    "&Quit the application right now": "Die Anwendung sofort &beenden",               # Qt accelerator
    "One file was deleted\0%d files were deleted": "Eine Datei\0%d Dateien",        # plural
    "menu\x04Open the recent file list": "Liste zuletzt geöffneter Dateien öffnen",  # msgctxt
    "%s: %d": "%s : %d",                                                              # format only
    "Same text in both languages here": "Same text in both languages here",          # untranslated
    "Not translated at all in this catalog": "",                                     # untranslated
    "Copy %s into the destination folder": "%s in den Zielordner kopieren",          # unclean (%)
    "Cancel": "Abbrechen",                                                           # < 4 words
}


def test_mo_parser_matches_stdlib_gettext():
    data = write_mo(ENTRIES)
    ours = dict(src.parse_mo(data))
    # Independent reader: the stdlib's GNUTranslations (plural keys become (msgid, n) tuples).
    theirs = gettext.GNUTranslations(io.BytesIO(data))._catalog
    for msgid, msgstr in ENTRIES.items():
        assert ours[msgid] == msgstr
        if "\0" not in msgid and msgstr:
            assert theirs[msgid] == msgstr
    assert theirs[("One file was deleted", 1)] == "%d Dateien"


def test_mo_filters():
    got, reasons = {}, []
    for msgid, msgstr in src.parse_mo(write_mo(ENTRIES)):
        en, tgt = src.clean_pair(msgid, msgstr)
        if en is None:
            reasons.append(tgt)
        else:
            got[en] = tgt
    assert got == {"Open the selected file now": "Die ausgewählte Datei jetzt öffnen",
                   "Save the current document to disk": "Das aktuelle Dokument auf Platte speichern",
                   "Quit the application right now": "Die Anwendung sofort beenden"}
    assert sorted(reasons) == sorted(["header", "plural", "context", "format_only", "untranslated",
                                      "untranslated", "unclean", "unclean"])
    assert src.is_format_only("%1$s (%-10.3lu) {0} ${HOME}") and not src.is_format_only("%d files")
    assert src.strip_accelerators("snake_case _File &Edit AT&&T") == "snake_case File Edit AT&&T"


def test_mo_latin1_charset(tmp_path):
    data = write_mo({"Open the selected file now": "Ouvrir le fichier sélectionné"}, charset="ISO-8859-1")
    assert dict(src.parse_mo(data))["Open the selected file now"] == "Ouvrir le fichier sélectionné"
    with pytest.raises(ValueError):
        src.parse_mo(b"\x00" * 40)


def _pairs(prefix, n):
    return [(f"{prefix} message number {i} here", f"{prefix} Nachricht Nummer {i}") for i in range(n)]


def test_split_by_catalog_no_leak():
    pairs = {f"cat{i:02d}": _pairs(f"cat{i:02d}", 10 + i) for i in range(30)}
    shared = ("Could not open the file", "Datei konnte nicht geöffnet werden")
    for domain in pairs:
        pairs[domain] = pairs[domain] + [shared]
    splits, info = src.split_pairs_by_catalog(pairs)
    train_cats = {c for c, _, _ in splits["train"]}
    val_cats = {c for c, _, _ in splits["validation"]}
    assert val_cats and train_cats and not (train_cats & val_cats)   # whole catalogs on one side
    assert set(info["validation_catalogs"]) == val_cats
    total = sum(len(v) for v in pairs.values())
    n_val = sum(len(pairs[c]) for c in val_cats)
    assert 0.04 * total <= n_val <= 0.08 * total
    # the string shared by every catalog stays in train only, once
    assert [p for p in splits["train"] if p[1] == shared[0]] == [(sorted(train_cats)[0], *shared)]
    assert all(p[1] != shared[0] for p in splits["validation"])
    assert info["dropped_overlaps"] == 1      # de-duplicated within validation first, then dropped
    assert src.split_pairs_by_catalog(pairs) == (splits, info)        # deterministic


TRANSLATION_EN = """\
Package: foo
Description-md5: 0001
Description-en: fast frobnicator for widgets
 Foo frobnicates widgets quickly and reliably, using a novel algorithm.
 .
 This package contains the command line tool.

Package: foo-dbg
Description-md5: 0001
Description-en: fast frobnicator for widgets
 Foo frobnicates widgets quickly and reliably, using a novel algorithm.
 .
 This package contains the command line tool.

Package: libbar1
Description-md5: 0002
Description-en: bar library - runtime
 Bar is a library that
   keeps verbatim lines
 for parsing widget description files of many kinds.

Package: tiny
Description-md5: 0003
Description-en: too short
 Short body.
"""

PACKAGES = """\
Package: foo
Version: 1.0-1
Section: utils
Description-md5: 0001

Package: libbar1
Source: bar (2.1-3)
Section: contrib/libs
Description-md5: 0002
"""


def test_debian_description_parser():
    recs = src.debian_descriptions([TRANSLATION_EN], [PACKAGES])
    assert [r["package"] for r in recs] == ["foo", "libbar1"]          # md5 dedup, short body dropped
    foo, bar = recs
    assert foo["synopsis"] == "fast frobnicator for widgets"
    assert foo["long"] == ("Foo frobnicates widgets quickly and reliably, using a novel algorithm. "
                           "This package contains the command line tool.")
    assert (foo["source"], foo["section"]) == ("foo", "utils")
    assert (bar["source"], bar["section"]) == ("bar", "libs")
    assert bar["long"] == "Bar is a library that keeps verbatim lines for parsing widget description files of many kinds."


# Real lines of WordNet 3.0 data.* / index.* files (WordNet 3.0 Copyright 2006 by Princeton
# University, redistributable under its license; the license header line is skipped).
# The index lines are real in format but list only the synsets included here.
WN = {
    "data.noun": [
        "  1 This software and database is being provided to you, the LICENSEE, by  ",
        "09918248 18 n 02 child 1 kid 1 008 @ 10373998 n 0000 #m 07970406 n 0000 ! 10399491 n 0101 ~ 09809427 n "
        "0000 ~ 09827683 n 0000 ~ 10084043 n 0000 ~ 10285938 n 0000 ~ 10654461 n 0000 | a human offspring (son or "
        "daughter) of any age; \"they had three children\"; \"they were able to send their kids to college\"  ",
        "02085374 05 n 02 toy_dog 0 toy 0 008 @ 02084071 n 0000 ~ 02085620 n 0000 ~ 02085782 n 0000 ~ 02085936 n "
        "0000 ~ 02086079 n 0000 ~ 02086240 n 0000 ~ 02086346 n 0000 ~ 02087046 n 0000 | any of several breeds of "
        "very small dogs kept purely as pets  "],
    "data.verb": [
        "00851118 32 v 02 pull_the_leg_of 0 kid 1 001 @ 00854922 v 0000 01 + 09 00 | tell false information to "
        "for fun; \"Are you pulling my leg?\"  ",
        "00855313 32 v 05 kid 0 chaff 0 jolly 0 josh 0 banter 0 003 @ 00850519 v 0000 + 06777794 n 0501 + 07450343 "
        "n 0301 03 + 02 00 + 09 02 + 09 01 | be silly or tease one another; \"After we relaxed, we just kidded "
        "around\"  "],
    "data.adj": [
        "00001740 00 a 01 able 0 005 = 05200169 n 0000 = 05616246 n 0000 + 05616246 n 0101 + 05200169 n 0101 ! "
        "00002098 a 0101 | (usually followed by `to') having the necessary means or skill or know-how or authority "
        "to do something; \"able to swim\"  "],
    "data.adv": [
        "00001740 02 r 01 a_cappella 0 000 | without musical accompaniment; \"they performed a cappella\"  "],
    "index.noun": ["  1 This software and database is being provided to you, the LICENSEE, by  ",
                   "kid n 1 4 @ ~ #m %p 1 1 09918248  ", "toy_dog n 1 1 @ 1 0 02085374  "],
    "index.verb": ["kid v 2 1 @ 2 2 00851118 00855313  "],
    "index.adj": ["able a 1 4 ! & = + 1 1 00001740  "],
    "index.adv": ["a_cappella r 1 0 1 0 00001740  "],
}


@pytest.fixture
def wordnet_dir(tmp_path):
    for name, lines in WN.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    return str(tmp_path)


def test_wordnet_parsers(wordnet_dir):
    syn = src.read_wordnet_synsets(wordnet_dir)
    assert len(syn) == 6                                                 # header skipped
    child = syn[0]
    assert (child["offset"], child["pos"], child["words"]) == ("09918248", "n", ["child", "kid"])
    assert WORDNET_LEXNAMES[child["lexfile"]] == "noun.person"
    assert WORDNET_LEXNAMES[syn[2]["lexfile"]] == "verb.communication"
    assert WORDNET_LEXNAMES[syn[5]["lexfile"]] == "adv.all"
    assert src.definition_of(child["gloss"]) == "a human offspring (son or daughter) of any age"
    assert len(WORDNET_LEXNAMES) == 45


def test_wordnet_qa_is_extractive(wordnet_dir):
    qa = src.wordnet_qa_examples(src.read_wordnet_synsets(wordnet_dir), wordnet_dir)
    # only "kid" has >= 2 senses: one question per part of speech
    assert sorted(e["id"] for e in qa) == ["kid/n", "kid/v"]
    for e in qa:
        ans, start = e["answers"]["text"][0], e["answers"]["answer_start"][0]
        assert e["context"][start:start + len(ans)] == ans
    verb = next(e for e in qa if e["id"] == "kid/v")
    assert verb["question"] == "What does kid mean as a verb?"
    assert verb["answers"]["text"] == ["tell false information to for fun"]
    assert "kid (verb): 1. tell false information to for fun; 2. be silly or tease one another." in verb["context"]
    # the next lemma alphabetically is in the context as a distractor
    assert "toy dog (noun): 1. any of several breeds of very small dogs kept purely as pets." in verb["context"]


def test_build_local_end_to_end(tmp_path, wordnet_dir, monkeypatch):
    """Catalogs + WordNet in tmp dirs -> TFDS -> the registered local tasks read them."""
    locale = tmp_path / "locale"
    for i in range(12):      # 12 catalogs of 3 pairs: validation takes whole catalogs
        d = locale / "de" / "LC_MESSAGES"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"prog{i}.mo").write_bytes(write_mo(
            {f"Program {i} opens file number {j}": f"Programm {i} öffnet Datei Nummer {j}" for j in range(3)}))
    monkeypatch.setattr(src, "LOCALE_ROOTS", (str(locale),))
    monkeypatch.setattr(src, "WORDNET_DIR", wordnet_dir)
    monkeypatch.setattr(builder, "VALIDATION_PERCENT", 50)
    out = str(tmp_path / "tfds")
    names = ["local_translate_en_de", "local_wordnet_lexname"]
    res = builder.build(names, out, install=False, log=lambda m: None)
    tr = res["local_translate_en_de"]
    assert tr["train"] + tr["validation"] == 36 and tr["validation"] % 3 == 0 and tr["validation"] > 0
    lex = res["local_wordnet_lexname"]
    assert lex["train"] + lex["validation"] == 6

    task = TaskRegistry.get("local_translate_en_de").with_data_dir(out)
    train = list(task.get_examples("train", shuffle=False))
    val = list(task.get_examples("validation", shuffle=False))
    prog = lambda e: e["inputs_pretokenized"].split()[5]       # noqa: E731  "Program <i> opens ..."
    assert not {prog(e) for e in train} & {prog(e) for e in val}
    ex = train[0]
    assert ex["inputs_pretokenized"].startswith("translate English to German: Program ")
    assert ex["targets_pretokenized"].startswith("Programm ")

    lex_task = TaskRegistry.get("local_wordnet_lexname").with_data_dir(out)
    got = {e["inputs_pretokenized"]: e["targets_pretokenized"]
           for split in ("train", "validation") for e in lex_task.get_examples(split, shuffle=False)}
    assert got["lexname gloss: any of several breeds of very small dogs kept purely as pets"] == "noun.animal"

    # idempotent: a second run skips what exists
    again = builder.build(names, out, install=False, log=lambda m: None)
    assert again["local_translate_en_de"]["status"] == "exists"
    assert again["local_translate_en_de"]["train"] == tr["train"]


def test_build_debian_tasks_and_caps(tmp_path, monkeypatch):
    """apt lists in a tmp dir -> summarization + section datasets -> the local tasks."""
    lists = tmp_path / "lists"
    lists.mkdir()
    paras = []
    for i in range(8):
        paras.append(f"Package: pkg{i}\nDescription-md5: {i:04d}\nDescription-en: tool number {i} for widgets\n"
                     f" Pkg{i} is a program that frobnicates widgets of kind {i} in a fast way.\n")
    (lists / "x_main_i18n_Translation-en").write_text("\n".join(paras))
    (lists / "x_main_binary-amd64_Packages").write_text(
        "\n".join(f"Package: pkg{i}\nSource: src{i // 2}\nSection: {'utils' if i % 2 else 'libs'}\n"
                  for i in range(8)))
    monkeypatch.setattr(src, "APT_LISTS", str(lists))
    monkeypatch.setattr(builder, "VALIDATION_PERCENT", 50)
    out = str(tmp_path / "tfds")
    names = ["local_summarize_debian", "local_debian_section"]
    res = builder.build(names, out, install=False, log=lambda m: None, max_examples=1)
    assert res["local_summarize_debian"]["train"] == 1 == res["local_summarize_debian"]["validation"]
    res = builder.build(names, out, install=False, log=lambda m: None)     # a capped build is redone
    assert res["local_summarize_debian"]["status"].startswith("built")
    assert res["local_summarize_debian"]["train"] + res["local_summarize_debian"]["validation"] == 8

    summ = TaskRegistry.get("local_summarize_debian").with_data_dir(out)
    rows = [e for split in ("train", "validation") for e in summ.get_examples(split, shuffle=False)]
    ex = next(e for e in rows if e["targets_pretokenized"] == "tool number 3 for widgets")
    assert ex["inputs_pretokenized"] == "summarize: Pkg3 is a program that frobnicates widgets of kind 3 in a fast way."
    sec = TaskRegistry.get("local_debian_section").with_data_dir(out)
    split_of = {}
    for split in ("train", "validation"):
        for e in sec.get_examples(split, shuffle=False):
            assert e["targets_pretokenized"] in ("utils", "libs")
            assert e["inputs_pretokenized"].startswith("section description: Pkg")
            split_of[e["inputs_pretokenized"].split()[2]] = split
    # binary packages of one source package (pkg2k, pkg2k+1 <- src k) share a split
    assert all(split_of[f"Pkg{2 * k}"] == split_of[f"Pkg{2 * k + 1}"] for k in range(4))


def test_missing_sources_are_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(src, "WORDNET_DIR", str(tmp_path / "nowhere"))
    msgs = []
    res = builder.build(["local_wordnet_lexname"], str(tmp_path / "out"), install=False, log=msgs.append)
    assert res["local_wordnet_lexname"]["status"].startswith("skipped")
    assert any("no WordNet data files" in m for m in msgs)


def test_not_root_prints_the_apt_commands(tmp_path, wordnet_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(builder, "_installed", lambda p: False)
    monkeypatch.setattr(builder.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(builder.shutil, "which", lambda cmd: "/usr/bin/" + cmd)
    monkeypatch.setattr(builder.subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(src, "WORDNET_DIR", wordnet_dir)
    monkeypatch.setattr(builder, "VALIDATION_PERCENT", 50)
    msgs = []
    res = builder.build(["local_wordnet_lexname"], str(tmp_path / "out"), log=msgs.append)
    assert not calls                                              # never runs apt as non-root
    assert any("not root" in m and "apt-get install -y --no-install-recommends wordnet-base" in m for m in msgs)
    assert res["local_wordnet_lexname"]["status"].startswith("built")   # data present: built anyway


def test_cli_rejects_unknown_names():
    with pytest.raises(UserError, match="did you mean 'local_translate_en_de'"):
        builder.main(["--only", "local_translate_en_dee"])
    with pytest.raises(UserError):
        builder.main(["--only", "local_wordnet_lexname", "--max-examples", "0"])


def test_default_data_dir_env(monkeypatch):
    monkeypatch.setenv("T5X_LITE_DATA_DIR", "/some/where")
    assert default_data_dir() == "/some/where"
    monkeypatch.delenv("T5X_LITE_DATA_DIR")
    assert default_data_dir() == os.path.expanduser("~/.cache/t5x_lite/local_tfds")


def test_local_tasks_with_another_vocabulary():
    tasks = local_tasks(vocabulary="byte", data_dir="/nonexistent", suffix="_byte")
    assert [t.name for t in tasks] == [n + "_byte" for n in LOCAL_TASK_NAMES]
    vocab = tasks[0].output_features["targets"].vocabulary
    assert vocab.decode(vocab.encode("Größe ändern")) == "Größe ändern"     # bytes cover umlauts
