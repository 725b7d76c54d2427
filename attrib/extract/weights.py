"""Weights: find, fetch and load the weight files a backbone is built with.

Why apart from :mod:`attrib.extract.backbone`: deciding *which* file a model gets (a tag in the local
cache, a checkpoint, the Hub, timm's own) and whether the network may be tried is a job of its own, with
its own failure modes (offline clusters, files from another model, pickles that would run code). The
decisions that silently change features (QuickGELU, a tag's normalisation) are made here in a
:class:`WeightsPlan` that can be checked without the file; building the network and tapping its blocks
stays in the backbone module.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attrib.errors import AttribError
from attrib.manifest import RANDOM_INIT, TINY

DEFAULT_PRETRAINED = "laion2b_s34b_b88k"


class WeightsUnavailable(AttribError, RuntimeError):
    """Pretrained weights are neither cached locally nor downloadable right now."""


class BackboneError(AttribError, ValueError):
    """The model cannot serve as an attrib backbone (no CLS token, unknown name, ...)."""



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
CONFIG_NAME = "open_clip_config.json"


def resolve_hub(model: str) -> tuple[str, str]:
    """(config file, weights file) of ``hf-hub:org/repo`` (local cache first) or ``local-dir:/path``."""
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):]).expanduser()
        config = folder / CONFIG_NAME
        weights = next((folder / n for n in _WEIGHT_NAMES if (folder / n).is_file()), None)
        if not config.is_file() or weights is None:
            raise BackboneError(f"--model {model}: the folder must hold {CONFIG_NAME} and one of "
                                f"{', '.join(_WEIGHT_NAMES)}")
        return str(config), str(weights)
    repo = model[len("hf-hub:"):].strip("/")
    if repo.count("/") != 1:
        raise BackboneError(f"--model {model!r}: use hf-hub:org/repo")
    config, weights = _hf_cached(repo, [CONFIG_NAME]), _hf_cached(repo, list(_WEIGHT_NAMES))
    if config and weights:
        return config, weights
    if not online():
        raise WeightsUnavailable(
            f"{model} is not in the local Hugging Face cache and huggingface.co cannot be reached. Download it "
            f"once on a connected machine (python -c \"import open_clip; open_clip.create_model('{model}')\"), "
            "or put open_clip_config.json and the weights in a folder and use --model local-dir:/that/folder")
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        return (download_pretrained_from_hf(repo, filename=CONFIG_NAME), download_pretrained_from_hf(repo))
    except Exception as exc:
        raise BackboneError(f"--model {model}: cannot fetch open_clip config and weights from the Hub: {exc}") from None


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


def load_weights(clip: nn.Module, model: str, checkpoint: str) -> None:
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
        raise BackboneError(misfit(checkpoint, model, exc)) from None


def misfit(checkpoint: str, model: str, exc: BaseException) -> str:
    """The one message for weights that cannot be loaded, whichever library refused them."""
    return (f"cannot load weights {checkpoint}: this checkpoint does not fit model {model} "
            f"({type(exc).__name__}: {_short(exc)}). Pass weights trained for {model}, or the --model they "
            "were trained as")



def timm_cached_file(name: str) -> str | None:
    """timm's own weights for ``name`` in the local Hugging Face cache, if they are there."""
    import timm

    hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    return _hf_cached(hub_id, ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]) \
        if hub_id else None


def plan_timm(name: str, pretrained: str | None) -> WeightsPlan:
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
    local = timm_cached_file(name)
    if not local and not online():
        raise WeightsUnavailable(f"timm weights for {name} are not in the local cache and huggingface.co "
                                 "cannot be reached; pass --pretrained /path/to/weights")
    return WeightsPlan(getattr(cfg, "tag", None) or "timm-default", local)
