"""Backbones: load a frozen vision transformer and tap the CLS token after every block in one forward.

Why taps and not ``forward_intermediates``: open_clip's and timm's ``forward_intermediates`` keep every
block's full token map (B x 197 x 768 x 12 for ViT-B/16) alive until the end of the forward, only for us
to throw away all but one token. A forward hook on each block copies out the CLS token as it passes, so
memory stays at one block's activations; tests prove the taps equal ``forward_intermediates``.

Model names:
- ``ViT-B-16`` (any open_clip config) with ``--pretrained`` = a tag (``laion2b_s34b_b88k``, ``openai``),
  a checkpoint file, or ``random-init``. Tags that were trained with QuickGELU (OpenAI's) get it: a wrong
  activation gives silently wrong features.
- ``hf-hub:org/repo``: open_clip config and weights from the Hugging Face Hub (the local cache first);
  ``local-dir:/path``: the same two files (open_clip_config.json + weights) in a folder.
- ``timm:<name>``: a timm vision transformer (e.g. ``vit_base_patch14_dinov2.lvd142m``); ``--pretrained``
  is a checkpoint file, ``random-init``, or empty for timm's own weights.
- ``attrib-tiny``: a 4-block, width-64 ViT on 64 px inputs shipped with attrib, random weights (seeded)
  unless a checkpoint is given. For tests, benchmarks and offline runs: not CLIP features.

Preprocessing (``preprocess``, part of a feature set's identity):
- ``model`` (default): the model's own eval transform (open_clip's or timm's config for these weights).
- ``paper``: the paper's code (``ciodar/UniversalAttribution``, ``utils/data/augmentations``) for every
  model, CLIP included: ``Resize((S, S))`` (both sides: the aspect ratio is not kept; torchvision's
  default bilinear, antialiased on PIL images), ``CenterCrop(S)`` (a no-op then), ``ToTensor``,
  ``Normalize`` with the ImageNet mean and std. S is the model's input size: 224 for every model the paper
  uses; another size (attrib-tiny's 64) keeps the pipeline the same and its input shape right.
- ``paper-train``: the same with bicubic interpolation, as the paper's training images get.
Grey, RGBA and palette images reach every preprocessing as RGB through
:func:`attrib.data.images.to_rgb`: alpha is dropped, not composited, which is the paper's
``Image.open(f).convert("RGB")`` too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from attrib.extract.weights import (CONFIG_NAME, DEFAULT_PRETRAINED, BackboneError, WeightsPlan, load_weights, misfit,
                                    plan_open_clip, plan_timm, resolve_hub, timm_cached_file)
from attrib.extract.weights import (WeightsUnavailable, is_torchscript, online, sha256_file,  # noqa: F401 (re-exported:
                                    tag_create_kwargs, tag_for_sha256)  # they lived here, and callers import them here)
from attrib.manifest import PREPROCESSES, preprocess_name  # noqa: F401 (re-exported: the CLI and tests use it here)
from attrib.manifest import RANDOM_INIT, RANDOM_INIT_LABEL, TINY  # noqa: F401 (defined with the manifest, which decides the warning)

DEFAULT_MODEL = "ViT-B-16"
_TINY_SEED = 0  # random-init weights must be identical in every process (resume, ranks, predict)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PAPER_INTERPOLATION = {"paper": "bilinear", "paper-train": "bicubic"}


@dataclass
class Backbone:
    """A frozen vision tower plus everything needed to reproduce its features.

    ``spec`` is JSON-serialisable and goes into the cache manifest verbatim; two backbones with equal
    specs produce equal features.
    """

    module: nn.Module
    blocks: list[nn.Module]
    transform: Callable[[Any], torch.Tensor]
    spec: dict[str, Any]
    _batch_first: bool = True
    _taps: list[torch.Tensor] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.module.eval().requires_grad_(False)
        for blk in self.blocks:
            blk.register_forward_hook(self._tap)

    def _tap(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        x = output[0] if isinstance(output, tuple) else output
        # clone: a view would keep the block's whole (B, N, D) token map alive until the forward ends
        self._taps.append((x[:, 0] if self._batch_first else x[0]).clone())

    @property
    def n_blocks(self) -> int:
        return self.spec["n_blocks"]

    @property
    def width(self) -> int:
        return self.spec["width"]

    @property
    def embed_dim(self) -> int:
        return self.spec["embed_dim"]

    @property
    def random_init(self) -> bool:
        return self.spec["weights"] == RANDOM_INIT

    def to(self, device: str | torch.device) -> "Backbone":
        self.module.to(device)
        return self

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) CLS token after each of the L blocks, and (B, E) final embedding; one forward."""
        self._taps.clear()
        try:
            embed = self.module(x)
            if isinstance(embed, (tuple, list)):
                embed = embed[0]
            if len(self._taps) != len(self.blocks):
                raise RuntimeError(f"expected {len(self.blocks)} block taps, got {len(self._taps)}")
            return torch.stack(self._taps, dim=1), embed
        finally:
            self._taps.clear()


# ----------------------------------------------------------------------------------- preprocessing
def paper_preprocess_cfg(name: str, size: tuple[int, int]) -> dict[str, Any]:
    """The manifest's ``preprocess`` record of the paper's pipeline ``name`` at input ``size`` (h, w).

    ``name`` marks it apart from a model's own config (which has no ``name``), so a saved head or a
    feature set says which pipeline rebuilds its features (:func:`preprocess_name`).
    """
    if name not in _PAPER_INTERPOLATION:
        raise BackboneError(f"preprocess {name!r} is not one of the paper's: {', '.join(_PAPER_INTERPOLATION)}")
    return {"name": name, "size": [int(size[0]), int(size[1])], "resize_mode": "squash",
            "interpolation": _PAPER_INTERPOLATION[name], "crop": [int(size[0]), int(size[1])],
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def paper_transform(cfg: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """The torchvision pipeline of a :func:`paper_preprocess_cfg` record, the paper's own composition."""
    from torchvision import transforms as T

    modes = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    size = tuple(cfg["size"])
    return T.Compose([T.Resize(size, interpolation=modes[cfg["interpolation"]]), T.CenterCrop(tuple(cfg["crop"])),
                      T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])


def _check_preprocess(preprocess: str) -> None:
    if preprocess not in PREPROCESSES:
        raise BackboneError(f"--preprocess {preprocess!r}: use one of {', '.join(PREPROCESSES)}")


def register_tiny() -> None:
    """Make ``attrib-tiny`` known to open_clip's model-config registry (idempotent)."""
    import open_clip

    if TINY not in open_clip.list_models():
        open_clip.add_model_config(Path(__file__).resolve().parent.parent / "models" / f"{TINY}.json")


def _seeded(create: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """``create(*args, **kwargs)`` under a fixed seed: random-init weights must be identical in every
    process (resume, ranks, predict)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        return create(*args, **kwargs)


def _create_open_clip_hub(model: str) -> tuple[nn.Module, WeightsPlan]:
    """Build an hf-hub / local-dir model (untrained) from exactly the config we resolved (works offline);
    the caller loads the weights file of the returned plan."""
    import tempfile

    import open_clip

    config, weights = resolve_hub(model)
    with tempfile.TemporaryDirectory(prefix="attrib-hub-") as tmp:
        os.symlink(os.path.abspath(config), os.path.join(tmp, CONFIG_NAME))
        clip = _seeded(open_clip.create_model, f"local-dir:{tmp}", load_weights=False)
    label = "hf-hub" if model.startswith("hf-hub:") else "local-dir"
    return clip, WeightsPlan(label, os.path.realpath(weights))


def _uses_quick_gelu(module: nn.Module) -> bool:
    return any(type(m).__name__ == "QuickGELU" for m in module.modules())


def _open_clip_visual_blocks(visual: nn.Module) -> tuple[list[nn.Module], bool, int]:
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        t = visual.transformer
        return list(t.resblocks), bool(getattr(t, "batch_first", True)), t.width
    trunk = getattr(visual, "trunk", None)  # open_clip TimmModel wrapping a timm ViT
    if trunk is not None and getattr(trunk, "cls_token", None) is not None and hasattr(trunk, "blocks"):
        return list(trunk.blocks), True, trunk.embed_dim
    raise BackboneError(f"{type(visual).__name__} is not a vision transformer with a CLS token; "
                        "attrib taps the CLS token of every block")


def _spec(family: str, model: str, pretrained: str, plan: WeightsPlan, tower: nn.Module, preprocess: dict,
          n_blocks: int, width: int, embed_dim: int) -> dict[str, Any]:
    """Backbone.spec: the same fields for every family, JSON-ready."""
    return {
        "family": family, "model": model, "pretrained": pretrained, "weights": plan.weights,
        "weights_sha256": plan.sha256, "checkpoint": plan.checkpoint or "", "quick_gelu": _uses_quick_gelu(tower),
        "preprocess": {k: (list(v) if isinstance(v, tuple) else v) for k, v in preprocess.items()},
        "n_blocks": n_blocks, "width": int(width), "embed_dim": int(embed_dim),
    }


def build_open_clip(model: str, plan: WeightsPlan | None = None, preprocess: str = "model") -> Backbone:
    """Create the open_clip model for ``plan`` and wrap its vision tower (hf-hub/local-dir: no plan), with
    the ``preprocess`` pipeline (one of :data:`PREPROCESSES`)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    if plan is None:
        clip, plan = _create_open_clip_hub(model)
    else:
        import open_clip

        clip = _seeded(open_clip.create_model, model, **plan.create_kwargs)
    if plan.checkpoint:
        load_weights(clip, model, plan.checkpoint)
    visual = clip.visual
    blocks, batch_first, width = _open_clip_visual_blocks(visual)
    pp_cfg = dict(visual.preprocess_cfg)
    input_hw = PreprocessCfg(**pp_cfg).input_size[1:]
    if preprocess == "model":
        transform = image_transform_v2(PreprocessCfg(**pp_cfg), is_train=False)
    else:
        pp_cfg = paper_preprocess_cfg(preprocess, input_hw)
        transform = paper_transform(pp_cfg)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, *input_hw)
        embed_dim = int(visual(probe).shape[-1])
    spec = _spec("open_clip", model, plan.tag or plan.weights, plan, visual, pp_cfg, len(blocks), width, embed_dim)
    return Backbone(visual, blocks, transform, spec, _batch_first=batch_first)


def _load_timm(model: str, pretrained: str | None, preprocess: str = "model") -> Backbone:
    import timm
    from timm.data import create_transform, resolve_data_config

    name = model[len("timm:"):]
    if not name or not timm.is_model(name.split(".", 1)[0]):
        raise BackboneError(f"--model {model!r}: unknown timm model (see timm.list_models('vit_*'))")
    plan = plan_timm(name, pretrained)
    kwargs: dict[str, Any] = {"num_classes": 0, "pretrained": plan.weights != RANDOM_INIT}
    if plan.checkpoint:  # timm converts OpenAI-CLIP / open_clip / DINOv2 state dicts with its own filters
        kwargs["pretrained_cfg_overlay"] = {"file": plan.checkpoint}
    try:
        m = _seeded(timm.create_model, name, **kwargs)
    except Exception as exc:  # timm raises RuntimeError (size mismatch), KeyError, ... for a foreign file
        if not plan.checkpoint:
            raise
        raise BackboneError(misfit(plan.checkpoint, model, exc)) from None
    if kwargs["pretrained"] and plan.checkpoint is None:
        # timm fetched its weights just now: name the file as every later run (finding it cached) will, or
        # the feature set's identity (weights_sha256) would change between this run and its resumption
        plan = replace(plan, checkpoint=timm_cached_file(name))
    if getattr(m, "cls_token", None) is None or not hasattr(m, "blocks"):
        raise BackboneError(f"timm model {name} has no CLS token; attrib taps the CLS token of every block")
    data_cfg = resolve_data_config({}, model=m)
    if preprocess == "model":
        transform = create_transform(**data_cfg, is_training=False)
    else:
        data_cfg = paper_preprocess_cfg(preprocess, data_cfg["input_size"][1:])
        transform = paper_transform(data_cfg)
    spec = _spec("timm", model, pretrained or "", plan, m, data_cfg, len(m.blocks), m.embed_dim, m.num_features)
    return Backbone(m, list(m.blocks), transform, spec)


def load_backbone(model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                  preprocess: str = "model") -> Backbone:
    """Load ``model`` with ``pretrained`` weights on the CPU, frozen, in eval mode, its transform the
    ``preprocess`` pipeline (one of :data:`PREPROCESSES`; see the module's docstring)."""
    _check_preprocess(preprocess)
    if model.startswith("timm:"):
        return _load_timm(model, pretrained, preprocess)
    import open_clip

    register_tiny()
    if model.startswith(("hf-hub:", "local-dir:")):
        # the hub/folder config says everything; --pretrained is ignored
        return build_open_clip(model, preprocess=preprocess)
    if model not in open_clip.list_models():
        raise BackboneError(f"unknown model {model!r}: use an open_clip name (e.g. {DEFAULT_MODEL}, see "
                            f"open_clip.list_models()), hf-hub:org/repo, local-dir:/path, timm:<name>, or {TINY}")
    return build_open_clip(model, plan_open_clip(model, pretrained), preprocess)
