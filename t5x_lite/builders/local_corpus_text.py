"""Text extraction and cleaning for the local pre-training corpus (used by builders/local_corpus.py).

Pure functions over text/bytes, so tests can feed them tiny inline samples:
  documents      collapse, split_long, pack (paragraphs -> documents of at most MAX_DOC_CHARS), dedup
  reST           rst_paragraphs (Python and Linux docs: directives, code, tables and inline markup removed)
  dictd          dict_entries (.dict + .index -> entries), clean_dict_entry, strip_gcide_markup,
                 drop_wordnet_blocks (GCIDE senses taken from WordNet: WordNet glosses are the inputs of
                 the local_wordnet_lexname / local_qa_wordnet tasks, so they must not be pre-trained on)
  fortune        split_fortunes (records between lines that are exactly "%")
  bible          bible_chapters (output of `bible -p DIR gen1:1-rev22:21`)
  Gutenberg      strip_gutenberg, plain_paragraphs
"""

from __future__ import annotations

import re

MAX_DOC_CHARS = 3000        # documents are split at paragraph / sentence boundaries below this
                            # (plus the section titles carried in front of a document's first paragraph)
MIN_SECTION_CHARS = 500     # a section heading starts a new document once the current one is this long
MIN_DOC_CHARS = 50          # shorter documents (a lone title, a stub file) are dropped


# ----------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------

def collapse(text: str) -> str:
    """All runs of whitespace (newlines included) -> one space."""
    return " ".join(text.split())


def mostly_text(text: str, min_ratio: float = 0.5) -> bool:
    """At least `min_ratio` of the non-space characters are letters (drops ASCII art, tables, hex dumps)."""
    chars = [c for c in text if not c.isspace()]
    return bool(chars) and sum(c.isalpha() for c in chars) >= min_ratio * len(chars)


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def split_long(text: str, max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """`text` in pieces of at most max_chars: at sentence ends, else at spaces, else hard cuts."""
    if len(text) <= max_chars:
        return [text]
    pieces, cur = [], ""
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > max_chars:           # one over-long "sentence": break at a space
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if cur:
                pieces.append(cur)
                cur = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if cur and len(cur) + 1 + len(sentence) > max_chars:
            pieces.append(cur)
            cur = sentence
        else:
            cur = f"{cur} {sentence}" if cur else sentence
    if cur:
        pieces.append(cur)
    return [p for p in pieces if p]


def pack(units, max_chars: int = MAX_DOC_CHARS, min_section: int = MIN_SECTION_CHARS,
         min_doc: int = MIN_DOC_CHARS, sep: str = "\n") -> list[str]:
    """Paragraphs -> documents.  `units` are strings or (text, is_heading) pairs; consecutive units are
    joined with `sep` up to max_chars; a heading starts a new document once the current one holds
    min_section characters, and never ends one (it moves on with the text it heads, even where that
    makes the document longer than max_chars by the heading's length)."""
    docs, cur, heads, size = [], [], [], 0

    def flush():
        nonlocal size
        carry = []
        while cur and heads[-1] and len(cur) > 1:  # a trailing heading belongs to the next document
            carry.insert(0, cur.pop())
            heads.pop()
        if cur:
            docs.append(sep.join(cur))
        cur.clear()
        heads.clear()
        cur.extend(carry)
        heads.extend([True] * len(carry))
        size = sum(len(c) + len(sep) for c in cur)

    for unit in units:
        text, heading = (unit, False) if isinstance(unit, str) else unit
        for i, piece in enumerate(split_long(text, max_chars)):
            is_head = heading and i == 0
            only_heads = all(heads)          # a document never ends right after its title
            if cur and not only_heads and (size + len(piece) > max_chars or (is_head and size >= min_section)):
                flush()
            cur.append(piece)
            heads.append(is_head)
            size += len(piece) + len(sep)
    flush()
    return [d for d in docs if len(d) >= min_doc]


def dedup(items, seen: set | None = None) -> tuple[list[str], int]:
    """Items in order, exact duplicates (also of items already in `seen`, which is updated) dropped;
    returns (kept, number dropped)."""
    seen = set() if seen is None else seen
    items = list(items)
    kept = []
    for item in items:
        if item not in seen:
            seen.add(item)
            kept.append(item)
    return kept, len(items) - len(kept)


# ----------------------------------------------------------------------------
# reStructuredText (light: the prose stays, markup and code go)
# ----------------------------------------------------------------------------

_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+.:_<>!$%&,/;?@|])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\.\.\s+(?:\|[^|]+\|\s+)?([\w:.+-]+)::(?:\s+(.*))?$")
_FOOTNOTE = re.compile(r"^\.\.\s+\[[^\]]+\]\s*(.*)$")
_OPTION = re.compile(r"^:[^:`\s][^:`]*:(\s.*)?$")
_GRID_BORDER = re.compile(r"^\+[-=+:]+\+$")
_SIMPLE_BORDER = re.compile(r"^=+( +=+)+$")
_FIELD = re.compile(r"^:([A-Za-z][^:`]*):\s+(?=\S)")
_BARE_FIELD = re.compile(r":[\w-]+:(\s+\d+)?")
_BULLET = re.compile(r"^([-*+\u2022]|\d+[.)]|#\.|\(\d+\)|[a-z][.)])\s+\S")
# directives whose body is prose (the directive line itself is dropped or rewritten)
PROSE_DIRECTIVES = {
    "note", "warning", "attention", "caution", "danger", "error", "hint", "important", "tip", "admonition",
    "seealso", "impl-detail", "topic", "sidebar", "rubric", "centered", "glossary", "hlist", "container",
    "only", "class", "cssclass", "epigraph", "highlights", "pull-quote", "compound", "deprecated-removed",
    "versionadded", "versionchanged", "deprecated"}
_NO_ARG_TEXT = {"only", "class", "cssclass", "container", "hlist", "glossary", "seealso"}
_VERSION_TEXT = {"versionadded": "New in version {}.", "versionchanged": "Changed in version {}.",
                 "deprecated": "Deprecated since version {}.", "deprecated-removed": "Deprecated since version {}."}
# API description directives (Sphinx domains): the signature is kept as a line, then the body
_SIGNATURE = re.compile(r"^(?:(?:py|c|cpp|js|rst|std):)?(function|method|class|attribute|data|exception|module|"
                        r"decorator|decoratormethod|classmethod|staticmethod|abstractmethod|coroutinefunction|"
                        r"coroutinemethod|describe|object|envvar|option|cmdoption|opcode|pdbcommand|macro|"
                        r"type|member|var|struct|union|enum|enumerator|program|monitoring-event|"
                        r"property)$")


def strip_rst_inline(text: str) -> str:
    """Inline markup -> plain text: roles, literals, references, emphasis, footnote references."""
    def role(m):
        inner = m.group(1)
        target = re.match(r"^(.*?)\s*<[^<>]+>$", inner, re.S)
        if target and target.group(1):
            return target.group(1)
        inner = inner.lstrip("!")
        return inner[1:].rsplit(".", 1)[-1] if inner.startswith("~") else inner
    text = re.sub(r":[\w.+-]+(?::[\w.+-]+)*:`([^`]*)`", role, text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`<]*?)\s*<[^`>]*>`__?", r"\1", text)           # `text <url>`_
    text = re.sub(r"`([^`]+)`__?", r"\1", text)                          # `reference`_
    text = re.sub(r"`([^`]+)`", r"\1", text)                             # `default role`
    text = re.sub(r"\s?\[(?:#[\w-]*|\*|\d+|[A-Za-z][\w.-]*)\]_", "", text)   # [#]_ [1]_ [CIT]_
    text = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*\\])\*(\S(?:.*?\S)?)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\|(\w[\w -]*)\|_{0,2}", r"\1", text)                 # |substitution|
    return text.replace("\\ ", "").replace("\\", "")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_paragraphs(text: str) -> list[tuple[str, bool]]:
    """reST source -> [(paragraph, is_section_title)], in order.  Dropped: comments, targets,
    substitution definitions, non-prose directives (code-block, toctree, kernel-doc, image, table,
    literalinclude, ...) with their bodies, literal blocks after '::', doctest blocks, grid tables,
    table borders, section adornments and directive options.  Prose directives (note, warning,
    versionadded, function/class signatures, ...) keep their text."""
    lines = [ln.expandtabs(8).rstrip() for ln in text.splitlines()]
    out: list[tuple[str, bool]] = []
    para: list[str] = []

    def end(heading: bool = False):
        if para:
            body = strip_rst_inline(collapse(" ".join(para)))
            if body.endswith("::"):
                body = body[:-2].rstrip() if body[-3:-2] in (" ", "") else body[:-1]
            if _BARE_FIELD.fullmatch(body):          # ":orphan:", ":tocdepth: 2" (file-wide settings)
                body = ""
            body = _FIELD.sub(r"\1: ", body)          # ":Author: X" (a field list) -> "Author: X"
            if body and not body.startswith(">>>") and (heading or mostly_text(body)):
                out.append((body, heading))
            para.clear()

    i, n = 0, len(lines)
    skip_above: int | None = None       # skip lines indented more than this (a dropped block's body)
    literal_after: int | None = None    # the previous paragraph ended in '::' at this indent
    options = False                     # directly after a directive line: its :option: lines
    while i < n:
        line = lines[i]
        stripped, ind = line.strip(), _indent(line)
        i += 1
        if skip_above is not None:
            if not stripped or ind > skip_above:
                continue
            skip_above = None
        if not stripped:
            end()
            options = False
            continue
        if literal_after is not None:
            lit, literal_after = literal_after, None
            if ind > lit:               # the literal block: every line indented more than the paragraph
                end()
                skip_above = lit
                continue
        if options and _OPTION.match(stripped):
            continue
        options = False
        if _ADORNMENT.match(stripped) and (len(stripped) >= 4 or len(para) == 1):
            if len(para) == 1:           # underline: the paragraph is a title
                end(heading=True)
            else:                        # overline or transition
                end()
            continue
        if _GRID_BORDER.match(stripped):
            end()
            while i < n and lines[i].strip():    # the whole table, up to the next blank line
                i += 1
            continue
        if _SIMPLE_BORDER.match(stripped):
            end()
            continue
        if stripped.startswith(".."):
            end()
            m = _DIRECTIVE.match(stripped)
            if m:
                name, arg = m.group(1), (m.group(2) or "").strip()
                if name in PROSE_DIRECTIVES:
                    if name in _VERSION_TEXT and arg:
                        out.append((_VERSION_TEXT[name].format(arg.split()[0].rstrip(",")), False))
                    elif arg and name not in _NO_ARG_TEXT:
                        para.append(arg)
                        end(heading=name == "rubric")
                    options = True
                    continue
                if _SIGNATURE.match(name):
                    if arg:
                        out.append((strip_rst_inline(arg), False))
                    options = True
                    continue
            else:
                m = _FOOTNOTE.match(stripped)
                if m:                        # footnote / citation: keep its text
                    if m.group(1):
                        para.append(m.group(1))
                    continue
            skip_above = ind                 # comment, target or other directive: drop it and its body
            continue
        if para and (_BULLET.match(stripped) or _OPTION.match(stripped)):
            end()
        para.append(stripped)
        if stripped.endswith("::"):
            end()
            literal_after = ind
    end()
    return out


# ----------------------------------------------------------------------------
# dictd databases (.dict[.dz] + .index)
# ----------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64_number(s: str) -> int:
    """dictd's base-64 numbers (offsets and lengths in .index files)."""
    value = 0
    for ch in s:
        value = value * 64 + _B64.index(ch)
    return value


def dict_entries(data: bytes, index_text: str) -> list[str]:
    """Every entry of a dictd database, in file order, once each (several headwords may share one
    entry); the 00-database-* header entries are skipped."""
    spans = set()
    for line in index_text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith(("00-database", "00database")):
            continue
        spans.add((b64_number(parts[1]), b64_number(parts[2])))
    out = []
    for start, length in sorted(spans):
        raw = data[start:start + length]
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(raw.decode("cp1252", errors="replace"))
    return out


_GCIDE_SOURCE = re.compile(r"\[[^\]\n]*(?:Webster|WordNet|PJC|Suppl\.|\bRP\b|\bMW\b|\bAS\b)[^\]\n]*\]")


def strip_gcide_markup(text: str) -> str:
    """GCIDE: pronunciations `\\Co*ag"u*late\\` and source tags `[1913 Webster]`, `[WordNet 1.5]`,
    `[PJC]` removed; cross references `{Cogent}` -> `Cogent`."""
    text = re.sub(r"[ \t]*\\[^\\\n]{0,120}\\", "", text)
    text = _GCIDE_SOURCE.sub("", text)
    return text


_TAG_LINE = re.compile(r"^[ \t]*(\[[^\]\n]*\])", re.M)     # a source tag opening a line (text may follow it)
_WORDNET_TAG = re.compile(r"\[[^\]\n]*WordNet[^\]\n]*\]")


def drop_wordnet_blocks(entry: str) -> str:
    """GCIDE without its WordNet text.  A block is the text up to a source tag that opens a line
    (`[1913 Webster]`, `[PJC]`, `[WordNet 1.5]`); every block holding a tag that names WordNet
    (`[WordNet 1.5 +PJC]`, `[1913 Webster + WordNet 1.5]`, an inline `[WordNet sense 1]`) is removed.
    When the first block goes and a later one stays, the headword line is kept for it.  Entries with a
    lower-case headword are dropped whole: GCIDE took most of them from WordNet 1.5, some tagged
    [1913 Webster] or [PJC] all the same.  Returns "" when nothing is left."""
    if not entry[:1].isupper():
        return ""
    kept, pos, first_dropped = [], 0, False
    bounds = [m.end(1) for m in _TAG_LINE.finditer(entry) if _GCIDE_SOURCE.fullmatch(m.group(1))]
    for end in bounds + [len(entry)]:
        block = entry[pos:end]
        if _WORDNET_TAG.search(block):
            first_dropped = first_dropped or pos == 0
        elif block.strip():
            kept.append(block)
        pos = end
    if kept and first_dropped:
        kept.insert(0, entry.split("\n", 1)[0] + "\n")
    return "".join(kept)


def clean_dict_entry(entry: str, gcide: bool = False) -> str:
    """One dictd entry -> one line: markup removed, {cross references} unbraced, whitespace collapsed.
    For GCIDE the WordNet-sourced blocks are dropped first (drop_wordnet_blocks)."""
    if gcide:
        entry = strip_gcide_markup(drop_wordnet_blocks(entry))
    entry = re.sub(r"\{([^{}]*)\}", r"\1", entry)
    return collapse(re.sub(r"\s+([,.;])", r"\1", entry) if gcide else entry)


# ----------------------------------------------------------------------------
# fortune, bible, Gutenberg texts
# ----------------------------------------------------------------------------

def split_fortunes(text: str) -> list[str]:
    """A fortune file -> its records (separated by lines that are exactly '%'), whitespace collapsed."""
    records, cur = [], []
    for line in text.splitlines():
        if line.rstrip("\r") == "%":
            records.append(collapse("\n".join(cur)))
            cur = []
        else:
            cur.append(line)
    records.append(collapse("\n".join(cur)))
    return [r for r in records if r]


def bible_chapters(text: str) -> list[tuple[str, str]]:
    """`bible -p DIR "gen1:1-rev22:21"` output -> [(chapter title, chapter text without verse numbers)].
    Chapters are blank-line separated blocks: a title line ("Genesis 1"), then verses "  1 In the ..."
    whose wrapped continuation lines are not indented."""
    chapters, title = [], None
    for block in re.split(r"\n\s*\n", text):
        if not block.strip():
            continue
        if re.match(r"^\s+\d+ ", block):
            verses = [collapse(v) for v in re.split(r"(?m)^\s+\d+ ", block) if v.strip()]
            chapters.append((title or "", " ".join(verses)))
            title = None
        else:
            title = collapse(block)
    return chapters


def strip_gutenberg(text: str) -> str:
    """Project Gutenberg boilerplate removed: everything up to the '*** START OF ...' line and from
    '*** END OF ...' / 'End of (the) Project Gutenberg ...' on."""
    start = re.search(r"\*\*\* ?START OF[^\n]*\n", text)
    if start:
        text = text[start.end():]
    end = re.search(r"\*\*\* ?END OF|End of (the )?Project Gutenberg", text)
    if end:
        text = text[:end.start()]
    return text


def plain_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, whitespace collapsed; paragraphs naming Gutenberg dropped."""
    paragraphs = [collapse(p) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if p and "gutenberg" not in p.lower()]
