"""T5.1.1 base (248M): d_model 768, 12 heads, 12+12 layers, d_ff 2048."""

from t5x_lite.train import presets


def get_config():
    return presets.t5_1_1("base")
