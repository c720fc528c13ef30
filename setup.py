"""Installation script of deepexplain: ``pip install -e .`` (extras: ``test``, ``keras``, ``plot``, ``report``, ...)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "deepexplain" / "_version.py").read_text()).group(1)

setup(
    name="deepexplain",
    version=VERSION,
    description="Attribution methods for TensorFlow: saliency, integrated gradients, DeepLIFT, LRP, occlusion, Shapley",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["deepexplain", "deepexplain.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "numpy",
        "scikit-image",
        "scipy",
        "tqdm",
    ],
    extras_require={
        # playwright drives the system's chromium in tests/test_report.py (.ci/run installs it)
        "test": [
            "pytest",
            "pytest-xdist",
            "ruff",
            "matplotlib",
            "scikit-learn",
            "psutil",
            "hypothesis",
            "plotly",
            "playwright",
        ],
        # peer implementations for the optional cross-checks; install with -c constraints.txt (CPU torch)
        "crosscheck": ["torch", "captum", "tf-keras-vis==0.8.7", "shap", "saliency==0.2.1"],
        "keras": ["tf-keras"],
        "ray": ["ray[data]>=2.40"],
        "plot": ["matplotlib"],
        "demo": ["matplotlib", "scikit-learn", "plotly"],
        "report": ["plotly"],
    },
    entry_points={"console_scripts": ["deepexplain = deepexplain.__main__:main"]},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
