"""The manifest's identity is a contract with every cache already on disk: the folder name, the identity
hash and the bytes of manifest.json must stay exactly what the code that wrote them produced.

The other tests check the typed manifest itself: the JSON round trip, the one place that decides
whether two feature sets match (and which field does not), and matching a `features` command.

The literal below is a manifest.json written by `attrib features --dataset folder --model attrib-tiny
--max-per-source 2` (only ``root`` and ``created`` changed), and the names and hashes were computed by
the code that wrote it, before the manifest became a dataclass.
"""

from __future__ import annotations

import json
from pathlib import Path

from attrib.data.catalog import ImageList
from attrib.manifest import SAME_FEATURE_SET, SAME_FEATURES, FeatureRequest, Manifest, Requested
from attrib.store import MANIFEST, FeatureSet, feature_set_name, identity_hash

WRITTEN = """{
  "format_version": 1,
  "dtype": "float16",
  "dataset": "data",
  "root": "/data/photos",
  "n_images": 4,
  "images_sha256": "f8c567df98e066fb8a373eeab0852312a209de10e54f0c525c24afd37cc68fb0",
  "family": "open_clip",
  "model": "attrib-tiny",
  "weights": "random-init",
  "weights_sha256": "",
  "checkpoint": "",
  "quick_gelu": false,
  "preprocess": {
    "size": [
      64,
      64
    ],
    "mode": "RGB",
    "mean": [
      0.48145466,
      0.4578275,
      0.40821073
    ],
    "std": [
      0.26862954,
      0.26130258,
      0.27577711
    ],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0
  },
  "n_blocks": 4,
  "width": 64,
  "embed_dim": 32,
  "view": "none",
  "shard_size": 10000,
  "precision": "fp32",
  "label": "random-init: pipeline check, not CLIP features",
  "versions": {
    "attrib": "0.1.0",
    "torch": "2.14.1+cu130",
    "open_clip": "3.3.0",
    "timm": "1.0.31",
    "h5py": "3.16.0",
    "python": "3.11.7"
  },
  "dataset_kind": "folder",
  "max_per_source": 2,
  "sample_seed": 0,
  "created": "2026-01-02T03:04:05+00:00"
}"""

# test_store's small manifest (plus an image-list hash), as used by its folder-name test
SMALL = {"dataset": "t", "family": "open_clip", "model": "m", "weights": "w", "weights_sha256": "",
         "quick_gelu": False, "preprocess": {"size": 64, "mean": [0.5, 0.5, 0.5]}, "view": "none",
         "n_blocks": 3, "width": 8, "embed_dim": 4, "shard_size": 4, "precision": "fp32", "root": "/data",
         "images_sha256": "abc"}


def _images() -> ImageList:
    return ImageList.from_rows([(f"{s}/{i}.png", s, "all") for s in ("ganA", "real") for i in (1, 2)],
                               root="/data/photos")


def test_folder_names_and_identity_hashes_are_pinned() -> None:
    written = json.loads(WRITTEN)
    assert feature_set_name(written) == "data__attrib-tiny__random-init-2c2455c9"
    assert identity_hash(written) == "2c2455c9"
    assert feature_set_name(SMALL) == "t__m__w-7463cfe5"
    assert feature_set_name({**SMALL, "view": "noise:8+jpeg:80"}) == "t__m__w__noise_8+jpeg_80-8379f8eb"
    assert feature_set_name({**SMALL, "quick_gelu": True}) == "t__m__w-ca4f6c6d"
    partial = {"dataset": "demo", "model": "local-dir:/" + "m" * 300, "weights": "w", "view": "none"}
    assert feature_set_name(partial) == "demo__local-dir_" + "m" * 184 + "-e3308241"


def test_the_store_writes_manifest_json_byte_for_byte_as_before(tmp_path: Path) -> None:
    """What the runner hands the store (everything but format_version and dtype) gives the same file."""
    images = _images()
    assert images.sha256() == json.loads(WRITTEN)["images_sha256"]
    given = {k: v for k, v in json.loads(WRITTEN).items() if k not in ("format_version", "dtype")}
    fs = FeatureSet.create(tmp_path / "fs", given, images)
    assert (fs.path / MANIFEST).read_text() == WRITTEN
    again = FeatureSet.open(fs.path)  # an existing cache reopens as it is
    assert again.n_images == 4 and again.label.startswith("random-init")
    assert FeatureSet.create(tmp_path / "fs", given, images).path == fs.path  # and resumes


def test_manifest_json_round_trips_byte_for_byte_and_keeps_unknown_keys() -> None:
    m = Manifest.from_json(json.loads(WRITTEN))
    assert json.dumps(m.to_json(), indent=2) == WRITTEN
    assert (m.model, m.n_blocks, m.max_per_source, m.limit, m.requested, m.kind) == ("attrib-tiny", 4, 2, None,
                                                                                     None, "folder")
    assert m.folder_name == "data__attrib-tiny__random-init-2c2455c9" and m.identity_hash == "2c2455c9"
    newer = {**json.loads(WRITTEN), "parts": [{"id": "p1"}], "requested": {"model": "ViT-B-16",
                                                                           "pretrained": None, "reason": "offline"}}
    again = Manifest.from_json(newer)
    assert again.extra == {"parts": [{"id": "p1"}]} and again.requested == Requested("ViT-B-16", None, "offline")
    assert again.to_json() == newer and list(again.to_json())[-1] == "created"
    assert again.identity_hash == m.identity_hash  # neither record fields nor unknown keys are identity


def test_a_manifest_built_in_code_equals_itself_after_a_save() -> None:
    """Tuples from a backbone's spec come back as lists: the saved manifest still equals the built one."""
    spec = {"family": "open_clip", "model": "m", "weights": "w", "weights_sha256": "", "checkpoint": None,
            "quick_gelu": False, "preprocess": {"size": (64, 64)}, "n_blocks": 3, "width": 8, "embed_dim": 4}
    built = Manifest.from_backbone(spec, dataset="d", view="none", shard_size=4, precision="fp32")
    assert built.preprocess == {"size": [64, 64]} and built.checkpoint is None
    assert Manifest.from_json(json.loads(json.dumps(built.to_json()))) == built
    assert "limit" not in built.to_json() and built.updated({"limit": 8}).limit == 8


def test_one_rule_per_purpose_names_each_differing_field() -> None:
    a = Manifest.from_json(json.loads(WRITTEN))
    b = a.replace(model="other", shard_size=5, images_sha256="x", preprocess={**a.preprocess, "mode": "L"})
    assert a.mismatches(b, SAME_FEATURE_SET) == [
        "images_sha256: cache has 'f8c567df98e066fb8a373eeab0852312a209de10e54f0c525c24afd37cc68fb0', this run "
        "has 'x'", "model: cache has 'attrib-tiny', this run has 'other'",
        "preprocess.mode: cache has 'RGB', this run has 'L'", "shard_size: cache has 10000, this run has 5"]
    # what a head needs: the meaning of a feature vector, not the image list or how it was stored
    assert a.mismatches(b, SAME_FEATURES, "head has", "these have") == [
        "model: head has 'attrib-tiny', these have 'other'", "preprocess.mode: head has 'RGB', these have 'L'"]
    # a checkpoint is the same weights under any file name, when both sides know its checksum
    c1, c2 = a.replace(weights="a.pt", weights_sha256="s"), a.replace(weights="b.pt", weights_sha256="s")
    assert c1.mismatches(c2, SAME_FEATURES) == [] and c1.mismatches(c2, SAME_FEATURE_SET) != []
    assert a.replace(weights="a.pt").mismatches(a.replace(weights="b.pt"), SAME_FEATURES) == [
        "weights: cache has 'a.pt', this run has 'b.pt'"]


def test_feature_request_matches_settings_and_image_lists() -> None:
    m = Manifest.from_json(json.loads(WRITTEN))  # made with --max-per-source 2 (groups of 2)
    assert FeatureRequest(model="attrib-tiny", dataset="folder").matches_settings(m)
    assert not FeatureRequest(model="ViT-B-16").matches_settings(m)
    assert FeatureRequest(model="ViT-B-16").matches_settings(
        m.replace(requested=Requested("ViT-B-16", "laion2b_s34b_b88k")))
    assert not FeatureRequest(view="jpeg:75").matches_settings(m)
    assert not FeatureRequest(splits_dir="/splits").matches_settings(m)

    def sizes():
        return [2, 2]

    assert FeatureRequest(max_per_source=2).same_image_list(m, sizes)
    assert not FeatureRequest(max_per_source=2, sample_seed=1).same_image_list(m, sizes)
    assert not FeatureRequest().same_image_list(m, sizes)  # the groups were cut at 2: not the full list
    assert not FeatureRequest(max_per_source=1).same_image_list(m, sizes)


def test_the_random_init_warning_follows_the_weights_not_the_label() -> None:
    """A deleted or emptied ``label`` must not hide the warning; verify's check names the inconsistency."""
    from attrib.manifest import RANDOM_INIT_LABEL

    written = Manifest.from_json(json.loads(WRITTEN))
    assert written.random_init and written.warning == RANDOM_INIT_LABEL and written.label_problems() == []
    for raw in ({k: v for k, v in json.loads(WRITTEN).items() if k != "label"}, {**json.loads(WRITTEN), "label": ""}):
        m = Manifest.from_json(raw)
        assert m.label == "" and m.random_init and m.warning == RANDOM_INIT_LABEL
        assert len(m.label_problems()) == 1 and "label is '' but the weights are untrained" in m.label_problems()[0]
    # the tiny model without a checkpoint has random weights whatever `weights` says; with one it has not
    tiny = written.replace(weights="edited", label="")
    assert tiny.random_init and tiny.warning == RANDOM_INIT_LABEL
    trained = written.replace(weights="tiny.safetensors", weights_sha256="ab" * 32, label="")
    assert not trained.random_init and trained.warning == "" and trained.label_problems() == []
    assert "label is 'random-init" in trained.replace(label=RANDOM_INIT_LABEL).label_problems()[0]
    assert "checkpoint sha256 is recorded" in written.replace(weights_sha256="ab" * 32).label_problems()[0]
    other = Manifest.coerce(SMALL)  # other weights keep whatever label they were given
    assert not other.random_init and other.replace(label="careful").warning == "careful"
