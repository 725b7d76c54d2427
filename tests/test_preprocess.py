"""`--preprocess paper|paper-train`: the paper's pipeline, exactly torchvision's, for every model and in predict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from attrib.cli import main
from attrib.data.images import load_rgb
from attrib.extract.backbone import BackboneError, load_backbone, preprocess_name
from attrib.store import FeatureSet

# The paper's code (utils/data/augmentations): ImageNet statistics, for CLIP models too.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference(size: int, bicubic: bool = False) -> T.Compose:
    """The paper's transform, written out as its code composes it."""
    resize = T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC) if bicubic else T.Resize((size, size))
    return T.Compose([resize, T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


def _images(folder: Path) -> list[Path]:
    """Odd-sized, non-square, larger and smaller than 224, in the modes real datasets hold."""
    rng = np.random.default_rng(7)
    rgb = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # noqa: E731
    rgba = np.concatenate([rng.integers(0, 256, (97, 61, 3)), rng.integers(0, 256, (97, 61, 1))], axis=2)
    palette = rgb(45, 333).quantize(colors=37)
    transparent = rgb(50, 50).quantize(colors=16)
    transparent.info["transparency"] = 3
    images = {
        "odd_wide.png": rgb(201, 333), "odd_tall.png": rgb(517, 229), "tiny.png": rgb(5, 3), "photo.jpg": rgb(300, 451),
        "grey.png": Image.fromarray(rng.integers(0, 256, (83, 130), dtype=np.uint8), mode="L"),
        "rgba.png": Image.fromarray(rgba.astype(np.uint8), mode="RGBA"), "palette.png": palette,
        "palette_transparent.png": transparent, "square224.png": rgb(224, 224),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        img.save(folder / name)
    return [folder / name for name in images]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    return _images(tmp_path_factory.mktemp("pp") / "gen")


@pytest.mark.parametrize("name,bicubic", [("paper", False), ("paper-train", True)])
def test_paper_preprocess_equals_torchvision_for_timm_and_open_clip(image_files: list[Path], name: str,
                                                                    bicubic: bool) -> None:
    """Decoded the model path's way (load_rgb: grey -> RGB, alpha dropped, palette expanded), each image gives
    the tensor torchvision's pipeline gives on the paper's ``Image.open(f).convert("RGB")``, to 1e-6."""
    timm_224 = load_backbone("timm:vit_tiny_patch16_224", "random-init", name)
    tiny_64 = load_backbone("attrib-tiny", None, name)  # open_clip; its input is 64 px, so S = 64
    for bb, size in ((timm_224, 224), (tiny_64, 64)):
        ref = reference(size, bicubic)
        assert bb.spec["preprocess"]["name"] == name and preprocess_name(bb.spec["preprocess"]) == name
        assert bb.spec["preprocess"]["interpolation"] == ("bicubic" if bicubic else "bilinear")
        for path in image_files:
            with open(path, "rb") as f:
                want = ref(Image.open(f).convert("RGB"))
            got = bb.transform(load_rgb(path))
            assert got.shape == (3, size, size), path.name
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0, msg=path.name)


def test_bilinear_and_bicubic_and_the_models_own_transform_differ(image_files: list[Path]) -> None:
    """Each name selects its own pipeline (a test that would pass with any of them proves nothing)."""
    img = load_rgb(image_files[0])
    outs = {n: load_backbone("timm:vit_tiny_patch16_224", "random-init", n).transform(img)
            for n in ("model", "paper", "paper-train")}
    assert not torch.allclose(outs["paper"], outs["paper-train"], atol=1e-3)
    assert not torch.allclose(outs["paper"], outs["model"], atol=1e-3)
    model = load_backbone("timm:vit_tiny_patch16_224", "random-init")
    assert "name" not in model.spec["preprocess"] and preprocess_name(model.spec["preprocess"]) == "model"
    assert preprocess_name(None) == "model"
    with pytest.raises(BackboneError, match="--preprocess 'squash': use one of model, paper, paper-train"):
        load_backbone("attrib-tiny", None, "squash")


@pytest.mark.slow
def test_paper_preprocess_with_vit_b_16_at_224(image_files: list[Path]) -> None:
    """The paper's own architecture (open_clip ViT-B-16; random weights here): S = 224 exactly."""
    bb = load_backbone("ViT-B-16", "random-init", "paper")
    assert bb.spec["preprocess"]["size"] == [224, 224]
    for path in image_files:
        with open(path, "rb") as f:
            want = reference(224)(Image.open(f).convert("RGB"))
        torch.testing.assert_close(bb.transform(load_rgb(path)), want, atol=1e-6, rtol=0)


def _features(root: Path, cache: Path, *extra: str) -> FeatureSet:
    res = CliRunner().invoke(main, ["features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny",
                                    "--cache", str(cache), "--workers", "0", "--quiet", *extra],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return FeatureSet.open(res.output.strip().splitlines()[-1])


def test_cached_features_are_the_models_output_on_the_reference_tensors(image_files: list[Path],
                                                                       tmp_path: Path) -> None:
    """End to end: `features --preprocess paper [--view ...]` caches what the backbone makes of torchvision's
    tensors; the preprocess names the folder and the manifest, `model` keeps today's names."""
    root = image_files[0].parent.parent
    model = _features(root, tmp_path / "c")
    paper = _features(root, tmp_path / "c", "--preprocess", "paper")
    viewed = _features(root, tmp_path / "c", "--preprocess", "paper", "--view", "shortside:100")
    assert "__paper-" in paper.id and "__paper__shortside_100-" in viewed.id
    assert re.fullmatch(r"[^_]+__attrib-tiny__random-init-[0-9a-f]{8}", model.id)  # today's name, no suffix
    assert "name" not in model.manifest.preprocess
    assert paper.manifest.preprocess == {"name": "paper", "size": [64, 64], "resize_mode": "squash",
                                            "interpolation": "bilinear", "crop": [64, 64], "mean": list(MEAN),
                                            "std": list(STD)}
    assert paper.manifest.view == "none" and viewed.manifest.view == "shortside:100"
    assert len({model.id, paper.id, viewed.id}) == 3

    bb = load_backbone("attrib-tiny", None)
    ok, _ = paper.status()
    assert ok.all()
    for fs, perturb in ((paper, None), (viewed, v2.Resize(100))):
        x = []
        for rel in fs.images.paths:
            with open(root / rel, "rb") as f:
                img = Image.open(f).convert("RGB")
            x.append(reference(64)(perturb(img) if perturb else img))
        cls, embed = bb.features(torch.stack(x))
        np.testing.assert_allclose(fs.block(3), cls[:, 3].numpy(), atol=2e-3, rtol=1e-3)  # cache is fp16
        np.testing.assert_allclose(fs.embed(), embed.numpy(), atol=2e-3, rtol=1e-3)
    assert not np.allclose(paper.block(3), model.block(3), atol=1e-2)


def test_features_help_and_bad_value() -> None:
    res = CliRunner().invoke(main, ["features", "--help"])
    assert "--preprocess [model|paper|paper-train]" in res.output
    res = CliRunner().invoke(main, ["features", "--preprocess", "squash"])
    assert res.exit_code == 2 and "'squash' is not one of 'model', 'paper', 'paper-train'" in res.output


@pytest.mark.slow
def test_predict_reproduces_the_heads_preprocessing(demo_root: Path, tmp_path: Path) -> None:
    """A head trained on `paper` features: predict extracts with `paper` too (else the backbone check would
    refuse it), and its scores are the head's scores on the cached training-run features of the same images."""
    from attrib.probe.persist import load_head

    def run(args: list[str]) -> str:
        res = CliRunner().invoke(main, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output.strip().splitlines()[-1]

    fs = FeatureSet.open(run(["features", "--dataset", "demo", "--root", str(demo_root), "--model", "attrib-tiny",
                              "--preprocess", "paper", "--cache", str(tmp_path / "cache"), "--workers", "0",
                              "--quiet"]))
    run(["probe", "--features", str(fs.path), "--splits", "1", "--layers", "3", "--heads", "logreg", "--scores",
         "msp", "--grid", "C=1", "--save-head", str(tmp_path / "head"), "--out", str(tmp_path / "res"), "--quiet"])
    saved = load_head(tmp_path / "head")
    assert preprocess_name(saved.manifest.preprocess) == "paper"
    rows = np.arange(0, len(fs.images), 7)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{Path(fs.images.root) / fs.images.paths[r]}\n" for r in rows))
    run(["predict", "--head", str(tmp_path / "head"), str(listing), "--out", str(tmp_path / "p.jsonl"), "--format",
         "jsonl", "--cache", str(tmp_path / "cache"), "--workers", "0", "--quiet"])
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    got = {d["path"]: d["score"] for d in lines}
    want = saved.score_samples(saved.features(fs, rows))
    paths = [str(Path(fs.images.root) / fs.images.paths[r]) for r in rows]
    np.testing.assert_allclose([got[p] for p in paths], want, atol=1e-4)
    predicted = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("predict__")]
    assert len(predicted) == 1 and "__paper-" in predicted[0].name
