"""The device mesh and the one table of logical axis rules.

Every parameter and the main activations carry *logical* axis names (T5X
style).  `LOGICAL_AXIS_RULES` below is the only place that says how those names
map onto the physical mesh axes ``(data, fsdp, tensor)`` (MaxText style).

Parameter names:   vocab, embed, embed_factor, mlp, heads, kv, relpos_buckets, layers, classes, abspos
Activation names:  batch, length, act_embed, act_heads, act_mlp, act_vocab, act_kv

Parameters and activations use different names for the embedding dimension on
purpose: parameters are FSDP-sharded along `embed`, while activations are
already sharded along `batch` -> (data, fsdp); mapping one array's two
dimensions onto the same mesh axis is an error (DuplicateSpecError).

Besides the table, this module turns a config's ``mesh`` section into a
`jax.sharding.Mesh`, and derives the shardings of everything the train step
touches:

* params: from each ``nnx.Param``'s logical names through the table;
* optimizer state: from the state's *own* shapes (Adafactor's factored
  second-moment vectors are rank-1/rank-(n-1) and cannot reuse the param spec);
* batches: the leading (batch) dimension over ``(data, fsdp)``.

A dimension whose size is not divisible by its mesh axes is replicated instead
(so tiny test models and odd vocab sizes still run on any mesh).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sys
from typing import Any, Mapping, Sequence

from t5x_lite.errors import (PEER_LOST_EXIT_CODE, _PEER_LOST, UserError, _peer_lost_line,  # noqa: F401
                             peer_failure, peer_lost)

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis, tuple of mesh axes, or None (replicated).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # --- parameters ---
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_factor", None),   # the narrow side of a factorised embedding's projection (embedding_size)
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

BATCH_AXES = ("data", "fsdp")


# ----------------------------------------------------------------------------
# Multi-host
# ----------------------------------------------------------------------------

DEFAULT_HEARTBEAT_TIMEOUT_S = 30  # jax.distributed's own default is 100 s


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S) -> bool:
    """Start multi-process JAX when the command line or the cluster asks for it.

    Explicit flags win.  Without flags, JAX's own cluster detection is tried
    where it exists (Cloud TPU pods, Slurm, Open MPI); on a plain machine
    nothing happens.  Must run before any other JAX call.  Returns True when
    jax.distributed was initialized.

    A dead peer: JAX's coordination service notices missing heartbeats after
    `heartbeat_timeout_s` and aborts every other process with a C++ fatal log
    and a stack dump; a collective already waiting on the peer fails at once.
    Both end as ONE line and exit code PEER_LOST_EXIT_CODE (`_guard_stderr`,
    `exit_if_peer_lost`).
    """
    explicit = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise UserError("multi-host needs all three of --coordinator_address, --num_processes and "
                            "--process_id (or none of them, for auto-detection)")
        if not 0 <= int(process_id) < int(num_processes):
            raise UserError(f"--process_id must be in [0, {num_processes}), got {process_id}")
        where = dict(coordinator_address=coordinator_address, num_processes=int(num_processes),
                     process_id=int(process_id))
    elif _cluster_detected():
        where = {}  # JAX auto-detects coordinator and ranks
    else:
        return False
    if int(heartbeat_timeout_s) < 1:
        raise UserError(f"--heartbeat_timeout_seconds must be >= 1, got {heartbeat_timeout_s}")
    _guard_stderr()
    import jax
    jax.distributed.initialize(**where, heartbeat_timeout_seconds=int(heartbeat_timeout_s))
    return True


def _cluster_detected() -> bool:
    """Environments where jax.distributed.initialize() can fill in everything itself."""
    env = os.environ
    slurm = "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1
    mpi = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    # GKE TPU slices export the worker list; on Cloud TPU VMs JAX reads the metadata server
    # (jax.distributed.initialize() is harmless on a single-host TPU VM too).
    tpu = len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1
    try:  # a cheap file check inside JAX, no network
        from jax._src.clusters.cloud_tpu_cluster import running_in_cloud_tpu_vm
        tpu = tpu or bool(running_in_cloud_tpu_vm)
    except Exception:
        pass
    return slurm or mpi or tpu


@contextlib.contextmanager
def exit_if_peer_lost():
    """Inside: a collective that fails because a peer died ends the process at once with one line."""
    try:
        yield
    except Exception as e:
        why = peer_failure(e)
        if why is None:
            raise
        peer_lost(why)


def _guard_stderr() -> None:
    """Route fd 2 through `_stderr_guard`, a small filter process that outlives this one.  JAX's
    coordination service ends a process whose peer died with LOG(FATAL): a fatal line, a stack dump,
    other threads' tracebacks, then abort().  The filter replaces all that with one line; the abort
    becomes _exit(6) (no core dump, no "Aborted" from the shell).  Everything else passes unchanged
    (W/E/F log lines are held up to 3 s first, in case a fatal line follows)."""
    import ctypes
    import subprocess

    if os.environ.get("T5X_LITE_RAW_STDERR") == "1":  # debugging: JAX's own output, unfiltered
        return
    sys.stderr.flush()
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path.insert(0, {parent!r}); "
            "from t5x_lite.partitioning import _stderr_guard; _stderr_guard()")
    guard = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=2, stderr=2)
    os.dup2(guard.stdin.fileno(), 2)
    guard.stdin.close()
    try:
        libc = ctypes.CDLL(None)
        libc.signal.argtypes, libc.signal.restype = (ctypes.c_int, ctypes.c_void_p), ctypes.c_void_p
        libc.signal(signal.SIGABRT, ctypes.cast(libc._exit, ctypes.c_void_p))  # handler(6) = _exit(6)
    except (OSError, AttributeError):  # no C library to ask: the abort stays an abort
        pass


_NOISY = re.compile(rb"[WEF]\d{4} \d\d:\d\d:\d\d|ERROR:absl:")
_FATAL = b"Terminating process because the JAX distributed service detected fatal errors"


def _fatal_reason(text: bytes) -> str:
    m = re.search(rb"stopped sending heartbeats\):\s*([\d, \n]+?)\s*\n\D", text) or \
        re.search(rb"Task (\d+) heartbeat timeout", text)
    if m:
        return f"process {' '.join(m.group(1).decode().split())} stopped sending heartbeats"
    if re.search(rb"Socket closed|Connection refused|Failed to connect|UNAVAILABLE", text):
        return "process 0, the coordinator, is unreachable"
    return "JAX's distributed service reported a fatal error"


def _stderr_guard(inp: int = 0, out: int = 1, hold_s: float = 3.0) -> None:
    """The filter of `_guard_stderr` (runs in its own process until its input closes)."""
    import select
    import time

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # live until the trainer's last byte, whatever it is sent
    ours = (": error: " + _PEER_LOST).encode()
    held, fatal, buf, until, last, done, eof = [], [], b"", 0.0, b"\n", False, False

    def write(data: bytes, fresh_line: bool = False) -> None:
        nonlocal last
        data = b"\n" + data if fresh_line and last != b"\n" else data
        last = data[-1:] or last
        while data:
            data = data[os.write(out, data):]

    while not eof and not done:
        if select.select([inp], [], [], 0.1)[0]:
            data = os.read(inp, 1 << 16)
            buf, eof = buf + data, not data
        *parts, buf = re.split(rb"(?<=[\r\n])", buf)
        if eof:
            parts, buf = parts + [buf], b""
        for seg in parts:
            noisy = _NOISY.search(seg)
            if noisy and noisy.start() and not held and not fatal:  # a log line right after a progress bar
                write(seg[:noisy.start()])
                seg = seg[noisy.start():]
            if fatal or _FATAL in seg:  # JAX's fatal line and everything after it
                fatal.append(seg)
                until = until if len(fatal) > 1 else time.monotonic() + 1.0
            elif ours in seg:  # the trainer's own peer-lost line (exit_if_peer_lost) is the last word
                write(seg, fresh_line=True)
                done = True
                break
            elif held or noisy:
                until = until if held else time.monotonic() + hold_s
                held.append(seg)
            else:
                write(seg)
        if fatal and (eof or time.monotonic() > until):
            write((_peer_lost_line(_fatal_reason(b"".join(held + fatal))) + "\n").encode(), fresh_line=True)
            done = True
        elif held and (eof or time.monotonic() > until):
            write(b"".join(held))
            held = []
        if buf and not held and not fatal and buf[:1] not in (b"W", b"E", b"F"):
            write(buf)  # a partial line (a progress bar) goes out at once
            buf = b""
    while os.read(inp, 1 << 16):  # after the one line: swallow the rest until the trainer is gone
        pass


# ----------------------------------------------------------------------------
# Mesh
# ----------------------------------------------------------------------------

def resolve_mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with at most one -1 filled so the product is num_devices."""
    try:
        shape = [int(mesh_cfg[a]) for a in MESH_AXES]
    except KeyError as e:
        raise UserError(f"config mesh is missing axis {e.args[0]!r} (need data, fsdp, tensor)") from None
    except (TypeError, ValueError):
        raise UserError(f"mesh sizes must be integers, got {dict(mesh_cfg)}") from None
    auto = [i for i, s in enumerate(shape) if s == -1]
    if len(auto) > 1:
        raise UserError(f"at most one mesh axis may be -1 (auto), got {dict(zip(MESH_AXES, shape))}")
    if any(s == 0 or s < -1 for s in shape):
        raise UserError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, shape))}")
    known = math.prod(s for s in shape if s != -1)
    if auto:
        if num_devices % known:
            raise UserError(f"mesh {dict(zip(MESH_AXES, shape))}: {num_devices} devices are not "
                            f"divisible by {known}")
        shape[auto[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise UserError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices but "
                        f"{num_devices} are available (use -1 on one axis to auto-fill)")
    return tuple(shape)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[Any] | None = None):
    """A (data, fsdp, tensor) mesh with Auto axis types (jax.make_mesh defaults to Explicit)."""
    import jax
    from jax.sharding import AxisType

    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


# ----------------------------------------------------------------------------
# Logical names -> PartitionSpec
# ----------------------------------------------------------------------------

def _mesh_size(mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(names: Sequence[str | None] | None, shape: Sequence[int] | None = None,
                    mesh=None, rules=LOGICAL_AXIS_RULES):
    """PartitionSpec for an array whose dimensions carry logical `names`.

    Unknown names raise (a typo in a model must not silently replicate).  With
    `shape` and `mesh`, dimensions not divisible by their mesh axes are
    replicated, and so are mesh axes already used by an earlier dimension.
    """
    from jax.sharding import PartitionSpec as P

    if names is None:
        return P()
    table = dict(rules)
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise ValueError(f"logical axis name {name!r} is not in LOGICAL_AXIS_RULES")
        axes = table[name]
        flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        if mesh is not None:
            flat = tuple(a for a in flat if mesh.shape[a] > 1)  # size-1 axes shard nothing
        if any(a in used for a in flat):
            flat = ()
        if flat and shape is not None and mesh is not None and shape[i] % _mesh_size(mesh, flat):
            flat = ()
        used.update(flat)
        out.append(None if not flat else (flat[0] if len(flat) == 1 else flat))
    return P(*out)


def _names_of(spec_leaf) -> tuple | None:
    """Logical names from nnx.get_partition_spec's leaf (a PartitionSpec or None)."""
    if spec_leaf is None:
        return None
    return tuple(spec_leaf)


def param_specs(abstract_state, mesh, rules=LOGICAL_AXIS_RULES):
    """Pure dict of PartitionSpecs for an nnx.State of abstract params."""
    import jax
    from flax import nnx

    logical = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
    shapes = nnx.to_pure_dict(abstract_state)
    return jax.tree.map(lambda names, sds: logical_to_spec(_names_of(names), sds.shape, mesh, rules),
                        logical, shapes, is_leaf=lambda x: x is None or _is_spec(x))


def _is_spec(x) -> bool:
    from jax.sharding import PartitionSpec
    return isinstance(x, PartitionSpec)


def _dict_keys(path) -> tuple:
    import jax
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def opt_state_specs(opt_state_shapes, params_shapes, params_specs):
    """PartitionSpecs for optimizer state, derived from each leaf's own shape.

    Optax states mirror the params tree (their leaves sit under the same dict
    keys), so each leaf is matched to its param by the trailing dict-key path:
      * same shape as the param      -> the param's spec (Adam moments, unfactored Adafactor v);
      * one dimension fewer          -> the param's spec with that dimension dropped
                                        (Adafactor's factored v_row / v_col);
      * anything else (counts, (1,)) -> replicated.
    """
    import jax
    from jax.sharding import PartitionSpec as P

    by_path = {}
    for path, sds in jax.tree_util.tree_flatten_with_path(params_shapes)[0]:
        by_path[_dict_keys(path)] = sds.shape
    spec_by_path = {_dict_keys(path): spec for path, spec in
                    jax.tree_util.tree_flatten_with_path(params_specs, is_leaf=_is_spec)[0]}

    def leaf_spec(path, leaf):
        keys = _dict_keys(path)
        shape = tuple(getattr(leaf, "shape", ()))
        for start in range(len(keys)):  # longest matching suffix first
            pshape = by_path.get(keys[start:])
            if pshape is None:
                continue
            pspec = tuple(spec_by_path[keys[start:]]) + (None,) * (len(pshape) - len(spec_by_path[keys[start:]]))
            if shape == tuple(pshape):
                return P(*pspec)
            if len(shape) == len(pshape) - 1:
                for drop in range(len(pshape)):
                    if tuple(pshape[:drop]) + tuple(pshape[drop + 1:]) == shape:
                        return P(*(pspec[:drop] + pspec[drop + 1:]))
            return P()
        return P()

    return jax.tree_util.tree_map_with_path(leaf_spec, opt_state_shapes)


def named(mesh, specs):
    """PartitionSpec tree -> NamedSharding tree."""
    import jax
    from jax.sharding import NamedSharding
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=_is_spec)


def batch_spec(mesh=None):
    from jax.sharding import PartitionSpec as P
    if mesh is not None:
        axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
        return P(axes if axes else None)
    return P(BATCH_AXES)


def batch_sharding(mesh):
    from jax.sharding import NamedSharding
    return NamedSharding(mesh, batch_spec(mesh))


def global_batch(local_batch: Mapping[str, Any], mesh) -> dict:
    """Per-host numpy batch [local_B, ...] -> global jax.Array [B, ...] sharded over (data, fsdp)."""
    import jax
    import numpy as np

    sharding = batch_sharding(mesh)
    out = {}
    for k, v in local_batch.items():
        v = np.asarray(v)
        global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(sharding, v, global_shape)
    return out


def check_batch_divisible(global_batch_size: int, mesh, num_microbatches: int = 1) -> None:
    shards = _mesh_size(mesh, BATCH_AXES)
    import jax
    if global_batch_size % (num_microbatches * shards) or global_batch_size % jax.process_count():
        raise UserError(f"data.batch_size={global_batch_size} must be divisible by num_microbatches "
                        f"({num_microbatches}) x data*fsdp ({shards}) and by the number of processes "
                        f"({jax.process_count()})")


# ----------------------------------------------------------------------------
# The context every traced computation runs in
# ----------------------------------------------------------------------------

@contextlib.contextmanager
def activate(mesh, rules=LOGICAL_AXIS_RULES):
    """Enter `mesh` and the logical axis rules (MaxText / big_vision style).

    Train, eval, decode and score trace their jitted functions inside this
    context, so `models.layers.constrain` turns logical activation names into
    sharding constraints instead of returning early."""
    import jax
    from flax import nnx

    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        yield mesh


class InMesh:
    """A jitted function that is always traced, lowered and run inside
    `activate(mesh)`.  Calling it is calling the jitted function; `.lower(...)`
    lowers it the same way; `.jitted` is the bare jitted function (traced
    outside the context, its activations carry no sharding constraints)."""

    def __init__(self, jitted, mesh, rules=LOGICAL_AXIS_RULES):
        self.jitted, self.mesh, self.rules = jitted, mesh, rules

    def __call__(self, *args, **kwargs):
        with activate(self.mesh, self.rules):
            return self.jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with activate(self.mesh, self.rules):
            return self.jitted.lower(*args, **kwargs)
