"""T5 paper Table 2 architectures at base size.

Usage: --config configs/table2.py:ARCH with ARCH one of
encoder_decoder, enc_dec_shared, enc_dec_6_layers, language_model, prefix_lm."""

from t5x_lite.train import presets


def get_config(arch="encoder_decoder"):
    return presets.table2(arch)
