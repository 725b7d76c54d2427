"""Shared fixtures: real images on disk, a real tiny open_clip model saved as a checkpoint."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# Tests use tiny tensors: one OpenMP thread per process is faster than several spin-waiting threads, and
# it must be set before numpy / torch start their thread pools (test subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

if TYPE_CHECKING:
    from attrib.store import FeatureSet


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """attrib-tiny's random weights saved as a .safetensors checkpoint, loaded like real weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from attrib.extract.backbone import TINY, register_tiny

    register_tiny()
    torch.manual_seed(123)
    model = open_clip.create_model(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo dataset (real files written by the demo builder), shared by the session."""
    from attrib.data.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo") / "demo", per_class=24)


def extract_demo_features(demo_root: Path, cache: Path) -> "FeatureSet":
    """`attrib features` on the demo with attrib-tiny, through the CLI as a user runs it (for modules that
    need one clean feature set of the demo)."""
    from click.testing import CliRunner

    from attrib.cli import main
    from attrib.store import FeatureSet

    res = CliRunner().invoke(main, ["features", "--dataset", "demo", "--root", str(demo_root), "--model",
                                    "attrib-tiny", "--cache", str(cache), "--workers", "0", "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return FeatureSet.open(res.output.strip().splitlines()[-1])


def write_png(path: Path, seed: int = 0, size: int = 48, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path
