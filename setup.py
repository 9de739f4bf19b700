"""robustwidth: adversarial robustness as a function of network width (JAX/Flax)."""
import setuptools

setuptools.setup(
    name="robustwidth",
    version="0.1.0",
    description=(
        "Adversarial training, robustness evaluation and width/NTK analysis for "
        "'Do Wider Neural Networks Really Help Adversarial Robustness?' (NeurIPS 2021)."
    ),
    python_requires=">=3.12",
    packages=setuptools.find_packages(include=["robustwidth", "robustwidth.*"]),
    install_requires=[
        "jax>=0.12",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "chex>=0.1.92",
        "ml-collections>=1.1.0",
        "orbax-checkpoint>=0.12.8",
        "absl-py>=2.1",
        # TFDS reads prepared array_record data without TensorFlow; these are its
        # run-time needs on that path.
        "tensorflow-datasets>=4.9.10",
        "array-record>=0.8",
        "importlib_resources",
        "pillow",
        "scikit-learn>=1.5",  # embedded default data set (load_digits)
        "scipy>=1.11",  # power-law fit intervals (robustwidth.ntk)
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.6"],
        # PyTorch, for the reference tests and benchmarks only. For Python 3.12+ the package
        # index serves the CUDA-enabled build (about 4.6 GB installed; it runs on the CPU too).
        "torch": ["torch==2.13.0"],
        # Only to build TFDS data from the official archives.
        "prepare": ["tensorflow-cpu>=2.21"],
    },
)
