"""Backbones: load a frozen vision transformer and tap the CLS token after every block in one forward.

Why taps and not ``forward_intermediates``: open_clip's and timm's ``forward_intermediates`` keep every
block's full token map (B x 197 x 768 x 12 for ViT-B/16) alive until the end of the forward, only for us
to throw away all but one token. A forward hook on each block copies out the CLS token as it passes, so
memory stays at one block's activations; tests prove the taps equal ``forward_intermediates``.

Model names:
- ``ViT-B-16`` (any open_clip config) with ``--pretrained`` = a tag (``laion2b_s34b_b88k``, ``openai``),
  a checkpoint file, or ``random-init``. Tags that were trained with QuickGELU (OpenAI's) get it: a wrong
  activation gives silently wrong features.
- ``hf-hub:org/repo``: open_clip config and weights from the Hugging Face Hub.
- ``timm:<name>``: a timm vision transformer (e.g. ``vit_base_patch14_dinov2.lvd142m``); ``--pretrained``
  is a checkpoint file, ``random-init``, or empty for timm's own weights.
- ``attrib-tiny``: a 4-block, width-64 ViT on 64 px inputs shipped with attrib, random weights (seeded)
  unless a checkpoint is given. For tests, benchmarks and offline runs: not CLIP features.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

TINY = "attrib-tiny"
RANDOM_INIT = "random-init"
RANDOM_INIT_LABEL = "random-init: pipeline check, not CLIP features"
DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"
_TINY_SEED = 0  # random-init weights must be identical in every process (resume, ranks, predict)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached locally nor downloadable right now."""


class BackboneError(ValueError):
    """The model cannot serve as an attrib backbone (no CLS token, unknown name, ...)."""


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
        self._taps.append(x[:, 0] if self._batch_first else x[0])

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


# ----------------------------------------------------------------------------------------- helpers
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to ``host``? A cheap check that avoids minutes of download retries."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def register_tiny() -> None:
    """Make ``attrib-tiny`` known to open_clip's model-config registry (idempotent)."""
    import open_clip

    if TINY not in open_clip.list_models():
        open_clip.add_model_config(Path(__file__).resolve().parent.parent / "models" / f"{TINY}.json")


def _is_file(pretrained: str | None) -> bool:
    return bool(pretrained) and (os.sep in pretrained or "/" in pretrained or os.path.isfile(pretrained))


def _hf_cached(repo: str, names: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _cached_tag_file(cfg: dict) -> str | None:
    """Local file of an open_clip pretrained tag, looked up without touching the network."""
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub"):
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" -> ("org/repo", "")
        names = [filename.replace(".bin", ".safetensors"), filename] if filename else [
            HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        hit = _hf_cached(repo, names)
        if hit:
            return hit
    if cfg.get("url"):
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if os.path.isfile(target):
            return target
    return None


def resolve_tag(model: str, tag: str) -> tuple[str, dict]:
    """Local weight file for an open_clip (model, tag), downloading it once when the network allows."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise BackboneError(f"--pretrained {tag!r} is not a known tag for {model}, nor an existing file. "
                            f"Known tags: {', '.join(tags) or 'none'}")
    local = _cached_tag_file(cfg)
    if local:
        return local, cfg
    host = "huggingface.co" if cfg.get("hf_hub") else (cfg.get("url", "").split("/")[2:3] or ["?"])[0]
    if not online(host):
        raise WeightsUnavailable(
            f"weights {model}/{tag} are not in the local cache and {host} cannot be reached. Download them "
            f"once on a connected machine (python -c \"import open_clip; open_clip.create_model('{model}', "
            f"pretrained='{tag}')\") or pass --pretrained /path/to/weights")
    return open_clip.download_pretrained(cfg), cfg


# ------------------------------------------------------------------------------------------ loaders
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


def _load_open_clip(model: str, pretrained: str | None) -> Backbone:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    register_tiny()
    spec: dict[str, Any] = {"family": "open_clip", "model": model, "pretrained": pretrained or ""}
    kwargs: dict[str, Any] = {}
    checkpoint = None
    if model.startswith("hf-hub:"):
        weights = model
    elif not pretrained or pretrained == RANDOM_INIT:
        if model != TINY and pretrained != RANDOM_INIT:
            raise BackboneError(f"--model {model} needs --pretrained (a tag such as {DEFAULT_PRETRAINED}, "
                                f"a checkpoint file, or {RANDOM_INIT} for untrained weights)")
        weights = RANDOM_INIT
    elif _is_file(pretrained):
        if not os.path.isfile(pretrained):
            raise BackboneError(f"--pretrained {pretrained!r}: no such file")
        checkpoint = os.path.abspath(pretrained)
        weights = Path(pretrained).name
    else:
        checkpoint, cfg = resolve_tag(model, pretrained)
        weights = pretrained
        if cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True
        pp = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        if pp:
            kwargs["force_preprocess_cfg"] = pp
    if model.startswith("hf-hub:"):
        clip = open_clip.create_model(model, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_TINY_SEED)
            clip = open_clip.create_model(model, pretrained=checkpoint, **kwargs)
    visual = clip.visual
    blocks, batch_first, width = _open_clip_visual_blocks(visual)
    pp_cfg = dict(visual.preprocess_cfg)
    transform = image_transform_v2(PreprocessCfg(**pp_cfg), is_train=False)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, *PreprocessCfg(**pp_cfg).input_size[1:])
        embed_dim = int(visual(probe).shape[-1])
    spec.update(
        weights=weights,
        weights_sha256=sha256_file(checkpoint) if checkpoint else "",
        checkpoint=checkpoint or "",
        quick_gelu=bool(kwargs.get("force_quick_gelu", False) or "quickgelu" in model.lower()),
        preprocess={k: (list(v) if isinstance(v, tuple) else v) for k, v in pp_cfg.items()},
        n_blocks=len(blocks), width=int(width), embed_dim=embed_dim,
    )
    return Backbone(visual, blocks, transform, spec, _batch_first=batch_first)


def _load_timm(model: str, pretrained: str | None) -> Backbone:
    import timm
    from timm.data import create_transform, resolve_data_config

    name = model[len("timm:"):]
    kwargs: dict[str, Any] = {"num_classes": 0}
    checkpoint = None
    if pretrained == RANDOM_INIT:
        weights, use_pretrained = RANDOM_INIT, False
    elif pretrained:
        if not os.path.isfile(pretrained):
            raise BackboneError(f"--pretrained {pretrained!r}: no such file (timm models take a checkpoint "
                                f"file, {RANDOM_INIT}, or nothing for timm's own weights)")
        checkpoint = os.path.abspath(pretrained)
        weights, use_pretrained = Path(pretrained).name, True
        kwargs["pretrained_cfg_overlay"] = {"file": checkpoint}
    else:
        weights, use_pretrained = name.split(".", 1)[1] if "." in name else "timm-default", True
        hub = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(hub, "hf_hub_id", None) if hub is not None else None
        local = _hf_cached(hub_id, ["model.safetensors", "pytorch_model.bin"]) if hub_id else None
        if local:
            kwargs["pretrained_cfg_overlay"] = {"file": local}
        elif not online():
            raise WeightsUnavailable(f"timm weights for {name} are not in the local cache and huggingface.co "
                                     "cannot be reached; pass --pretrained /path/to/weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        m = timm.create_model(name, pretrained=use_pretrained, **kwargs)
    if getattr(m, "cls_token", None) is None or not hasattr(m, "blocks"):
        raise BackboneError(f"timm model {name} has no CLS token; attrib taps the CLS token of every block")
    data_cfg = resolve_data_config({}, model=m)
    transform = create_transform(**data_cfg, is_training=False)
    spec = {
        "family": "timm", "model": model, "pretrained": pretrained or "", "weights": weights,
        "weights_sha256": sha256_file(checkpoint) if checkpoint else "", "checkpoint": checkpoint or "",
        "quick_gelu": False,
        "preprocess": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()},
        "n_blocks": len(m.blocks), "width": int(m.embed_dim), "embed_dim": int(m.num_features),
    }
    return Backbone(m, list(m.blocks), transform, spec)


def load_backbone(model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED) -> Backbone:
    """Load ``model`` with ``pretrained`` weights on the CPU, frozen, in eval mode."""
    if model.startswith("timm:"):
        return _load_timm(model, pretrained)
    import open_clip

    register_tiny()
    if not model.startswith("hf-hub:") and model not in open_clip.list_models():
        raise BackboneError(f"unknown model {model!r}: use an open_clip name (e.g. {DEFAULT_MODEL}, see "
                            f"open_clip.list_models()), hf-hub:org/repo, timm:<name>, or {TINY}")
    return _load_open_clip(model, pretrained)
