"""t5x_lite: T5-family pretraining in JAX/Flax NNX, without TensorFlow."""

from setuptools import find_namespace_packages, setup

# Compatible ranges for library users: the lower bound is the version the test suite ran with
# (Python 3.11, CPU; older releases are untested), the upper bound the next release that may break
# the API (the next minor for 0.x packages, the next major otherwise).  The exact tested set of
# every package, transitive ones included, is constraints.txt at the repo root, which CI installs
# with: pip install -e ".[test,hf]" -c constraints.txt
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "sentencepiece>=0.2.3,<0.3",
    "ml-collections>=1.1.0,<2",
    "gin-config>=0.5.0,<0.6",
    "tensorflow-datasets>=4.9.10,<5",
    "safetensors>=0.8.0,<0.9",
    "sacrebleu>=2.6.0,<3",
    "rouge-score>=0.1.2,<0.2",
    "tqdm>=4.70.1,<5",
    "tensorboardX>=2.6.5,<3",
    "matplotlib>=3.11.2,<4",
    "absl-py>=2.5.1,<3",
    "numpy>=2.0,<3",   # jax 0.10 itself needs numpy>=2.0
]

EXTRAS = {
    # tensorboard: tests/test_tensorboard_hparams.py reads the trainer's events back with TensorBoard's reader.
    "test": ["pytest>=9.0.3,<10", "pytest-xdist>=3.8.0,<4", "hypothesis>=6.155.2,<7", "tensorboard>=2.21.0,<3"],
    # Hugging Face: the tests that load exports in transformers/torch (CI installs this extra),
    # tools/make_hf_fixtures.py and `tools/bench_train.py --vs-hf`.  torch is pinned exactly: 2.13.0
    # has a CPU wheel on the CI machines' disk; any other version is a multi-GB CUDA download.
    "hf": ["torch==2.13.0", "transformers>=5.25.0,<6"],
    # `tensorboard --logdir WORKDIR` (the trainer writes the events with tensorboardX either way).
    "tensorboard": ["tensorboard>=2.21.0,<3"],
    # Accelerators: JAX's CUDA 12 plugin (NVIDIA GPUs) or libtpu (Cloud TPU VMs); README "Install on GPU / TPU".
    "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
    "tpu": ["jax[tpu]>=0.10.2,<0.11"],
}

setup(
    name="t5x_lite",
    version="0.1.0",
    description="T5-family (encoder-decoder, decoder-only, prefix LM) pretraining in JAX/Flax NNX",
    python_requires=">=3.11",
    packages=find_namespace_packages(include=["t5x_lite", "t5x_lite.*"]),
    package_data={"t5x_lite": ["data/builtin/*", "data/builtin/**/*"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["t5x-lite=t5x_lite.cli:main"]},
)
