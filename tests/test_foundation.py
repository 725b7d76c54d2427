"""Foundation pieces: the demo dataset and the one-forward block taps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from attrib.data.demo import GENERATORS, SPLITS, build_demo
from attrib.data.genimage import read_genimage
from attrib.extract.backbone import load_backbone


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_and_genimage_shaped(tmp_path: Path) -> None:
    a = build_demo(tmp_path / "a", per_class=6, seed=3)
    b = build_demo(tmp_path / "b", per_class=6, seed=3)
    c = build_demo(tmp_path / "c", per_class=6, seed=4)
    assert _digest(a) == _digest(b) != _digest(c)
    images = read_genimage(a)
    counts = images.counts()
    for g in GENERATORS:
        assert counts[(g, "train")] + counts[(g, "val")] == 6
    assert counts[("real", "train")] + counts[("real", "val")] == 6
    assert all(p.endswith(".jpg") for p, s, _ in images if s == "real")
    assert all(p.endswith(".png") for p, s, _ in images if s != "real")
    for known, unknown in SPLITS.values():
        assert len(known) == 4 and set(known) | set(unknown) == set(GENERATORS)


def test_block_taps_equal_forward_intermediates_in_one_forward() -> None:
    bb = load_backbone("attrib-tiny", None)
    x = torch.randn(3, 3, 64, 64)
    calls = []
    h = bb.module.transformer.resblocks[0].register_forward_hook(lambda *a: calls.append(1))
    cls, emb = bb.features(x)
    h.remove()
    assert len(calls) == 1  # every block ran once: one forward for all taps and the embedding
    ref = bb.module.forward_intermediates(x, intermediates_only=False, output_extra_tokens=True)
    ref_cls = torch.stack([p[:, 0] for p in ref["image_intermediates_prefix"]], dim=1)
    assert cls.shape == (3, 4, 64) and emb.shape == (3, 32)
    torch.testing.assert_close(cls, ref_cls, rtol=0, atol=1e-6)
    torch.testing.assert_close(emb, ref["image_features"], rtol=0, atol=1e-6)
