"""tools/benchlib.py and the benchmark CLIs' argument handling.  Nothing here is timed: the
interleaving runner gets fake repetition times, the load detector synthetic /proc snapshots."""

import os
import sys

import ml_collections
import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
sys.path.insert(0, TOOLS)

import benchlib  # noqa: E402


def test_interleave_alternates_and_takes_medians():
    calls = []
    fake = {"jax": iter([9.0, 3.0, 1.0, 2.0]), "hf": iter([9.0, 10.0, 30.0, 20.0])}

    def rep(name):
        def fn():
            calls.append(name)
            return next(fake[name])
        return fn

    r = benchlib.interleave({"jax": rep("jax"), "hf": rep("hf")}, reps=3, warmup=1)
    assert calls == ["jax", "hf"] * 4                    # warm-up round, then strictly round-robin
    assert r["order"] == ["jax", "hf"] * 3               # the timed calls only
    assert r["times"] == {"jax": [3.0, 1.0, 2.0], "hf": [10.0, 30.0, 20.0]}   # warm-up dropped
    assert r["median"] == {"jax": 2.0, "hf": 20.0}
    assert benchlib.ratio_of(benchlib.split(r, {"jax": "t5x_lite", "hf": "HF torch"})) == 10.0


def test_interleave_even_count_median_and_split():
    vals = iter([4.0, 1.0, 3.0, 2.0, 8.0, 5.0, 6.0, 7.0])
    r = benchlib.interleave({"a": lambda: next(vals), "b": lambda: next(vals)}, reps=4, warmup=0)
    assert r["times"] == {"a": [4.0, 3.0, 8.0, 6.0], "b": [1.0, 2.0, 5.0, 7.0]}
    assert r["median"] == {"a": 5.0, "b": 3.5}
    part = benchlib.split(r, {"b": "HF torch"})
    assert part["times"] == {"HF torch": [1.0, 2.0, 5.0, 7.0]} and part["order"] == ["HF torch"] * 4
    assert benchlib.ratio_of(part) is None               # no t5x_lite side: no ratio
    with pytest.raises(SystemExit, match="--reps must be >= 1"):
        benchlib.interleave({"a": lambda: 1.0}, reps=0)


STAT0 = """cpu  1000 50 300 9000 40 10 20 5 0 0
cpu0 500 25 150 4500 20 5 10 3 0 0
cpu1 500 25 150 4500 20 5 10 2 0 0
intr 12345 0 0
ctxt 999
"""
STAT1 = """cpu  1900 50 500 9200 40 10 20 25 0 0
cpu0 950 25 250 4600 20 5 10 13 0 0
cpu1 950 25 250 4600 20 5 10 12 0 0
"""


def test_proc_stat_arithmetic():
    busy0, steal0, n = benchlib.parse_proc_stat(STAT0)
    assert (busy0, steal0, n) == (1000 + 50 + 300 + 10 + 20 + 5, 5, 2)     # idle and iowait left out
    busy1, steal1, _ = benchlib.parse_proc_stat(STAT1)
    assert busy1 - busy0 == 1120
    # 10 s at 100 ticks/s; this tree used 620 ticks -> others kept 500 ticks = 0.5 core busy.
    assert benchlib.other_load(busy0, busy1, 2000, 2620, 10.0, 100) == pytest.approx(0.5)
    assert benchlib.other_load(busy0, busy1, 0, 5000, 10.0, 100) == 0.0    # never negative
    assert benchlib.other_load(busy0, busy1, 0, 0, 0.0, 100) == 0.0


def test_pid_stat_and_process_tree(tmp_path):
    # The command name may hold spaces and parentheses; the fields after it are what counts.
    line = "4242 (weird) name) S 1 4242 4242 0 -1 4194304 100 0 0 0 70 30 5 6 20 0 1 0 100 0 0"
    assert benchlib.parse_pid_stat(line) == (1, 70 + 30 + 5 + 6)

    def proc(pid, ppid, ticks):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} (p {pid}) S {ppid} 0 0 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0\n")

    proc(100, 1, 10)      # root
    proc(101, 100, 20)    # its child (e.g. the HF worker)
    proc(102, 101, 40)    # a grandchild
    proc(200, 1, 1000)    # someone else's
    (tmp_path / "self").mkdir()
    assert benchlib.tree_cpu_ticks(100, proc=str(tmp_path)) == 70
    assert benchlib.tree_cpu_ticks(101, proc=str(tmp_path)) == 60
    assert sorted(benchlib.tree_pids(100, benchlib._proc_table(str(tmp_path))[0])) == [100, 101, 102]


def test_load_monitor_warns_on_other_load(monkeypatch):
    snaps = iter([benchlib.parse_proc_stat(STAT0), benchlib.parse_proc_stat(STAT1)])
    own = iter([2000, 2620])
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(benchlib.LoadMonitor, "_stat", lambda self: next(snaps))
    monkeypatch.setattr(benchlib, "tree_cpu_ticks", lambda: next(own))
    monkeypatch.setattr(benchlib, "gpu_processes", lambda: [])
    m = benchlib.LoadMonitor(clock=lambda: next(clock))
    m.hz = 100
    r = m.start().stop()
    assert r["other_cores"] == pytest.approx(0.5) and r["own_cores"] == pytest.approx(0.62)
    assert r["steal_cores"] == pytest.approx(0.02) and r["threshold_cores"] == pytest.approx(0.1)
    assert "0.50 of 2 CPUs" in r["warning"]
    # The same run with little other load is clean.
    snaps = iter([benchlib.parse_proc_stat(STAT0), benchlib.parse_proc_stat(STAT1)])
    own, clock = iter([2000, 3100]), iter([0.0, 10.0])
    r = m.start().stop()
    assert r["other_cores"] == pytest.approx(0.02) and r["warning"] is None


def test_parse_sets_values():
    pairs = benchlib.parse_sets(["model.d_model=64", "model.attention_impl=xla", "a.b='x y'", "a.c=[1, 2]",
                                 "a.d=k=v", "a.e=True", "a.f=1e-3", "a.g=None", " a.h = 2"])
    assert pairs == [("model.d_model", 64), ("model.attention_impl", "xla"), ("a.b", "x y"), ("a.c", [1, 2]),
                     ("a.d", "k=v"), ("a.e", True), ("a.f", 1e-3), ("a.g", None), ("a.h", 2)]
    for bad in ("model.d_model", "=3"):
        with pytest.raises(SystemExit, match="--set wants KEY=VALUE"):
            benchlib.parse_sets([bad])


def _config():
    c = ml_collections.ConfigDict({"model": {"d_model": 512, "remat_policy": "none", "dtype": "float32"},
                                   "train": {"z_loss": 1e-4}})
    c.lock()
    return c


def test_apply_sets_and_unknown_keys():
    c = _config()
    benchlib.apply_sets(c, benchlib.parse_sets(["model.d_model=64", "model.remat_policy=full", "train.z_loss=0.0"]))
    assert (c.model.d_model, c.model.remat_policy, c.train.z_loss) == (64, "full", 0.0)
    with pytest.raises(SystemExit) as e:
        benchlib.apply_sets(c, [("model.d_modle", 1)])
    msg = str(e.value.code)
    assert "\n" not in msg and "unknown config key 'model.d_modle'" in msg and "did you mean d_model" in msg
    with pytest.raises(SystemExit, match="unknown config key 'modle'"):
        benchlib.apply_sets(c, [("modle.d_model", 1)])
    with pytest.raises(SystemExit, match="'model.d_model' is a value, not a section"):   # a leaf is not a section
        benchlib.apply_sets(c, [("model.d_model.x", 1)])
    with pytest.raises(SystemExit) as e:
        benchlib.apply_sets(c, [("model.d_model", "abc")])                           # ml_collections type check
    assert "\n" not in str(e.value.code) and "--set model.d_model='abc'" in str(e.value.code)


def test_bench_cli_bad_input_is_one_line(capsys):
    """--set with an unknown key on the real config: one line and a non-zero exit, before any JAX work."""
    import bench_decode
    import bench_train
    for main in (bench_train.main, bench_decode.main):
        with pytest.raises(SystemExit) as e:
            main(["--set", "model.no_such_key=1"])
        assert "unknown config key 'model.no_such_key'" in str(e.value.code) and "\n" not in str(e.value.code)
    with pytest.raises(SystemExit, match="--reps must be >= 1"):
        bench_train.main(["--reps", "0"])
    with pytest.raises(SystemExit, match="--methods must be"):
        bench_decode.main(["--methods", "greedy,topk"])


TINY = ["--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.d_kv=8", "--set", "model.d_ff=32",
        "--set", "model.num_encoder_layers=1", "--set", "model.num_decoder_layers=1", "--dtype", "float32"]


@pytest.mark.slow
def test_bench_decode_smoke(capsys, tmp_path):
    """End to end on a tiny model: both sides produce 2 tokens per row, greedy outputs agree."""
    pytest.importorskip("transformers")
    import json

    import bench_decode
    out = tmp_path / "bench.json"
    assert bench_decode.main(["--batch", "2", "--inputs", "8", "--new-tokens", "2", "--reps", "1", "--warmup", "0",
                              "--methods", "greedy", "--vs-hf", "--json", str(out)] + TINY) == 0
    text = capsys.readouterr().out
    assert text.startswith("HEADLINE greedy decoding: t5x_lite / HF = ")
    assert "sanity: greedy outputs t5x_lite vs HF: identical (2 rows x 2 tokens)" in text
    d = json.loads(out.read_text())
    assert d["order"] == ["t5x_lite greedy", "HF greedy"] and d["sections"][0]["work_per_rep"] == 4
