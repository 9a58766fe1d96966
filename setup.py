"""t5x_lite: T5-family pretraining in JAX/Flax NNX, without TensorFlow."""

from setuptools import find_namespace_packages, setup

# Versions are pinned to the set the test suite was run with (Python 3.11, CPU).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "sentencepiece==0.2.3",
    "ml-collections==1.1.0",
    "gin-config==0.5.0",
    "tensorflow-datasets==4.9.10",
    "safetensors==0.8.0",
    "sacrebleu==2.6.0",
    "rouge-score==0.1.2",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",
    "absl-py==2.5.1",
    "numpy>=2.0",
]

EXTRAS = {
    "test": ["pytest==9.0.3", "pytest-xdist==3.8.0", "hypothesis==6.155.2"],
    # Only for tools/make_hf_fixtures.py and `tools/bench_train.py --vs-hf`;
    # never needed by the package or by CI.
    "hf": ["torch==2.13.0", "transformers"],
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
