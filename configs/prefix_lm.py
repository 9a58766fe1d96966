"""Decoder-only prefix LM (base width, 12 layers) on builtin_prefix_lm, 512 + 512 tokens."""

from t5x_lite.train import presets


def get_config():
    return presets.prefix_lm()
