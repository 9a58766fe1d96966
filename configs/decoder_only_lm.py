"""Decoder-only causal LM (base width, 12 layers) on builtin_lm, 512 tokens."""

from t5x_lite.train import presets


def get_config():
    return presets.decoder_only_lm()
