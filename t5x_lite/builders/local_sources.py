"""Parsers and filters for the local downstream stand-ins (used by builders/local.py).

Pure functions over bytes/text, so tests can feed them tiny inline samples:
  gettext .mo catalogs      parse_mo, clean_pair, read_catalog_pairs, split_pairs_by_catalog
  Debian apt lists          parse_control_paragraphs, long_description_text, read_debian_descriptions
  WordNet 3.0 data files    parse_wordnet_data_line, read_wordnet_synsets, wordnet_qa_examples
"""

from __future__ import annotations

import collections
import glob
import hashlib
import os
import re
import struct
import subprocess

WORDNET_DIR = "/usr/share/wordnet"
APT_LISTS = "/var/lib/apt/lists"
LOCALE_ROOTS = ("/usr/share/locale", "/usr/share/locale-langpack", "/usr/share/vim/vim*/lang")

# ----------------------------------------------------------------------------
# gettext .mo
# ----------------------------------------------------------------------------

def parse_mo(data: bytes) -> list[tuple[str, str]]:
    """All (msgid, msgstr) entries of a GNU .mo file, decoded with the header charset.

    Layout: magic 0x950412de, revision, N, offset of the original-string table,
    offset of the translation table; each table holds N (length, offset) uint32
    pairs.  Plural entries keep their "\\0"-joined forms and context entries their
    "ctx\\x04msgid" key, so the caller can see (and drop) them.
    """
    if len(data) < 20:
        raise ValueError("not a .mo file (too short)")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        endian = "<"
    elif magic == 0xDE120495:
        endian = ">"
    else:
        raise ValueError("not a .mo file (bad magic)")
    _, n, orig_off, trans_off = struct.unpack(endian + "4I", data[4:20])
    raw = []
    for i in range(n):
        olen, opos = struct.unpack(endian + "2I", data[orig_off + 8 * i: orig_off + 8 * i + 8])
        tlen, tpos = struct.unpack(endian + "2I", data[trans_off + 8 * i: trans_off + 8 * i + 8])
        raw.append((data[opos:opos + olen], data[tpos:tpos + tlen]))
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            m = re.search(rb"charset=([A-Za-z0-9_.\-]+)", msgstr)
            if m and m.group(1).lower() not in (b"charset", b"cHARSET"):
                charset = m.group(1).decode("ascii")
    out = []
    for msgid, msgstr in raw:
        try:
            out.append((msgid.decode(charset), msgstr.decode(charset)))
        except (UnicodeDecodeError, LookupError):
            out.append((msgid.decode("utf-8", "replace"), msgstr.decode("utf-8", "replace")))
    return out


# printf (%s, %1$d, %-10.3lu, %%), python (%(name)s), brace ({0}, {name}) and shell (${X}) codes
_FORMAT_CODE = re.compile(r"%(?:\(\w+\))?[-+ #0']*(?:\d+\$)?\d*(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t|I64)?"
                          r"[diouxXeEfFgGaAcspnm%]|\{[\w.:!]*\}|\$\{?\w+\}?")
# accelerator markers: GTK "_File" / Qt "&File" at a word start (not "snake_case" or "&&")
_ACCEL = re.compile(r"(?<![\w&])&(?=\w)|(?<![\w_])_(?=\w)")
_UNCLEAN = re.compile(r"[%{<\\&]")
MIN_ENGLISH_WORDS = 4
MAX_CHARS = 400


def strip_accelerators(text: str) -> str:
    return _ACCEL.sub("", text)


def is_format_only(text: str) -> bool:
    """True when nothing word-like remains after removing format codes."""
    return not re.search(r"[^\W\d_]{2,}", _FORMAT_CODE.sub(" ", text))


def clean_pair(msgid: str, msgstr: str) -> tuple[str | None, str]:
    """(cleaned_en, cleaned_target) or (None, reason) for a dropped entry."""
    if msgid == "":
        return None, "header"
    if "\x04" in msgid:
        return None, "context"
    if "\x00" in msgid or "\x00" in msgstr:
        return None, "plural"
    if msgstr.strip() == "" or msgstr == msgid:
        return None, "untranslated"
    if is_format_only(msgid):
        return None, "format_only"
    en = " ".join(strip_accelerators(msgid).split())
    tgt = " ".join(strip_accelerators(msgstr).split())
    if (len(en.split()) < MIN_ENGLISH_WORDS or _UNCLEAN.search(en) or _UNCLEAN.search(tgt)
            or len(en) > MAX_CHARS or not re.search(r"[A-Za-z]", en)
            or not (len(en) / 3 <= len(tgt) <= 3 * len(en))):
        return None, "unclean"
    if en == tgt:
        return None, "untranslated"
    return en, tgt


def find_catalogs(lang: str, roots=None) -> dict[str, list[str]]:
    """Catalog (text domain) name -> .mo paths for one language (exact locale dir `lang`)."""
    out: dict[str, list[str]] = collections.defaultdict(list)
    for root in LOCALE_ROOTS if roots is None else roots:
        for path in sorted(glob.glob(os.path.join(root, lang, "LC_MESSAGES", "*.mo"))):
            out[os.path.basename(path)[:-3]].append(path)
    return dict(sorted(out.items()))


def read_catalog_pairs(catalogs: dict[str, list[str]]):
    """Clean pairs per catalog, plus counts of what each filter dropped."""
    stats = collections.Counter()
    pairs: dict[str, list[tuple[str, str]]] = {}
    for domain, paths in catalogs.items():
        seen, kept = set(), []
        for path in paths:
            with open(path, "rb") as f:
                try:
                    entries = parse_mo(f.read())
                except ValueError:
                    stats["unreadable_files"] += 1
                    continue
            for msgid, msgstr in entries:
                stats["entries"] += 1
                en, tgt = clean_pair(msgid, msgstr)
                if en is None:
                    stats[tgt] += 1
                elif (en, tgt) not in seen:
                    seen.add((en, tgt))
                    kept.append((en, tgt))
        stats["kept"] += len(kept)
        if kept:
            pairs[domain] = kept
    return pairs, dict(stats)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def split_pairs_by_catalog(pairs: dict[str, list[tuple[str, str]]], *, low: float = 0.04,
                           high: float = 0.08):
    """Train/validation by whole catalogs, so near-duplicate strings of one program never leak.

    Catalogs are taken in md5(name) order into validation while that keeps it
    under `high` of all pairs, until it holds at least `low` (with only a few large
    catalogs, the smallest one is held out).  Validation pairs
    whose normalised English also occurs in train (strings shared between
    programs, e.g. "Could not open file") are then dropped, and each split is
    de-duplicated on its English side.
    Returns ({"train": [(catalog, en, tgt)], "validation": [...]}, info).
    """
    total = sum(len(v) for v in pairs.values())
    val_cats: list[str] = []
    val_size = 0
    order = sorted(pairs, key=lambda d: hashlib.md5(d.encode()).hexdigest())
    for domain in order:
        if val_size >= low * total:
            break
        if val_size + len(pairs[domain]) <= high * total:
            val_cats.append(domain)
            val_size += len(pairs[domain])
    if not val_cats and len(order) > 1:      # few, large catalogs: still hold one out
        val_cats.append(min(order, key=lambda d: len(pairs[d])))
    splits = {"train": [], "validation": []}
    seen = {"train": set(), "validation": set()}
    for domain in sorted(pairs):
        split = "validation" if domain in val_cats else "train"
        for en, tgt in pairs[domain]:
            if _norm(en) not in seen[split]:
                seen[split].add(_norm(en))
                splits[split].append((domain, en, tgt))
    before = len(splits["validation"])
    splits["validation"] = [p for p in splits["validation"] if _norm(p[1]) not in seen["train"]]
    return splits, {"validation_catalogs": sorted(val_cats),
                    "dropped_overlaps": before - len(splits["validation"])}


# ----------------------------------------------------------------------------
# Debian descriptions
# ----------------------------------------------------------------------------

def parse_control_paragraphs(text: str):
    """Yield dicts of fields from deb822 text (Packages / Translation-en); continuation
    lines are kept verbatim (with their leading space) under the field they follow."""
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t" and last is not None:
            fields[last] += "\n" + line
        elif ":" in line:
            last, _, value = line.partition(":")
            fields[last] = value.strip()
    if fields:
        yield fields


def split_description(value: str) -> tuple[str, str]:
    """A Description field -> (synopsis, long description as plain text).

    Long-description rules (Debian policy 5.6.13): each line starts with a space;
    " ." is a blank line; lines with two leading spaces are verbatim.  Paragraphs
    are joined with a space, as plain-text model input.
    """
    synopsis, _, body = value.partition("\n")
    parts = []
    for line in body.split("\n"):
        line = line[1:] if line.startswith(" ") else line
        if line.strip() == ".":
            continue
        parts.append(line.strip())
    return synopsis.strip(), " ".join(" ".join(parts).split())


def translation_en_files(lists_dir: str | None = None) -> list[str]:
    return sorted(glob.glob(os.path.join(lists_dir or APT_LISTS, "*_i18n_Translation-en*")))


def packages_files(lists_dir: str | None = None) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(lists_dir or APT_LISTS, "*_binary-*_Packages*"))
                  if not p.endswith(".diff_Index"))


def read_apt_list(path: str) -> str:
    """Text of an apt list file, whatever its compression (apt-helper knows them all)."""
    if not re.search(r"\.(lz4|xz|gz|bz2|zst|lzma)$", path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    out = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True, check=True)
    return out.stdout.decode("utf-8", "replace")


def debian_descriptions(translation_texts, packages_texts, *, min_words: int = 10) -> list[dict]:
    """One record per unique long description (Description-md5), with the package's section
    and source package (for the split).  Sections/sources come from the Packages lists."""
    meta = {}
    for text in packages_texts:
        for p in parse_control_paragraphs(text):
            if "Package" in p:
                source = p.get("Source", p["Package"]).split(" ")[0]
                section = p.get("Section", "").split("/")[-1]
                meta.setdefault(p["Package"], (source, section))
    seen, out = set(), []
    for text in translation_texts:
        for p in parse_control_paragraphs(text):
            md5, value = p.get("Description-md5"), p.get("Description-en")
            if not value or md5 in seen:
                continue
            synopsis, long = split_description(value)
            if len(long.split()) < min_words or len(synopsis.split()) < 2:
                continue
            seen.add(md5)
            source, section = meta.get(p["Package"], (p["Package"], ""))
            out.append({"package": p["Package"], "source": source, "section": section,
                        "synopsis": synopsis, "long": long})
    return out


def read_debian_descriptions(log=print) -> list[dict]:
    trans = translation_en_files()
    if not trans:
        raise RuntimeError("no Translation-en lists; run apt-get update -o Acquire::Languages=en")
    log(f"  reading {len(trans)} Translation-en and {len(packages_files())} Packages lists")
    out = debian_descriptions([read_apt_list(p) for p in trans],
                              [read_apt_list(p) for p in packages_files()])
    log(f"  {len(out)} unique long descriptions")
    return out


# ----------------------------------------------------------------------------
# WordNet 3.0
# ----------------------------------------------------------------------------

_POS_FILES = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def parse_wordnet_data_line(line: str) -> dict | None:
    """One data.<pos> line -> {offset, lexfile, pos, words, gloss}; None for the license header.

    Fields: offset lex_filenum ss_type w_cnt(hex) [word lex_id]*w_cnt p_cnt [pointers] ... | gloss
    """
    if not line.strip() or line.startswith("  "):
        return None
    head, sep, gloss = line.partition(" | ")
    if not sep:
        return None
    f = head.split()
    n_words = int(f[3], 16)
    words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
    words = [re.sub(r"\((a|p|ip)\)$", "", w) for w in words]   # adjective syntactic markers
    return {"offset": f[0], "lexfile": int(f[1]), "pos": f[2], "words": words,
            "gloss": gloss.strip()}


def read_wordnet_synsets(wordnet_dir: str | None = None) -> list[dict]:
    wordnet_dir = wordnet_dir or WORDNET_DIR
    out = []
    for pos in _POS_FILES:
        with open(os.path.join(wordnet_dir, f"data.{pos}"), encoding="utf-8", errors="replace") as f:
            for line in f:
                rec = parse_wordnet_data_line(line)
                if rec is not None:
                    out.append(rec)
    return out


def definition_of(gloss: str) -> str:
    """The definition part of a gloss: before the first '; "example"'."""
    return re.split(r';\s*"', gloss, maxsplit=1)[0].strip().rstrip(";").strip()


def parse_wordnet_index_line(line: str) -> tuple[str, str, list[str]] | None:
    """index.<pos> line -> (lemma, pos, synset offsets in WordNet sense order)."""
    if not line.strip() or line.startswith("  "):
        return None
    f = line.split()
    lemma, pos, n_synsets, n_ptrs = f[0], f[1], int(f[2]), int(f[3])
    offsets = f[4 + n_ptrs + 2:]
    return lemma.replace("_", " "), pos, offsets[:n_synsets]


def wordnet_qa_examples(synsets: list[dict], wordnet_dir: str | None = None,
                        max_senses: int = 6) -> list[dict]:
    """SEMI-SYNTHETIC extractive QA over real WordNet entries.

    Context: the dictionary entries (one block per part of speech, the first
    `max_senses` senses of each in WordNet order) of a lemma with at least two
    senses and of its alphabetical successor, which often shares its prefix
    (kid / kidnap) and serves as a distractor; block order is fixed by a hash.
    Question (templated): "What does <lemma> mean as a <pos>?"; answer: the
    definition of that part of speech's first sense, a span of the context.
    """
    wordnet_dir = wordnet_dir or WORDNET_DIR
    by_key = {(s["pos"] if s["pos"] != "s" else "a", s["offset"]): s for s in synsets}
    senses: dict[str, dict[str, list[str]]] = collections.defaultdict(dict)
    for pos_file, pos in _POS_FILES.items():
        with open(os.path.join(wordnet_dir, f"index.{pos_file}"), encoding="utf-8",
                  errors="replace") as f:
            for line in f:
                rec = parse_wordnet_index_line(line)
                if rec is None:
                    continue
                lemma, _, offsets = rec
                defs = []
                for off in offsets[:max_senses]:
                    s = by_key.get((pos, off))
                    if s is not None:
                        d = definition_of(s["gloss"])
                        if d and d not in defs:
                            defs.append(d)
                if defs:
                    senses[lemma][pos] = defs
    lemmas = sorted(senses)
    out = []
    for i, lemma in enumerate(lemmas):
        entry = senses[lemma]
        if sum(len(v) for v in entry.values()) < 2:
            continue
        other = lemmas[i + 1] if i + 1 < len(lemmas) else lemmas[i - 1]
        blocks = [(lemma, pos) for pos in entry] + [(other, pos) for pos in senses[other]]
        blocks.sort(key=lambda b: hashlib.md5(f"{lemma}|{b[0]}/{b[1]}".encode()).hexdigest())
        context, first_def_at = "", {}
        for word, pos in blocks:
            head = f"{word} ({POS_NAMES[pos]}): "
            context += (" " if context else "") + head
            first_def_at[(word, pos)] = len(context) + 3          # after "1. "
            context += "; ".join(f"{k}. {d}" for k, d in enumerate(senses[word][pos], 1)) + "."
        for pos in entry:
            out.append({"id": f"{lemma}/{pos}", "title": lemma, "context": context,
                        "question": f"What does {lemma} mean as a{'n' if pos in 'ar' else ''} "
                                    f"{POS_NAMES[pos]}?",
                        "answers": {"text": [entry[pos][0]], "answer_start": [first_def_at[(lemma, pos)]]}})
    return out
