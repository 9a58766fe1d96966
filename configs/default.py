"""The tiny default: what `t5x-lite train --workdir DIR` runs with no --config
(a T5.1.1-shaped 2+2-layer model on builtin_span_corruption; defined in
t5x_lite/train/default_config.py so the installed package carries it)."""

from t5x_lite.train.default_config import get_config  # noqa: F401
