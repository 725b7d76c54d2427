"""Backbones: the per-block CLS taps are the paper's features, weights load the way they were trained."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from attrib.cli import main
from conftest import write_png
from attrib.extract import weights as wmod
from attrib.extract.backbone import (TINY, BackboneError, WeightsUnavailable, build_open_clip, load_backbone,
                                     register_tiny)
from attrib.extract.weights import plan_open_clip, sha256_file, tag_for_sha256

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]


def _timm_cls_taps(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the paper's code uses: timm forward_intermediates with the prefix (CLS) tokens returned."""
    with torch.inference_mode():
        inter = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
    return torch.stack([prefix[:, 0] for _spatial, prefix in inter], dim=1)


def test_vit_b16_taps_equal_timm_forward_intermediates_after_timms_own_conversion() -> None:
    """open_clip ViT-B-16 (random weights) -> timm's OpenAI-CLIP converter -> vit_base_patch16_clip_224."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    oc = load_backbone("ViT-B-16", "random-init")
    tm = load_backbone("timm:vit_base_patch16_clip_224", "random-init")
    state = {f"visual.{k}": v for k, v in oc.module.state_dict().items()}  # open_clip CLIP key layout
    converted = checkpoint_filter_fn(state, tm.module)
    missing, unexpected = tm.module.load_state_dict(converted, strict=False)
    assert missing == [] and sorted(unexpected) == ["head.bias", "head.weight"]  # num_classes=0: no head

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ref = _timm_cls_taps(tm.module, x)
    cls, embed = oc.features(x)
    assert cls.shape == (2, 12, 768) and embed.shape == (2, 512)
    torch.testing.assert_close(cls, ref, rtol=0, atol=1e-4)
    tcls, tpooled = tm.features(x)  # the timm:<name> path taps the same tokens
    torch.testing.assert_close(tcls, ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(embed, tpooled @ oc.module.proj, rtol=0, atol=1e-4)  # ln_post, then proj
    assert oc.spec["quick_gelu"] is False and tm.spec["family"] == "timm"


def test_openai_weights_build_the_quickgelu_architecture() -> None:
    plan = plan_open_clip("ViT-B-16", "openai", resolve=False)  # no download: only the decisions
    assert plan.tag == "openai" and plan.create_kwargs["force_quick_gelu"] is True
    bb = build_open_clip("ViT-B-16", plan)
    acts = {type(blk.mlp.gelu).__name__ for blk in bb.blocks}
    assert acts == {"QuickGELU"} and bb.spec["quick_gelu"] is True
    assert bb.spec["preprocess"]["mean"] == OPENAI_MEAN and bb.spec["preprocess"]["resize_mode"] == "shortest"
    laion = plan_open_clip("ViT-B-16", "laion2b_s34b_b88k", resolve=False)
    assert "force_quick_gelu" not in laion.create_kwargs
    # OpenAI's own checkpoint file is recognised by the sha256 in its download URL
    sha = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    assert tag_for_sha256("ViT-B-16", sha)[0] == "openai"
    assert tag_for_sha256("ViT-B-16", "0" * 64) is None


def test_tiny_checkpoint_round_trip_gives_identical_features(tiny_checkpoint: Path) -> None:
    import open_clip

    register_tiny()
    torch.manual_seed(123)  # the weights the fixture saved
    saved = open_clip.create_model(TINY).visual.eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = saved.forward_intermediates(x, intermediates_only=False, output_extra_tokens=True)
    loaded = load_backbone(TINY, str(tiny_checkpoint))
    cls, embed = loaded.features(x)
    assert torch.equal(cls, torch.stack([p[:, 0] for p in ref["image_intermediates_prefix"]], dim=1))
    assert torch.equal(embed, ref["image_features"])
    assert loaded.spec["weights"] == tiny_checkpoint.name and loaded.spec["checkpoint"] == str(tiny_checkpoint)
    assert loaded.spec["weights_sha256"] == sha256_file(tiny_checkpoint) and not loaded.random_init
    rand = load_backbone(TINY, None)
    assert rand.random_init and not torch.equal(rand.features(x)[0], cls)
    assert torch.equal(load_backbone(TINY, None).features(x)[0], rand.features(x)[0])  # seeded


def test_taps_are_copies_not_views_of_the_token_map() -> None:
    bb = load_backbone(TINY, None)
    tokens = torch.randn(2, 17, 64)
    bb._tap(None, None, tokens)
    tap = bb._taps.pop()
    assert torch.equal(tap, tokens[:, 0]) and tap.untyped_storage().nbytes() == 2 * 64 * 4


def _fake_hub(root: Path, repo: str, weights: Path, mean: list[float]) -> None:
    """A Hugging Face cache entry exactly as huggingface_hub lays it out (refs/main -> snapshot)."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(rev)
    cfg = json.loads((Path(wmod.__file__).parent.parent / "models" / f"{TINY}.json").read_text())
    (snap / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"mean": mean}}))
    (snap / "open_clip_model.safetensors").write_bytes(weights.read_bytes())


def test_hf_hub_models_load_from_the_local_cache_offline(tiny_checkpoint: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_hub(tmp_path, "attrib/tiny-hub", tiny_checkpoint, [0.5, 0.5, 0.5])
    hub = load_backbone("hf-hub:attrib/tiny-hub", None)
    ref = load_backbone(TINY, str(tiny_checkpoint))
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(hub.features(x)[0], ref.features(x)[0])
    assert hub.spec["model"] == "hf-hub:attrib/tiny-hub" and hub.spec["weights"] == "hf-hub"
    assert hub.spec["weights_sha256"] == sha256_file(tiny_checkpoint)
    assert hub.spec["preprocess"]["mean"] == [0.5, 0.5, 0.5]  # the hub config's preprocessing is used
    folder = Path(hub.spec["checkpoint"]).parent
    assert load_backbone(f"local-dir:{folder}", None).spec["weights_sha256"] == sha256_file(tiny_checkpoint)
    with pytest.raises(WeightsUnavailable, match="not in the local Hugging Face cache.*local-dir"):
        load_backbone("hf-hub:attrib/not-downloaded", None)
    with pytest.raises(BackboneError, match="must hold open_clip_config.json"):
        load_backbone(f"local-dir:{tmp_path}", None)


def test_bad_model_arguments_fail_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="unknown model 'ViT-Q-99'"):
        load_backbone("ViT-Q-99", None)
    with pytest.raises(BackboneError, match="needs --pretrained"):
        load_backbone("ViT-B-16", None)
    with pytest.raises(BackboneError, match="not a known tag for ViT-B-16.*laion2b_s34b_b88k"):
        load_backbone("ViT-B-16", "no-such-tag")
    with pytest.raises(BackboneError, match="no such file"):
        load_backbone(TINY, str(tmp_path / "missing.safetensors"))
    with pytest.raises(BackboneError, match="unknown timm model"):
        load_backbone("timm:not_a_model", "random-init")
    with pytest.raises(BackboneError, match="no CLS token"):
        load_backbone("timm:resnet18", "random-init")
    with pytest.raises(WeightsUnavailable, match="not in the local cache"):
        load_backbone("timm:vit_tiny_patch16_224.augreg_in21k", None)  # HF_HUB_OFFLINE=1 in tests


def test_timm_weights_fetched_by_a_first_run_keep_the_feature_set_identity(tmp_path: Path, monkeypatch) -> None:
    """The run that downloads timm's weights must describe them as every later run (which finds them cached)
    does: weights_sha256 is part of the feature set's identity, so a difference would send the rerun of an
    interrupted extraction to a new, empty feature set."""
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    name = "vit_tiny_patch16_224.augreg_in21k"
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / rev
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text(rev)
    torch.manual_seed(5)
    save_file(timm.create_model(name).state_dict(), str(snap / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    cached = wmod._hf_cached
    lookups: list[str] = []  # the first lookup misses: the weights are "not downloaded yet"
    monkeypatch.setattr(wmod, "_hf_cached", lambda r, n: cached(r, n) if lookups.append(r) or len(lookups) > 1
                        else None)
    monkeypatch.setattr(wmod, "online", lambda *a, **k: True)  # timm then fetches them (here: from the cache)
    first = load_backbone(f"timm:{name}", None)
    again = load_backbone(f"timm:{name}", None)
    assert first.spec == again.spec and first.spec["weights"] == "augreg_in21k"
    assert first.spec["weights_sha256"] == sha256_file(snap / "model.safetensors")
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(first.features(x)[0], again.features(x)[0])


def _torchscript_archive(path: Path, quick_gelu: bool = False) -> Path:
    """attrib-tiny with the fixture's weights (seed 123), traced and saved as a TorchScript archive: the
    format of OpenAI's own ``ViT-B-16.pt``."""
    import open_clip

    register_tiny()
    torch.manual_seed(123)
    clip = open_clip.create_model(TINY, force_quick_gelu=quick_gelu).eval()
    inputs = (torch.zeros(1, 3, 64, 64), torch.zeros(1, 16, dtype=torch.long))
    with warnings.catch_warnings():  # torch deprecates tracing and doubts it; OpenAI's archives exist all the same
        warnings.simplefilter("ignore")
        torch.jit.trace(clip, inputs, check_trace=False).save(str(path))
    return path


def test_torchscript_archives_load_like_the_same_weights_saved_as_a_state_dict(tiny_checkpoint: Path,
                                                                               tmp_path: Path) -> None:
    """torch.load(weights_only=True) refuses TorchScript archives; they load through torch.jit.load instead."""
    archive = _torchscript_archive(tmp_path / "tiny-traced.pt")
    assert wmod.is_torchscript(archive) and not wmod.is_torchscript(tiny_checkpoint)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    scripted = load_backbone(TINY, str(archive))
    plain = load_backbone(TINY, str(tiny_checkpoint))
    for a, b in zip(scripted.features(x), plain.features(x)):
        assert torch.equal(a, b)
    assert not torch.equal(scripted.features(x)[0], load_backbone(TINY, None).features(x)[0])  # not random
    assert scripted.spec["weights_sha256"] == sha256_file(archive) and scripted.spec["quick_gelu"] is False


def test_openais_own_archive_recognised_by_sha256_gets_quickgelu(tmp_path: Path, monkeypatch) -> None:
    """OpenAI's ViT-B-16.pt is a TorchScript archive of a QuickGELU model; its sha256 (named in the tag's URL)
    selects QuickGELU. Here attrib-tiny gets such a tag, whose URL names the sha256 of a traced QuickGELU
    attrib-tiny, as open_clip's registry does for OpenAI's real files."""
    import open_clip
    from open_clip.pretrained import _PRETRAINED, _pcfg

    archive = _torchscript_archive(tmp_path / "attrib-tiny.pt", quick_gelu=True)
    url = f"https://openaipublic.azureedge.net/clip/models/{sha256_file(archive)}/attrib-tiny.pt"
    monkeypatch.setitem(_PRETRAINED, TINY, {"openai": _pcfg(url=url, quick_gelu=True)})
    bb = load_backbone(TINY, str(archive))
    assert bb.spec["quick_gelu"] is True and bb.spec["pretrained"] == "openai"
    torch.manual_seed(123)
    ref = open_clip.create_model(TINY, force_quick_gelu=True).visual.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(bb.features(x)[1], ref(x))


def test_weights_that_do_not_fit_the_model_fail_with_a_clear_message(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Another architecture's weights (here a narrower tiny CLIP, and attrib-tiny's for a timm ViT) name the
    file and the model instead of an AssertionError or size-mismatch traceback from open_clip / timm."""
    import open_clip
    from safetensors.torch import save_file

    cfg = json.loads((Path(wmod.__file__).parent.parent / "models" / f"{TINY}.json").read_text())
    cfg["vision_cfg"]["width"] = 32
    other = tmp_path / "narrow.safetensors"
    save_file(open_clip.model.CLIP(**cfg).state_dict(), str(other))
    with pytest.raises(BackboneError, match=rf"cannot load weights {other}: this checkpoint does not fit "
                                            rf"model {TINY} \(RuntimeError: .*size mismatch"):
        load_backbone(TINY, str(other))
    with pytest.raises(BackboneError, match=r"does not fit model timm:vit_tiny_patch16_224 .*size mismatch"):
        load_backbone("timm:vit_tiny_patch16_224", str(tiny_checkpoint))
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickled module: loading it would run pickled code
    with pytest.raises(BackboneError, match=rf"cannot load weights {module}: not a checkpoint that loads safely"):
        load_backbone(TINY, str(module))
    write_png(tmp_path / "images" / "gen" / "a.png")
    res = CliRunner().invoke(main, ["features", "--dataset", "folder", "--root", str(tmp_path / "images"), "--model",
                                    TINY, "--pretrained", str(other), "--cache", str(tmp_path / "cache")],
                             catch_exceptions=False)
    assert res.exit_code == 2 and f"Error: cannot load weights {other}: this checkpoint does not fit" in res.output
