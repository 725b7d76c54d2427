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

import hashlib
import os
import pickle
import socket
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from attrib.errors import AttribError
from attrib.manifest import PREPROCESSES, preprocess_name  # noqa: F401 (re-exported: the CLI and tests use it here)
from attrib.manifest import RANDOM_INIT, RANDOM_INIT_LABEL, TINY  # noqa: F401 (defined with the manifest, which decides the warning)

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"
_TINY_SEED = 0  # random-init weights must be identical in every process (resume, ranks, predict)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PAPER_INTERPOLATION = {"paper": "bilinear", "paper-train": "bicubic"}


class WeightsUnavailable(AttribError, RuntimeError):
    """Pretrained weights are neither cached locally nor downloadable right now."""


class BackboneError(AttribError, ValueError):
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


# ----------------------------------------------------------------------------------------- helpers
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to ``host``? A cheap check that avoids minutes of download retries.

    ``HF_HUB_OFFLINE=1`` means no: the user asked for the local cache only.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
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


def _tag_file(model: str, tag: str, cfg: dict) -> str:
    """Local weight file of a known open_clip (model, tag) with config ``cfg``, downloaded once when the
    network allows."""
    import open_clip

    local = _cached_tag_file(cfg)
    if local:
        return local
    host = "huggingface.co" if cfg.get("hf_hub") else (cfg.get("url", "").split("/")[2:3] or ["?"])[0]
    if not online(host):
        raise WeightsUnavailable(
            f"weights {model}/{tag} are not in the local cache and {host} cannot be reached. Download them "
            f"once on a connected machine (python -c \"import open_clip; open_clip.create_model('{model}', "
            f"pretrained='{tag}')\") or pass --pretrained /path/to/weights")
    return open_clip.download_pretrained(cfg)


# ------------------------------------------------------------------------------------------ loaders
@dataclass
class WeightsPlan:
    """Which weights an open_clip model gets, and how the architecture must be built for them.

    Separate from loading so the decisions that silently change features (QuickGELU, normalisation) can
    be checked without the weights file.
    """

    weights: str  # label: tag, checkpoint file name, hf-hub / local-dir, or random-init
    checkpoint: str | None  # local file to load; None = random init (seeded)
    create_kwargs: dict[str, Any] = field(default_factory=dict)  # extra open_clip.create_model kwargs
    tag: str = ""  # the open_clip tag these weights are (given, or recognised from the file's sha256)

    @cached_property
    def sha256(self) -> str:
        """sha256 of the checkpoint ('' without one); hashed once, though both tag recognition and the
        manifest need it."""
        return sha256_file(self.checkpoint) if self.checkpoint else ""


def tag_create_kwargs(cfg: dict) -> dict[str, Any]:
    """create_model kwargs that make the architecture match how a pretrained tag was trained.

    OpenAI's weights were trained with QuickGELU; the plain config uses GELU, and with it the weights
    load without complaint but every feature is wrong. Tags also carry their own mean/std/resize.
    """
    kwargs: dict[str, Any] = {}
    if cfg.get("quick_gelu"):
        kwargs["force_quick_gelu"] = True
    pp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()
          if k in ("mean", "std", "interpolation", "resize_mode")}
    if pp:
        kwargs["force_preprocess_cfg"] = pp
    return kwargs


def tag_for_sha256(model: str, sha256: str) -> tuple[str, dict] | None:
    """The open_clip tag whose download URL names this file hash (OpenAI's URLs embed the sha256)."""
    import open_clip

    for tag in open_clip.list_pretrained_tags_by_model(model):
        cfg = open_clip.get_pretrained_cfg(model, tag)
        if sha256 and sha256 in cfg.get("url", ""):
            return tag, cfg
    return None


def _file_plan(pretrained: str, hint: str = "") -> WeightsPlan:
    """A checkpoint file given as --pretrained (any family)."""
    if not os.path.isfile(pretrained):
        raise BackboneError(f"--pretrained {pretrained!r}: no such file{hint}")
    return WeightsPlan(Path(pretrained).name, os.path.abspath(pretrained))


def plan_open_clip(model: str, pretrained: str | None, resolve: bool = True) -> WeightsPlan:
    """Decide weights and create_model kwargs for an open_clip model name (not hf-hub / local-dir).

    ``resolve=False`` skips finding the weights file (nothing is read or downloaded); the plan's
    ``checkpoint`` is then None.
    """
    import open_clip

    if not pretrained or pretrained == RANDOM_INIT:
        if model != TINY and pretrained != RANDOM_INIT:
            raise BackboneError(f"--model {model} needs --pretrained (a tag such as {DEFAULT_PRETRAINED}, "
                                f"a checkpoint file, or {RANDOM_INIT} for untrained weights)")
        return WeightsPlan(RANDOM_INIT, None)
    if _is_file(pretrained):
        plan = _file_plan(pretrained)
        known = tag_for_sha256(model, plan.sha256) if resolve else None
        if known:
            plan.tag, plan.create_kwargs = known[0], tag_create_kwargs(known[1])
        return plan
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise BackboneError(f"--pretrained {pretrained!r} is not a known tag for {model}, nor an existing file. "
                            f"Known tags: {', '.join(tags) or 'none'}")
    checkpoint = _tag_file(model, pretrained, cfg) if resolve else None
    return WeightsPlan(pretrained, checkpoint, tag_create_kwargs(cfg), pretrained)


_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                 "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
_CONFIG_NAME = "open_clip_config.json"


def resolve_hub(model: str) -> tuple[str, str]:
    """(config file, weights file) of ``hf-hub:org/repo`` (local cache first) or ``local-dir:/path``."""
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):]).expanduser()
        config = folder / _CONFIG_NAME
        weights = next((folder / n for n in _WEIGHT_NAMES if (folder / n).is_file()), None)
        if not config.is_file() or weights is None:
            raise BackboneError(f"--model {model}: the folder must hold {_CONFIG_NAME} and one of "
                                f"{', '.join(_WEIGHT_NAMES)}")
        return str(config), str(weights)
    repo = model[len("hf-hub:"):].strip("/")
    if repo.count("/") != 1:
        raise BackboneError(f"--model {model!r}: use hf-hub:org/repo")
    config, weights = _hf_cached(repo, [_CONFIG_NAME]), _hf_cached(repo, list(_WEIGHT_NAMES))
    if config and weights:
        return config, weights
    if not online():
        raise WeightsUnavailable(
            f"{model} is not in the local Hugging Face cache and huggingface.co cannot be reached. Download it "
            f"once on a connected machine (python -c \"import open_clip; open_clip.create_model('{model}')\"), "
            "or put open_clip_config.json and the weights in a folder and use --model local-dir:/that/folder")
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        return (download_pretrained_from_hf(repo, filename=_CONFIG_NAME), download_pretrained_from_hf(repo))
    except Exception as exc:
        raise BackboneError(f"--model {model}: cannot fetch open_clip config and weights from the Hub: {exc}") from None


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
        os.symlink(os.path.abspath(config), os.path.join(tmp, _CONFIG_NAME))
        clip = _seeded(open_clip.create_model, f"local-dir:{tmp}", load_weights=False)
    label = "hf-hub" if model.startswith("hf-hub:") else "local-dir"
    return clip, WeightsPlan(label, os.path.realpath(weights))


def is_torchscript(path: str | os.PathLike) -> bool:
    """Is ``path`` a TorchScript archive (how OpenAI ships its CLIP weights, e.g. ``ViT-B-16.pt``)?

    Such an archive is a zip file with a ``constants.pkl`` record, which a plain ``torch.save`` file never
    has. Told apart up front because ``torch.load(weights_only=True)`` refuses archives, while
    ``torch.jit.load`` reads them with TorchScript's own loader (no arbitrary Python pickle code runs); a
    plain checkpoint keeps going through ``weights_only=True``.
    """
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.split("/", 1)[-1] == "constants.pkl" for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _torchscript_state_dict(path: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of a TorchScript CLIP archive, keyed as ``module`` (open_clip's CLIP) expects them.

    As open_clip's ``load_openai_model`` reads OpenAI's archives: the archive's own state dict, without
    the three integer attributes OpenAI stores in it. A scripted or traced open_clip model also carries
    its non-persistent buffers (the text attention mask): constants the model rebuilds itself, dropped.
    """
    with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI's files are TorchScript all the same
        warnings.simplefilter("ignore", FutureWarning)
        state = torch.jit.load(path, map_location="cpu").state_dict()
    persistent = set(module.state_dict())
    transient = {name for name, _ in module.named_buffers()} - persistent
    drop = transient | {"input_resolution", "context_length", "vocab_size"}
    return {k: v for k, v in state.items() if k not in drop}


def _short(exc: BaseException, limit: int = 300) -> str:
    """One line of an exception's text: torch lists every mismatched tensor, hundreds of lines for a ViT."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def _load_weights(clip: nn.Module, model: str, checkpoint: str) -> None:
    """Load the weights file ``checkpoint`` into the open_clip model ``clip`` (built as ``model``).

    Plain checkpoints go through open_clip's own loader (state-dict conversions, ``weights_only=True``);
    TorchScript archives through :func:`torch.jit.load`. A file that does not fit the architecture (another
    model's weights, not a checkpoint at all) raises :class:`BackboneError` naming both, not a traceback
    from deep inside torch or open_clip.
    """
    from open_clip.factory import load_checkpoint

    try:
        if is_torchscript(checkpoint):
            clip.load_state_dict(_torchscript_state_dict(checkpoint, clip), strict=True)
        else:
            load_checkpoint(clip, checkpoint, strict=True, weights_only=True)
    except pickle.UnpicklingError:  # torch's advice (weights_only=False) would run the file's pickled code
        raise BackboneError(f"cannot load weights {checkpoint}: not a checkpoint that loads safely (tensors "
                            "only, weights_only=True): a pickled Python object, or not a checkpoint at all. "
                            "Save model.state_dict() (or use .safetensors) and pass that file") from None
    except Exception as exc:  # torch / open_clip raise RuntimeError, AssertionError, KeyError, ...
        raise BackboneError(_misfit(checkpoint, model, exc)) from None


def _misfit(checkpoint: str, model: str, exc: BaseException) -> str:
    """The one message for weights that cannot be loaded, whichever library refused them."""
    return (f"cannot load weights {checkpoint}: this checkpoint does not fit model {model} "
            f"({type(exc).__name__}: {_short(exc)}). Pass weights trained for {model}, or the --model they "
            "were trained as")


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
        _load_weights(clip, model, plan.checkpoint)
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


def _timm_cached_file(name: str) -> str | None:
    """timm's own weights for ``name`` in the local Hugging Face cache, if they are there."""
    import timm

    hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    return _hf_cached(hub_id, ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]) \
        if hub_id else None


def _plan_timm(name: str, pretrained: str | None) -> WeightsPlan:
    """Weights for a timm model: a file, random-init, or timm's own (checkpoint None: not cached yet)."""
    import timm

    if pretrained == RANDOM_INIT:
        return WeightsPlan(RANDOM_INIT, None)
    if pretrained:
        return _file_plan(pretrained, f" (timm models take a checkpoint file, {RANDOM_INIT}, or nothing for "
                                      "timm's own weights)")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise BackboneError(f"timm model {name} has no pretrained weights; pass --pretrained FILE or {RANDOM_INIT}")
    local = _timm_cached_file(name)
    if not local and not online():
        raise WeightsUnavailable(f"timm weights for {name} are not in the local cache and huggingface.co "
                                 "cannot be reached; pass --pretrained /path/to/weights")
    return WeightsPlan(getattr(cfg, "tag", None) or "timm-default", local)


def _load_timm(model: str, pretrained: str | None, preprocess: str = "model") -> Backbone:
    import timm
    from timm.data import create_transform, resolve_data_config

    name = model[len("timm:"):]
    if not name or not timm.is_model(name.split(".", 1)[0]):
        raise BackboneError(f"--model {model!r}: unknown timm model (see timm.list_models('vit_*'))")
    plan = _plan_timm(name, pretrained)
    kwargs: dict[str, Any] = {"num_classes": 0, "pretrained": plan.weights != RANDOM_INIT}
    if plan.checkpoint:  # timm converts OpenAI-CLIP / open_clip / DINOv2 state dicts with its own filters
        kwargs["pretrained_cfg_overlay"] = {"file": plan.checkpoint}
    try:
        m = _seeded(timm.create_model, name, **kwargs)
    except Exception as exc:  # timm raises RuntimeError (size mismatch), KeyError, ... for a foreign file
        if not plan.checkpoint:
            raise
        raise BackboneError(_misfit(plan.checkpoint, model, exc)) from None
    if kwargs["pretrained"] and plan.checkpoint is None:
        # timm fetched its weights just now: name the file as every later run (finding it cached) will, or
        # the feature set's identity (weights_sha256) would change between this run and its resumption
        plan = replace(plan, checkpoint=_timm_cached_file(name))
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
