"""The device mesh and the one table of logical axis rules.

Every parameter and the main activations carry *logical* axis names (T5X
style).  `LOGICAL_AXIS_RULES` below is the only place that says how those names
map onto the physical mesh axes ``(data, fsdp, tensor)`` (MaxText style).

Parameter names:   vocab, embed, mlp, heads, kv, relpos_buckets, layers, classes, abspos
Activation names:  batch, length, act_embed, act_heads, act_mlp, act_vocab, act_kv

Parameters and activations use different names for the embedding dimension on
purpose: parameters are FSDP-sharded along `embed`, while activations are
already sharded along `batch` -> (data, fsdp); mapping one array's two
dimensions onto the same mesh axis is an error (DuplicateSpecError).
"""

from __future__ import annotations

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis, tuple of mesh axes, or None (replicated).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # --- parameters ---
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("relpos_buckets", None),
    ("abspos", None),
    ("layers", None),
    ("classes", None),
    # --- activations ---
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_kv", None),
)
