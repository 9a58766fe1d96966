"""`t5x-lite train --compile-only`: memory per device, collectives from the compiled HLO, the
fit check and its exit code 3, at 8 emulated devices in-process and 64 in a subprocess.
A tiny model keeps every compile to a few seconds."""

import json
import os
import subprocess
import sys

import jax
import pytest

from t5x_lite import cli
from t5x_lite.errors import UserError
from t5x_lite.train import compile_only, main as train_main
from t5x_lite.train.hlo_stats import SLICED_ALL_REDUCE

from train_helpers import REPO, jax_cache_env

TINY = ["--config.model.d_model=64", "--config.model.num_heads=2", "--config.model.d_kv=32",
        "--config.model.d_ff=128", "--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
        "--config.data.feature_lengths.inputs=32", "--config.data.feature_lengths.targets=8"]


def _report(data, fsdp, tensor=1, batch=16):
    config, _ = train_main.parse_args(TINY + [f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}",
                                              f"--config.mesh.tensor={tensor}", f"--config.data.batch_size={batch}"])
    return compile_only.compile_report(config, "cpu", jax.devices())


def test_memory_shrinks_as_fsdp_grows_and_the_collectives_say_how():
    assert jax.device_count() == 8
    dp, f2, f8 = _report(8, 1), _report(4, 2), _report(1, 8)
    for smaller, larger in ((f2, dp), (f8, f2)):
        assert smaller["params_bytes"] < larger["params_bytes"]
        assert smaller["opt_state_bytes"] < larger["opt_state_bytes"]
        assert smaller["train"]["argument"] < larger["train"]["argument"]
    assert f8["train"]["peak"] < dp["train"]["peak"]
    assert f8["eval"]["argument"] < dp["eval"]["argument"]   # (its peak adds the gathered params back)
    # the greedy decode (KV cache, targets-length answers) is compiled too: it reads the params and,
    # like the eval step, holds fewer of them per device under fsdp
    for r in (dp, f8):
        assert r["decode_new_tokens"] == 8 and r["decode"]["argument"] >= r["params_bytes"]
    assert f8["decode"]["argument"] < dp["decode"]["argument"]
    # fsdp=8 keeps ~1/8 of the (replicated under data parallelism) params per device
    assert f8["params_bytes"] < dp["params_bytes"] / 4
    assert dp["checkpoint_bytes"] == f8["checkpoint_bytes"] == dp["params_bytes"] + dp["opt_state_bytes"] + 4

    # pure data parallelism: the gradients are all-reduced whole; nothing is gathered or scattered
    c = dp["collectives"]
    assert c["all-reduce"]["count"] >= 1 and c["all-reduce"]["bytes"] >= dp["params_bytes"]
    assert c["all-gather"]["count"] == 0 and c[SLICED_ALL_REDUCE]["count"] == 0
    # fsdp: params all-gathered before use, gradients reduce-scattered (on CPU: all-reduce + this
    # device's slice) to the params' shards
    c = f8["collectives"]
    assert c["all-gather"]["count"] > 0 and c["all-gather"]["bytes"] >= f8["params_bytes"]
    assert c[SLICED_ALL_REDUCE]["count"] > 0
    assert 0 < c[SLICED_ALL_REDUCE]["bytes"] <= 2 * f8["params_bytes"] + f8["opt_state_bytes"]


def test_cli_fits_exit_0_and_does_not_fit_exit_3_with_one_line(capfd):
    jax.devices()   # JAX runs with the tests' 8 devices: --target cpu:8 compiles in this process
    code = cli.main(["train", "--compile-only", "--target", "tpu-v4:8", "--config.mesh.fsdp=8",
                     "--config.mesh.data=1"] + TINY)
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "cannot describe a tpu-v4 topology" in out and "32.00 GiB (TPU v4" in out and ": fits" in out
    assert "predicted step time at 40% MFU of 8 x 275 TFLOP/s" in out
    assert "  decode (greedy, KV cache, 8 new tokens) per device: arguments " in out

    code = cli.main(["train", "--compile-only", "--target", "cpu:8", "--memory_budget_gb", "0.001"] + TINY)
    out, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 3 and len(lines) == 1, err
    assert lines[0].startswith("t5x-lite train: error: does not fit: the train step needs ")
    assert "budget is 1.0 MiB (--memory_budget_gb 0.001); largest buffer: " in lines[0]
    assert "DOES NOT FIT" in out


def test_bad_targets_are_one_line():
    for bad in ("tpu-v9:8", "cpu", "h100:0", "h100:x"):
        with pytest.raises(UserError, match="expected KIND:N"):
            compile_only.parse_target(bad)
    assert compile_only.parse_target("tpu-v4:16") == ("tpu-v4", 16)
    assert compile_only.DoesNotFit.exit_code == 3 and UserError.exit_code == 2
    with pytest.raises(UserError, match="go with --compile-only"):
        train_main.parse_args(["--workdir", "/tmp/x", "--target", "cpu:8"])


_SCRIPT = """
import json, sys
import jax
from t5x_lite.train import compile_only, main as train_main
assert jax.device_count() == 64, jax.device_count()
out = {}
for name, mesh in (("data", (64, 1)), ("fsdp", (1, 64))):
    config, _ = train_main.parse_args(sys.argv[1:] + [f"--config.mesh.data={mesh[0]}", f"--config.mesh.fsdp={mesh[1]}",
                                                      "--config.data.batch_size=64"])
    r = compile_only.compile_report(config, "cpu", jax.devices())
    out[name] = {k: r[k] for k in ("params_bytes", "opt_state_bytes", "train", "collectives", "mesh")}
print("JSON" + json.dumps(out))
"""


@pytest.mark.slow
def test_64_emulated_devices_memory_shrinks_with_fsdp():
    env = jax_cache_env(dict(os.environ, JAX_NUM_CPU_DEVICES="64", JAX_PLATFORMS="cpu"))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT] + TINY, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.split("JSON", 1)[1])
    dp, fsdp = r["data"], r["fsdp"]
    assert dp["mesh"] == {"data": 64, "fsdp": 1, "tensor": 1} and fsdp["mesh"]["fsdp"] == 64
    assert fsdp["params_bytes"] < dp["params_bytes"] / 8
    assert fsdp["train"]["argument"] < dp["train"]["argument"]
    assert fsdp["train"]["peak"] < dp["train"]["peak"]
    assert dp["collectives"]["all-reduce"]["count"] >= 1 and dp["collectives"]["all-gather"]["count"] == 0
    assert fsdp["collectives"]["all-gather"]["count"] > 0 and fsdp["collectives"][SLICED_ALL_REDUCE]["count"] > 0
