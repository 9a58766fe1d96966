"""Dataset builders that run outside the core import path (only `t5x-lite data build-local` imports them).

  local.py          build the local downstream stand-ins as TFDS array_record datasets
  local_sources.py  the parsers and filters it reads them with (gettext .mo, apt lists, WordNet)
"""
