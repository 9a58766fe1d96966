"""Shared helpers of the benchmarks under tools/ that compare t5x_lite with Hugging Face PyTorch.

The project's rule for speed figures: measured by a tool (never a timed unit test), on the machine
at hand, as a RATIO against a peer, in ONE run whose repetitions are INTERLEAVED (ours, theirs,
ours, theirs, ...), reporting MEDIANS, with the device model beside the figure and a WARNING when
other load was present.  This module provides each piece:

- `device_description()` / `cpu_model()`: what the figure was measured on.
- `matmul_peak(dtype)`: this run's measured matmul FLOP/s (no machine's peak is ever hard-coded).
- `interleave({name: rep_fn}, reps, warmup)`: round-robin repetitions; each rep_fn does ONE timed
  repetition and returns its seconds; per-name lists and medians come back.
- `LoadMonitor`: how much CPU time OTHER processes used while the repetitions ran.  Sound where a
  load average is not: /proc/loadavg is a 1-minute exponential average of runnable tasks that counts
  this benchmark's own threads and lags the run.  Instead, over the exact timed window, the machine's
  busy CPU time (the "cpu" line of /proc/stat: user + nice + system + irq + softirq + steal jiffies;
  guest time is already inside user) minus the CPU time of THIS process tree (utime + stime of this
  process and every live descendant, e.g. the HF worker, from /proc/PID/stat, plus cutime + cstime,
  which picks up descendants that exited and were reaped inside the window) is what everything else
  used, including a hypervisor's steal.  Divided by the window's wall time it is in cores: a WARNING
  is printed above max(0.1 core, 2% of the CPUs /proc/stat counts).  In a container /proc/stat is
  usually the whole host's, so the figure then covers other tenants too (they do share the cores).
  On a GPU, compute processes outside this tree that nvidia-smi lists are reported as well.
- `HFWorker`: a persistent subprocess (tools/hf_worker.py) that builds the HF model once, then runs
  one repetition per command, so HF reps interleave with in-process JAX reps.  It runs under this
  Python when transformers is importable here, else under $HF_PYTHON.
- `parse_sets` / `apply_sets`: the generic `--set KEY=VALUE` config overrides.
- `print_report(...)`: headline ratio first, then device, load, per-side medians.

Only the standard library is imported at module level (JAX lazily), so the pieces stay cheap.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Mapping

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)


def fail(msg: str):
    """Bad input: one clear line on stderr and exit code 1."""
    raise SystemExit(f"error: {msg}")


# ----------------------------------------------------------------------------- devices
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_description() -> str:
    """'CPU: <model>, N cores' or 'GPU: <kind> x N (host CPU: <model>)' for JAX's default backend."""
    import jax
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"CPU: {cpu_model()}, {os.cpu_count()} cores"
    return f"{dev.platform.upper()}: {dev.device_kind} x {jax.device_count()} (host CPU: {cpu_model()})"


def matmul_peak(dtype: str, n: int | None = None, reps: int = 5) -> float:
    """FLOP/s of the fastest of `reps` jitted n x n x n matmuls on device 0 in `dtype`
    (n defaults to 2048 on CPU, 8192 on an accelerator, where smaller ones do not fill the chip)."""
    import jax
    import jax.numpy as jnp
    if n is None:
        n = 2048 if jax.devices()[0].platform == "cpu" else 8192
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


# ----------------------------------------------------------------------------- interleaving
def interleave(fns: Mapping[str, Callable[[], float]], reps: int, warmup: int = 1) -> dict:
    """Run the named one-repetition callables round-robin (a, b, a, b, ...): `warmup` untimed rounds,
    then `reps` rounds.  Each callable returns its repetition's seconds.  Returns
    {"times": {name: [s, ...]}, "median": {name: s}, "order": [name, ...] of the timed calls}."""
    if reps < 1:
        fail(f"--reps must be >= 1, got {reps}")
    for _ in range(max(warmup, 0)):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = []
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(float(fn()))
            order.append(name)
    return {"times": times, "median": {k: statistics.median(v) for k, v in times.items()}, "order": order}


def timed(fn: Callable[[], object], sync: Callable[[object], object] = lambda x: x) -> float:
    """Seconds of fn() followed by sync(result) (e.g. jax.block_until_ready)."""
    t = time.perf_counter()
    sync(fn())
    return time.perf_counter() - t


# ----------------------------------------------------------------------------- load detection
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)   # user nice system [idle iowait] irq softirq steal


def parse_proc_stat(text: str) -> tuple[int, int, int]:
    """(busy jiffies, steal jiffies, number of CPUs) from the text of /proc/stat."""
    busy = steal = ncpu = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu":
            vals = [int(v) for v in parts[1:]] + [0] * 10
            busy, steal = sum(vals[i] for i in BUSY_FIELDS), vals[7]
        elif parts[0].startswith("cpu") and parts[0][3:].isdigit():
            ncpu += 1
    return busy, steal, ncpu


def parse_pid_stat(text: str) -> tuple[int, int]:
    """(parent pid, utime + stime + cutime + cstime ticks) from the text of /proc/PID/stat."""
    rest = text[text.rfind(")") + 2:].split()   # the command name may hold spaces and parentheses
    return int(rest[1]), sum(int(v) for v in rest[11:15])


def _proc_table(proc: str = "/proc") -> tuple[dict[int, int], dict[int, int]]:
    """({pid: parent pid}, {pid: CPU ticks}) of every process /proc lists."""
    parent, ticks = {}, {}
    for name in os.listdir(proc) if os.path.isdir(proc) else []:
        if name.isdigit():
            try:
                with open(os.path.join(proc, name, "stat")) as f:
                    parent[int(name)], ticks[int(name)] = parse_pid_stat(f.read())
            except (OSError, ValueError, IndexError):
                continue   # exited meanwhile
    return parent, ticks


def tree_pids(root: int, parent: Mapping[int, int]) -> list[int]:
    """root and all its descendants in a {pid: parent pid} table."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_ticks(root: int | None = None, proc: str = "/proc") -> int:
    """CPU ticks of `root` (default: this process) and all its live descendants, reaped children included."""
    parent, ticks = _proc_table(proc)
    return sum(ticks.get(pid, 0) for pid in tree_pids(os.getpid() if root is None else root, parent))


def other_load(busy0: int, busy1: int, own0: int, own1: int, wall_s: float, hz: int) -> float:
    """Average number of cores other processes kept busy: (machine busy - own) ticks / wall ticks."""
    if wall_s <= 0:
        return 0.0
    return max(0, (busy1 - busy0) - (own1 - own0)) / (wall_s * hz)


def gpu_processes() -> list[int]:
    """PIDs of GPU compute processes that nvidia-smi lists ([] without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(x) for x in out.split() if x.strip().isdigit()]


class LoadMonitor:
    """start() ... stop() around the timed repetitions -> a dict describing other load."""

    def __init__(self, threshold_cores: float | None = None, clock: Callable[[], float] = time.perf_counter):
        self.threshold, self.clock = threshold_cores, clock
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _stat(self):
        try:
            with open("/proc/stat") as f:
                return parse_proc_stat(f.read())
        except OSError:
            return None

    def start(self) -> "LoadMonitor":
        self.t0, self.stat0, self.own0 = self.clock(), self._stat(), tree_cpu_ticks()
        self.loadavg0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return self

    def stop(self) -> dict:
        wall, stat1, own1 = self.clock() - self.t0, self._stat(), tree_cpu_ticks()
        r = {"wall_s": wall, "loadavg_1min": [self.loadavg0, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]}
        if self.stat0 is None or stat1 is None:
            r.update(other_cores=None, warning="no /proc/stat: other load was not measured")
            return r
        ncpu = stat1[2] or os.cpu_count() or 1
        threshold = self.threshold if self.threshold is not None else max(0.1, 0.02 * ncpu)
        r.update(other_cores=other_load(self.stat0[0], stat1[0], self.own0, own1, wall, self.hz),
                 own_cores=(own1 - self.own0) / (wall * self.hz) if wall > 0 else 0.0,
                 steal_cores=(stat1[1] - self.stat0[1]) / (wall * self.hz) if wall > 0 else 0.0,
                 cpus=ncpu, threshold_cores=threshold, warning=None)
        gpu = gpu_processes()
        mine = set(tree_pids(os.getpid(), _proc_table()[0])) if gpu else set()
        others = [p for p in gpu if p not in mine]
        if others:
            r["gpu_other_pids"] = others
        if r["other_cores"] > threshold:
            r["warning"] = (f"other processes used {r['other_cores']:.2f} of {ncpu} CPUs on average during the "
                            f"timed reps (this run: {r['own_cores']:.2f}; steal {r['steal_cores']:.2f}); "
                            "the figures are not clean")
        if others:
            r["warning"] = ((r["warning"] + "; ") if r["warning"] else "") + \
                f"other GPU processes were running (pids {others})"
        return r


# ----------------------------------------------------------------------------- --set KEY=VALUE
def parse_sets(items) -> list[tuple[str, object]]:
    """["model.dtype=float32", ...] -> [(key, value)]; values by ast.literal_eval, else the string."""
    out = []
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            fail(f"--set wants KEY=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.append((key.strip(), value))
    return out


def apply_sets(config, pairs) -> None:
    """Set each dotted key of an ml_collections ConfigDict (or nested dicts); the key must exist."""
    for key, value in pairs:
        *path, leaf = key.split(".")
        node = config
        for i, part in enumerate(path):
            if not _has(node, part):
                fail(f"--set {key}: unknown config key {'.'.join(path[:i + 1])!r}")
            if not hasattr(_get(node, part), "keys"):
                fail(f"--set {key}: config key {'.'.join(path[:i + 1])!r} is a value, not a section")
            node = _get(node, part)
        if not _has(node, leaf):
            close = difflib.get_close_matches(leaf, list(node.keys()), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else \
                f"known under {'.'.join(path) or 'the top'}: {', '.join(sorted(node.keys()))}"
            fail(f"--set {key}: unknown config key {key!r} ({hint})")
        try:
            if hasattr(node, "unlocked"):
                with node.unlocked():
                    node[leaf] = value
            else:
                node[leaf] = value
        except Exception as e:   # ml_collections' type safety: one line
            fail(f"--set {key}={value!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _has(node, key) -> bool:
    try:
        return key in node
    except TypeError:
        return False


def _get(node, key):
    return node[key]


# ----------------------------------------------------------------------------- HF worker
def hf_python() -> str:
    """This Python when transformers imports here, else $HF_PYTHON (bad input: one line)."""
    try:
        import transformers  # noqa: F401
        return sys.executable
    except ImportError:
        python = os.environ.get("HF_PYTHON", "")
        if not python or not os.path.exists(python):
            fail(f"--vs-hf: transformers is not importable here and HF_PYTHON={python!r} does not exist "
                 "(set HF_PYTHON to a Python with torch + transformers)")
        return python


class HFWorker:
    """A persistent tools/hf_worker.py subprocess: built once from `setup`, then one rep per call."""

    def __init__(self, setup: dict, python: str | None = None):
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([python or hf_python(), os.path.join(TOOLS, "hf_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, bufsize=1)
        self.info = self.call(setup)

    def call(self, msg: dict) -> dict:
        if self.proc.poll() is not None:
            self._died()
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._died()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self._died()
            if line.startswith("@@"):   # protocol lines; anything else a library printed is skipped
                reply = json.loads(line[2:])
                if "error" in reply:
                    fail(f"HF worker: {reply['error']}")
                return reply

    def rep(self, **kw) -> dict:
        return self.call({"cmd": "rep", **kw})

    def _died(self):
        self.proc.wait(timeout=30)
        self._err.seek(0)
        tail = self._err.read()[-2000:]
        fail(f"HF worker exited with code {self.proc.returncode}: {tail.strip() or '(no stderr)'}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- report
def split(result: dict, names: Mapping[str, str]) -> dict:
    """The part of an `interleave` result for some callables, renamed {old: new} (e.g. one method's pair)."""
    times = {new: result["times"][old] for old, new in names.items()}
    return {"times": times, "median": {k: statistics.median(v) for k, v in times.items()},
            "order": [names[n] for n in result["order"] if n in names]}


def ratio_of(result: dict, ours: str = "t5x_lite", theirs: str = "HF torch") -> float | None:
    """Speed ratio of the medians, theirs' time / ours' (> 1 = ours faster); None without both."""
    med = result["median"]
    return med[theirs] / med[ours] if ours in med and theirs in med and med[ours] > 0 else None


def print_report(sections, device: str, load: dict | None, notes=(), file=None) -> list:
    """sections: [(what, unit, work per rep, interleave result with "t5x_lite" / "HF torch" times)].
    Prints every headline first (the ratio of the medians, t5x_lite / HF speed, > 1 = t5x_lite faster),
    then the device, the load line (a WARNING if other load was present), each side's median / min /
    max seconds and rate in `unit`/s, and the notes.  Returns the ratios."""
    file = file or sys.stdout
    ratios = [ratio_of(r) for _, _, _, r in sections]
    for (what, _, _, r), ratio in zip(sections, ratios):
        if ratio is not None:
            n = len(r["times"]["t5x_lite"])
            print(f"HEADLINE {what}: t5x_lite / HF = {ratio:.2f}x  (medians of {n} interleaved reps; "
                  f"> 1 = t5x_lite faster)", file=file)
    print(f"device: {device}", file=file)
    if load is not None:
        if load.get("warning"):
            print(f"WARNING: {load['warning']}", file=file)
        elif load.get("other_cores") is not None:
            print(f"load: other processes used {load['other_cores']:.2f} of {load['cpus']} CPUs during the timed "
                  f"reps (threshold {load['threshold_cores']:.2f}): clean", file=file)
    for what, unit, work, r in sections:
        print(f"{what}:", file=file)
        for name, ts in r["times"].items():
            t = r["median"][name]
            rate = f"   {work / t:.1f} {unit}/s" if work and t > 0 else ""
            print(f"  {name:<9} median {t:.4f} s{rate}   (min {min(ts):.4f}, max {max(ts):.4f}; reps "
                  f"{', '.join(f'{x:.4f}' for x in ts)})", file=file)
    for line in notes:
        print(f"  {line}", file=file)
    return ratios


def write_json(path: str | None, obj: dict) -> None:
    if not path:
        return
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        fail(f"cannot write --json {path}: {e.strerror or e}")
