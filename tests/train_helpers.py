"""Shared by the subprocess-based training tests (not a test module itself)."""

import os
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The model and data sizes every subprocess training test starts from.
TINY_MODEL = ["--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.d_kv=16",
              "--config.model.d_ff=64", "--config.model.num_encoder_layers=1",
              "--config.model.num_decoder_layers=1",
              "--config.data.feature_lengths.inputs=32", "--config.data.feature_lengths.targets=8"]


def jax_cache_env(env):
    """Share compiled executables between the test's subprocesses (JAX's persistent cache):
    the same tiny model is compiled once instead of once per run."""
    cache = os.path.join(tempfile.gettempdir(), f"t5x_lite_test_jax_cache_{os.getuid()}")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return env
