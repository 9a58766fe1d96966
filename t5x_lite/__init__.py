"""t5x_lite: a small, TensorFlow-free JAX/Flax NNX codebase for T5-family pretraining."""

__version__ = "0.1.0"
