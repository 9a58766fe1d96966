"""Convert parameter trees between the scanned and unscanned layouts.

Unscanned (scan_layers=False):  {stack}/layers_0/..., {stack}/layers_1/..., ...
Scanned   (scan_layers=True):   {stack}/layers/...  every leaf with a leading [N] axis

Checkpoints can be written in either layout; the HF converter and anything that
names single layers works on the unscanned one.  Both functions work on pure
nested dicts (nnx.state(model, nnx.Param).to_pure_dict()) of numpy or jax arrays
and leave everything outside the layer stacks untouched.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

STACKS = ("encoder", "decoder")
_LAYER = re.compile(r"^layers_(\d+)$")


def _stack_fn(arrays):
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np.stack(arrays)
    return jnp.stack(arrays)


def unscan_params(params: dict) -> dict:
    """{stack}/layers/<leaf [N, ...]>  ->  {stack}/layers_i/<leaf [...]>."""
    out = dict(params)
    for stack in STACKS:
        if stack in out and isinstance(out[stack], dict) and "layers" in out[stack]:
            s = dict(out[stack])
            layers = s.pop("layers")
            n = jax.tree.leaves(layers)[0].shape[0]
            for i in range(n):
                s[f"layers_{i}"] = jax.tree.map(lambda a: a[i], layers)
            out[stack] = s
    return out


def scan_params(params: dict) -> dict:
    """{stack}/layers_i/<leaf>  ->  {stack}/layers/<leaf stacked on a new axis 0>."""
    out = dict(params)
    for stack in STACKS:
        if stack not in out or not isinstance(out[stack], dict):
            continue
        s = dict(out[stack])
        idx = sorted(int(m.group(1)) for k in s if (m := _LAYER.match(k)))
        if not idx:
            continue
        if idx != list(range(len(idx))):
            raise ValueError(f"{stack}: layer indices are not 0..N-1: {idx}")
        layers = [s.pop(f"layers_{i}") for i in idx]
        s["layers"] = jax.tree.map(lambda *a: _stack_fn(a), *layers)
        out[stack] = s
    return out
