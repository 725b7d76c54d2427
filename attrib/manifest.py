"""The manifest of a feature set: what its features are, how they were stored, and how they were made.

A feature set's ``manifest.json`` is read by every later step (probe, predict, cache find, a saved head),
so its fields are typed here, once, and every question about them is answered here: which fields name
the feature set (its folder and identity hash), which must match to add shards to it, which must match
for a head trained on one feature set to read another, which must match to train on one feature set and
evaluate on another (:data:`SAME_BACKBONE`), and whether a feature set holds the image list
that a given ``attrib features`` command would extract. No other module reads manifest keys by string.

Field groups (JSON keys, in the order they are written):

identity (:data:`IDENTITY_FIELDS`: what the features are; hashed into the folder name)
    ``dataset``, ``images_sha256``, ``family``, ``model``, ``weights``, ``weights_sha256``,
    ``quick_gelu``, ``preprocess``, ``view``
layout (:data:`LAYOUT_FIELDS`: how the arrays are shaped and stored; must match to add shards)
    ``format_version``, ``dtype``, ``n_images``, ``n_blocks``, ``width``, ``embed_dim``,
    ``shard_size``, ``precision``
record (never compared: where, when and with what the features were extracted)
    ``root``, ``checkpoint``, ``label``, ``versions``, ``created``, and the options that chose the image
    list (``dataset_kind``, ``splits_dir``, ``max_per_source``, ``sample_seed``, ``limit``,
    ``requested``), written only when set. Keys this attrib does not know are kept in ``extra`` and
    written back as they were read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

FORMAT_VERSION = 1
DTYPE = "float16"
# How images become tensors: the model's own eval transform, or the paper's squash-and-ImageNet pipeline
# (bilinear for evaluation, bicubic for training images); see attrib.extract.backbone.
PREPROCESSES = ("model", "paper", "paper-train")

IDENTITY_FIELDS = ("dataset", "images_sha256", "family", "model", "weights", "weights_sha256",
                   "quick_gelu", "preprocess", "view")
LAYOUT_FIELDS = ("format_version", "n_images", "n_blocks", "width", "embed_dim", "dtype", "shard_size",
                 "precision")
# What a reader needs to address the shards at all.
REQUIRED_FIELDS = ("n_images", "n_blocks", "width", "embed_dim", "shard_size")
# The fields a backbone's spec contributes (see attrib.extract.backbone.Backbone.spec).
BACKBONE_FIELDS = ("family", "model", "weights", "weights_sha256", "checkpoint", "quick_gelu", "preprocess",
                   "n_blocks", "width", "embed_dim")
# Options of `attrib features` that chose the image list: recorded only when given.
OPTION_FIELDS = ("dataset_kind", "splits_dir", "max_per_source", "sample_seed", "limit", "requested")

# File systems cap a name at 255 bytes; the hash alone makes a name unique, so the readable part (a long
# view chain, a local-dir: path) is cut to fit.
MAX_READABLE_NAME = 200


@dataclass(frozen=True)
class MatchRule:
    """Which fields two manifests must share for one purpose.

    ``weights_by_checksum``: a checkpoint is identified by its sha256, not by ``weights`` (its file name,
    which may differ on another machine for the very same file).
    """

    fields: tuple[str, ...]
    weights_by_checksum: bool = False


# Adding shards to an existing feature set: the same features, stored the same way.
SAME_FEATURE_SET = MatchRule(IDENTITY_FIELDS + LAYOUT_FIELDS)
# Feeding features to a head trained on another feature set: the same meaning of a feature vector (same
# backbone, weights, preprocessing and view); the image list is of course different.
SAME_FEATURES = MatchRule(("family", "model", "weights", "weights_sha256", "quick_gelu", "preprocess", "view",
                           "n_blocks", "width"), weights_by_checksum=True)
# Training on one feature set and evaluating on another (`attrib probe --eval-features`): the same backbone
# and weights, so the two feature spaces are the same space; preprocessing and view may differ (the paper's
# bicubic-train / bilinear-eval features, a clean-train / perturbed-test robustness study).
SAME_BACKBONE = MatchRule(("family", "model", "weights", "weights_sha256", "quick_gelu", "n_blocks", "width",
                           "embed_dim"), weights_by_checksum=True)


@dataclass(frozen=True)
class Requested:
    """What the user asked for when `attrib features --fallback-model` extracted with another model."""

    model: str | None = None
    pretrained: str | None = None
    reason: str = ""


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), so a manifest equals itself after a save."""
    return json.loads(json.dumps(value)) if isinstance(value, (dict, list, tuple)) else value


@dataclass(frozen=True)
class Manifest:
    """One feature set's manifest.json, typed. Build it in code, or read it with :meth:`from_json`."""

    format_version: int | None = FORMAT_VERSION
    dtype: str | None = DTYPE
    dataset: str | None = None
    root: str = ""
    n_images: int | None = None
    images_sha256: str | None = None
    family: str | None = None
    model: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    checkpoint: str | None = None
    quick_gelu: bool | None = None
    preprocess: dict[str, Any] | None = None
    n_blocks: int | None = None
    width: int | None = None
    embed_dim: int | None = None
    view: str | None = None
    shard_size: int | None = None
    precision: str | None = None
    label: str = ""
    versions: dict[str, str] | None = None
    dataset_kind: str | None = None
    splits_dir: str | None = None
    max_per_source: int | None = None
    sample_seed: int | None = None
    limit: int | None = None
    requested: Requested | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created: str | None = None

    def __post_init__(self) -> None:
        for name in ("preprocess", "versions", "extra"):
            object.__setattr__(self, name, _plain(getattr(self, name)))

    # ------------------------------------------------------------------------------- JSON
    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "Manifest":
        """Read a manifest as stored (any JSON object); missing fields are None, unknown ones go to ``extra``.

        ``format_version`` and ``dtype`` stay None when absent: such a file is of no format this attrib
        knows, which :meth:`attrib.store.FeatureSet.open` reports.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        extra = {k: v for k, v in raw.items() if k not in known}
        kwargs.setdefault("format_version", None)
        kwargs.setdefault("dtype", None)
        req = kwargs.get("requested")
        if isinstance(req, Mapping):
            kwargs["requested"] = Requested(**{k: req[k] for k in ("model", "pretrained", "reason") if k in req})
        elif req is not None:  # not what attrib writes: kept as it is, but not interpreted
            extra["requested"] = kwargs.pop("requested")
        if kwargs.get("label") is None:
            kwargs["label"] = ""
        if kwargs.get("root") is None:
            kwargs["root"] = ""
        return cls(**kwargs, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The JSON object manifest.json holds, keys in a fixed order (the order attrib has always written).

        Identity, layout and record fields are always written; the image-list options only when set;
        unknown keys as they were read; ``created`` last.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update((k, v) for k, v in value.items() if k not in out)
            elif f.name in OPTION_FIELDS or f.name == "created":
                if value is not None:
                    out[f.name] = dataclasses.asdict(value) if isinstance(value, Requested) else value
            else:
                out[f.name] = value
        return out

    @classmethod
    def coerce(cls, manifest: "Manifest | Mapping[str, Any]") -> "Manifest":
        """``manifest`` itself, or a mapping read as manifest.json would be (tests and tools build dicts).

        A mapping without ``format_version`` / ``dtype`` describes a new feature set: it gets this
        attrib's.
        """
        if isinstance(manifest, Manifest):
            return manifest
        return cls.from_json({"format_version": FORMAT_VERSION, "dtype": DTYPE, **manifest})

    @classmethod
    def from_backbone(cls, spec: Mapping[str, Any], **fields: Any) -> "Manifest":
        """A manifest holding what a backbone's ``spec`` says about its features, plus ``fields``."""
        return cls(**{k: spec.get(k) for k in BACKBONE_FIELDS}, **fields)

    def updated(self, fields: Mapping[str, Any] | None) -> "Manifest":
        """This manifest with ``fields`` (JSON keys, e.g. the options that chose the image list) set."""
        return Manifest.from_json({**self.to_json(), **fields}) if fields else self

    def replace(self, **fields: Any) -> "Manifest":
        return dataclasses.replace(self, **fields)

    # -------------------------------------------------------------------------- meaning
    @property
    def kind(self) -> str | None:
        """The dataset kind (demo, genimage, folder, list, ...), which decides the built-in splits."""
        return self.dataset_kind if self.dataset_kind is not None else self.dataset

    def damaged_fields(self) -> list[str]:
        """Required fields that are not integers (a reader cannot address the shards without them)."""
        return [k for k in REQUIRED_FIELDS if not isinstance(getattr(self, k), int)]

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}

    @property
    def identity_hash(self) -> str:
        """8 hex digits of sha256 over the identity fields: equal for equal features, whatever the folder."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    @property
    def preprocess_name(self) -> str:
        """``model`` (the model's own transform, recorded as its config) or the named pipeline
        (``paper``, ``paper-train``), which records its ``name``."""
        return preprocess_name(self.preprocess)

    @property
    def folder_name(self) -> str:
        """``<dataset>__<model>__<weights>[__<preprocess>][__<view>]-<hash8>``: readable, and unique per
        identity; the model's own preprocessing adds nothing (names from before ``--preprocess`` stay)."""
        parts = [self.dataset, self.model, self.weights]
        if self.preprocess_name != "model":
            parts.append(self.preprocess_name)
        if self.view not in (None, "none"):
            parts.append(self.view)
        return "__".join(_slug(p) for p in parts)[:MAX_READABLE_NAME] + "-" + self.identity_hash

    def mismatches(self, other: "Manifest", rule: MatchRule, ours: str = "cache has",
                   theirs: str = "this run has") -> list[str]:
        """One line per field of ``rule`` that differs (per differing key of nested settings such as
        ``preprocess``), e.g. ``"model: cache has 'a', this run has 'b'"``; empty when they match."""
        fields = rule.fields
        if rule.weights_by_checksum and self.weights_sha256 and other.weights_sha256:
            fields = tuple(k for k in fields if k != "weights")
        out = []
        for k in fields:
            a, b = getattr(self, k), getattr(other, k)
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                out.extend(f"{k}.{sub}: {ours} {a.get(sub)!r}, {theirs} {b.get(sub)!r}"
                           for sub in sorted(set(a) | set(b)) if a.get(sub) != b.get(sub))
            else:
                out.append(f"{k}: {ours} {a!r}, {theirs} {b!r}")
        return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("_") or "x"


def identity_hash(manifest: Manifest | Mapping[str, Any]) -> str:
    """See :attr:`Manifest.identity_hash` (a mapping is read as manifest.json would be)."""
    return Manifest.coerce(manifest).identity_hash


def feature_set_name(manifest: Manifest | Mapping[str, Any]) -> str:
    """See :attr:`Manifest.folder_name` (a mapping is read as manifest.json would be)."""
    return Manifest.coerce(manifest).folder_name


def preprocess_name(cfg: Mapping[str, Any] | None) -> str:
    """Which of :data:`PREPROCESSES` made a manifest's ``preprocess`` record (a model's own config: model)."""
    name = cfg.get("name") if isinstance(cfg, Mapping) else None
    return name if name in PREPROCESSES else "model"


@dataclass(frozen=True)
class FeatureRequest:
    """What an `attrib features` command asks for, as far as `attrib cache find` can tell from a manifest.

    ``None`` means "not given" (any value matches), except for the image-list options, where ``None``
    means the unsampled, uncut, unrestricted list. ``view`` is a parsed view spec; ``splits_dir`` a
    resolved path.
    """

    dataset: str | None = None
    model: str | None = None
    pretrained: str | None = None
    view: str | None = None
    max_per_source: int | None = None
    sample_seed: int = 0
    limit: int | None = None
    splits_dir: str | None = None

    def matches_settings(self, m: Manifest) -> bool:
        """Same dataset, model (a fallback's request counts), weights (tag, file, or checkpoint file name),
        view and split-file restriction."""
        req = m.requested or Requested()
        weights = {m.weights, req.pretrained, Path(m.checkpoint or "-").name, m.checkpoint}
        if self.dataset and self.dataset not in (m.dataset, m.dataset_kind):
            return False
        if self.model and self.model not in (m.model, req.model):
            return False
        if self.pretrained and self.pretrained not in weights and Path(self.pretrained).name not in weights:
            return False
        if self.view and m.view != self.view:
            return False
        return m.splits_dir == self.splits_dir

    def same_image_list(self, m: Manifest, group_sizes: Callable[[], Iterable[int]]) -> bool:
        """Would these options list exactly the images of the feature set ``m`` describes?

        Its folder is named by its image list, not by the options that made it, so a set made with
        another --max-per-source N (or none) is the same set when no (source, subset) group was cut by
        either N: the manifest records the options of the run that created it, and its own group sizes
        (``group_sizes()``, read only when needed) tell the rest.
        """
        m_max, m_limit = m.max_per_source, m.limit
        same_draw = m_max is None or (m.sample_seed if m.sample_seed is not None else 0) == self.sample_seed
        if (m_max, m_limit) == (self.max_per_source, self.limit) and same_draw:
            return True
        n = m.n_images or 0
        if (m_limit is not None and n >= m_limit) or (self.limit is not None and self.limit < n):
            return False  # one of the two lists was (or would be) cut by --limit: only identical options match
        if m_max == self.max_per_source and same_draw:
            return True
        return all((self.max_per_source is None or c <= self.max_per_source) and (m_max is None or c < m_max)
                   for c in group_sizes())
