"""Test-wide setup: 8 emulated CPU devices, so sharding tests can build a
(data=2, fsdp=2, tensor=2) mesh; single-device tests just use device 0."""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config):
    # Two tiers: `pytest -m "not slow"` (under 2 minutes, for people who fork the code) and the
    # whole suite (CI).  Slow = end-to-end training runs and the big multi-device compiles.
    config.addinivalue_line("markers", "slow: end-to-end or multi-device compile tests (CI runs them)")
