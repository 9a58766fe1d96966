"""JSON output files without NaN or Infinity literals.

`json.dumps` writes a non-finite float as the bare word NaN / Infinity, which is not JSON (jq, JS
and most parsers refuse the file).  Every t5x-lite writer goes through `dumps` / `dump`: a
non-finite number becomes null and, when the top-level value is an object, the places where that
happened are listed under "nonfinite" (e.g. ["loss", "cells[2].metrics.glue"]), so a reader can
tell a missing value from a diverged one.  Finite values are written as json would write them;
numpy scalars and arrays become plain numbers and lists.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

NONFINITE_KEY = "nonfinite"


def sanitize(obj: Any) -> tuple[Any, list[str]]:
    """(a copy of `obj` with every non-finite float replaced by None, the paths where that happened).
    A path names dict keys with dots and the list index of nested containers ("cells[2].metrics.glue");
    a list of numbers is named once by its own path ("token_log_probs")."""
    bad: list[str] = []
    clean = _clean(obj, "", bad)
    return clean, list(dict.fromkeys(bad))


def _clean(obj, path: str, bad: list[str]):
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        x = float(obj)
        if math.isfinite(x):
            return x
        bad.append(path or "$")
        return None
    if isinstance(obj, dict):
        return {k: _clean(v, f"{path}.{k}" if path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f"{path}[{i}]" if isinstance(v, (dict, list, tuple)) else path, bad)
                for i, v in enumerate(obj)]
    if hasattr(obj, "tolist"):            # numpy arrays and scalars (np.bool_, ...)
        return _clean(obj.tolist(), path, bad)
    return obj


def dumps(obj: Any, *, flag: bool = True, **kwargs) -> str:
    """json.dumps(obj) with non-finite numbers as null (allow_nan=False, so none can slip through);
    with `flag`, a top-level object gets "nonfinite": [paths] when any was replaced."""
    clean, bad = sanitize(obj)
    if bad and flag and isinstance(clean, dict):
        before = clean.get(NONFINITE_KEY)
        clean[NONFINITE_KEY] = list(dict.fromkeys((before if isinstance(before, list) else []) + bad))
    return json.dumps(clean, allow_nan=False, **kwargs)


def dump(obj: Any, f, **kwargs) -> None:
    """`dumps` into an open text file."""
    f.write(dumps(obj, **kwargs))


def nonfinite_paths(obj: Any) -> list[str]:
    """Where `obj` holds non-finite numbers ([] when none)."""
    return sanitize(obj)[1]
