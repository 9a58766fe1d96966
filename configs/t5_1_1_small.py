"""T5.1.1 small (60M at vocab 32128): d_model 512, 6 heads, 8+8 layers, d_ff 1024."""

from t5x_lite.train import presets


def get_config():
    return presets.t5_1_1("small")
