"""Dataset builders that run outside the core import path (only `t5x-lite data build-local` imports them).

  local.py              build the local downstream stand-ins as TFDS array_record datasets
  local_sources.py      the parsers and filters it reads them with (gettext .mo, apt lists, WordNet)
  local_corpus.py       build the English pre-training corpus (gzipped JSONL) from downloaded packages
  local_corpus_text.py  its text extraction and cleaning (reST, dictd/GCIDE, fortune, bible, Gutenberg)
"""
