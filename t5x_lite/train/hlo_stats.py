"""What a compiled XLA program says about itself: the collectives in its HLO text (with the
bytes of their per-device results), its largest buffers, and the SPMD partitioner's
"Involuntary full rematerialization" reports.  Used by `t5x-lite train --compile-only`
(t5x_lite/train/compile_only.py) and tools/count_collectives.py.

Counts are static: instructions in the optimized HLO text.  A collective inside a loop body
(lax.scan over layers or microbatches) is counted once, although it runs once per iteration.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
# `%name = f32[..] all-gather(...)` or the async `all-gather-start(...)`; `-done` is not a second one.
_OP = re.compile(r"= (\S.*?) (" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_ARRAY = re.compile(r"\b(pred|[a-z]+)(\d*)\[([\d,]*)\]")
# one instruction of a computation: `[ROOT] [%]name = TYPE opcode(`
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S.*?) ([\w\-]+)\(", re.M)
# opcodes whose result is a view or a name for another buffer, not a buffer of its own
_NOT_BUFFERS = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "copy-done",
                "all-gather-done", "all-reduce-done", "collective-permute-done", "opt-barrier"}


def type_bytes(result_type: str) -> int:
    """Size of an HLO result type such as `f32[4,8]{1,0}` or a tuple of them (pred = 1 byte)."""
    total = 0
    for kind, bits, dims in _ARRAY.findall(result_type):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * (1 if kind == "pred" or not bits else int(bits) // 8)
    return total


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """{collective: {"count": instructions, "bytes": sum of their per-device result sizes}}, plus
    SLICED_ALL_REDUCE: {"count": values, "bytes": per-device bytes kept} (see sliced_all_reduces)."""
    out = {c: {"count": 0, "bytes": 0} for c in COLLECTIVES}
    for m in _OP.finditer(hlo_text):
        out[m.group(2)]["count"] += 1
        out[m.group(2)]["bytes"] += type_bytes(m.group(1))
    n, b = sliced_all_reduces(hlo_text)
    out[SLICED_ALL_REDUCE] = {"count": n, "bytes": b}
    return out


# any instruction: `[ROOT] [%]name = TYPE opcode(operands)...` (a tuple TYPE may hold spaces)
_ANY = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)$", re.M)
_NAME = re.compile(r"%([\w.\-]+)")
_GTE_INDEX = re.compile(r"index=(\d+)")
SLICED_ALL_REDUCE = "reduce-scatter as all-reduce + slice"


def sliced_all_reduces(hlo_text: str) -> tuple[int, int]:
    """(values, per-device bytes after the slice) of all-reduce results that every user only slices to
    this device's part (a user that reads partition-id/replica-id or is a dynamic-slice, and returns
    fewer bytes than it reads).  That is a reduce-scatter as XLA:CPU writes it: its pipeline has no
    ReduceScatterCreator pass, which turns exactly this pattern into a reduce-scatter on TPU and GPU.
    A tuple all-reduce (the CPU combiner's) counts each of its values."""
    instrs = {}
    for m in _ANY.finditer(hlo_text):
        name, rtype, op, rest = m.groups()
        instrs[name] = (rtype, op, _NAME.findall(rest.split("), ")[0] if op != "fusion" else rest.split("kind=")[0]))
    users: dict[str, list[str]] = {}
    for name, (_, _, operands) in instrs.items():
        for o in operands:
            users.setdefault(o, []).append(name)
    device_index = {n for n, (_, op, _) in instrs.items() if op in ("partition-id", "replica-id")}

    def sliced(value) -> int:
        """Bytes of this device's slice if every user slices `value`, else 0."""
        size, out = type_bytes(instrs[value][0]), 0
        for u in users.get(value, []):
            utype, uop, uops = instrs[u]
            if not (uop == "dynamic-slice" or device_index & set(uops)) or type_bytes(utype) >= size:
                return 0
            out = max(out, type_bytes(utype))
        return out

    count = total = 0
    for name, (rtype, op, _) in instrs.items():
        if op not in ("all-reduce", "all-reduce-start"):
            continue
        values = [name] if not rtype.startswith("(") else [
            u for u in users.get(name, []) if instrs[u][1] == "get-tuple-element"]
        for v in values:
            b = sliced(v)
            count, total = count + (b > 0), total + b
    return count, total


def count_collectives(hlo_text: str) -> tuple[dict[str, int], int]:
    """(instructions of each collective, total bytes of their per-device results)."""
    per = {k: v for k, v in collectives(hlo_text).items() if k in COLLECTIVES}
    return {c: v["count"] for c, v in per.items()}, sum(v["bytes"] for v in per.values())


def largest_instruction(hlo_text: str) -> tuple[str, str, int] | None:
    """(name, result type, bytes) of the largest buffer an instruction of the ENTRY computation
    creates (parameters, tuples and views excluded), or None."""
    start = hlo_text.find("\nENTRY ")
    if start < 0:
        return None
    end = hlo_text.find("\n}", start)
    best = None
    for m in _INSTR.finditer(hlo_text[start:end if end > 0 else None]):
        name, rtype, op = m.groups()
        if op in _NOT_BUFFERS or rtype.startswith("("):
            continue
        size = type_bytes(rtype)
        if best is None or size > best[2]:
            best = (name, rtype.split("{")[0], size)
    return best


def count_constraints(stablehlo_text: str) -> int:
    return len(re.findall(r"sdy\.sharding_constraint|custom_call @Sharding", stablehlo_text))


@contextlib.contextmanager
def _stderr_to(path):
    """Redirect file descriptor 2 (where XLA's C++ logging goes) to `path`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def compile_counting_remats(lowered):
    """(compiled, number of "Involuntary full rematerialization" reports of the SPMD partitioner:
    a sharding it could not reach efficiently, so it replicated the tensor and re-partitioned it)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "stderr")
        with _stderr_to(log):
            compiled = lowered.compile()
        with open(log) as f:
            remats = sum("Involuntary full rematerialization" in line for line in f)
    return compiled, remats
