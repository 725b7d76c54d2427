"""Save a fitted head and its open-set scorer for later use, and load it back, without pickle.

Why not pickle (or joblib): loading a pickle runs code, and heads are files people exchange. A saved
head is a folder with two files:

``head.json``
    format and version; for the head and the scorer: registry name, class name, hyperparameters
    (``get_params()``) and learned state (every public attribute ending in ``_``) that is not an
    array; the class names (sources), the layer, the chosen hyperparameters and how they were chosen,
    the rejection threshold, the feature set's id and full manifest, and checksums.
``head.npz``
    every array of that state (``np.savez``, read back with ``allow_pickle=False``).
``train.npz`` (absent from heads saved before `attrib enroll` existed)
    what :mod:`attrib.probe.enroll` needs to add a class later: the known validation features and
    labels (``val.X``, ``val.y``), to recompute the rejection threshold, and, for a head or scorer that
    must be refitted to take a new class (logistic probe, Gaussian head, ViM, Mahalanobis, RMDS), the
    training features and labels (``train.X``, ``train.y``). Features are float16 (halves the size; a
    refit from them moves the old classes' weights by float16 rounding only), compressed
    (``np.savez_compressed``). ``head.json`` records its checksum and the shapes under ``training``; it is
    read only when a class is enrolled, so `attrib predict` never pays for it.

Loading looks classes up by name in ``HEADS`` / ``SCORERS`` only, builds them from their saved
hyperparameters, sets the saved state, and then checks that the loaded head reproduces the outputs it
gave, at save time, on a few stored feature vectors. The checksums catch a corrupted or edited file
(they are integrity checks, not signatures: loading is safe anyway because it never runs code).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from attrib import __version__, atomic, jsonio
from attrib.errors import AttribError
from attrib.manifest import SAME_FEATURES, Manifest
from attrib.output_paths import check_output, make_folder
from attrib.probe.heads import HEADS, ProbeHead
from attrib.probe.scorers import SCORERS

FORMAT = "attrib-head"
FORMAT_VERSION = 1
JSON_NAME = "head.json"
NPZ_NAME = "head.npz"
TRAIN_NAME = "train.npz"
UNKNOWN = "unknown"
SAVE_OPTION = "--save-head"  # named in errors about the folder a head is saved to


class HeadFileError(AttribError, ValueError):
    """A saved head cannot be written or read; the message names the file and what to do."""


def check_head_folder(folder: str | os.PathLike, force: bool = False, option: str = SAVE_OPTION) -> Path:
    """Whether :func:`save_head` could write to ``folder`` (``--save-head``, or ``option``); call it before
    a study.

    A folder that already holds a head is refused unless ``force``: a saved head is the product of a
    study that may have taken hours, and replacing it by accident loses it."""
    path = check_output(folder, option, HeadFileError)
    if not force and any((path / name).exists() for name in (JSON_NAME, NPZ_NAME, TRAIN_NAME)):
        raise HeadFileError(f"{option} {path} already holds a saved head ({JSON_NAME}); choose another "
                            "folder, or add --force to replace it")
    return path


# ------------------------------------------------------------------------------------ encoding
def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-ready form of ``value``; arrays go to ``arrays`` under ``key`` and leave a reference.

    Numbers follow :mod:`attrib.jsonio` with ``exact=True``: a non-finite float in the learned state
    comes back as the same float when the head is loaded.
    """
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            if not all(isinstance(v, str) for v in value.ravel()):
                raise HeadFileError(f"{key}: an object array cannot be saved without pickle")
            value = value.astype(str)
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}}
    try:
        return jsonio.scalar(value, exact=True)
    except TypeError:
        raise HeadFileError(f"{key}: a {type(value).__name__} cannot be saved without pickle (a head or scorer "
                            "must keep its state in arrays, numbers, strings and lists)") from None


def _decode(value: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays, where) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            if value["__array__"] not in arrays:
                raise HeadFileError(f"{where}: array {value['__array__']!r} is missing from {NPZ_NAME}")
            return arrays[value["__array__"]]
        if jsonio.FLOAT_TAG in value:
            return jsonio.tagged_float(value)
        if "__dict__" in value:
            return {k: _decode(v, arrays, where) for k, v in value["__dict__"].items()}
        raise HeadFileError(f"{where}: unexpected object {sorted(value)}")
    return value


def _state(est: Any) -> dict[str, Any]:
    """Learned state, scikit-learn style: public attributes ending in ``_``."""
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


def encode_estimator(est: Any, name: str, registry: dict[str, type], role: str,
                     arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if registry.get(name) is not type(est):
        raise HeadFileError(f"{role} {type(est).__name__} is not registered as {name!r}; only registered "
                            f"classes can be saved ({', '.join(registry)})")
    params = {k: v for k, v in est.get_params(deep=False).items() if k != "head"}
    return {"name": name, "class": type(est).__name__,
            "params": _encode(params, f"{role}.params", arrays),
            "state": _encode(_state(est), f"{role}.state", arrays)}


def decode_estimator(doc: dict[str, Any], registry: dict[str, type], role: str,
                     arrays: dict[str, np.ndarray], where: str, **extra: Any) -> Any:
    name = doc.get("name")
    cls = registry.get(name)
    if cls is None:
        raise HeadFileError(f"{where}: {role} {name!r} is not available in this attrib (available: "
                            f"{', '.join(registry)}); update attrib or re-save the head")
    if cls.__name__ != doc.get("class"):
        raise HeadFileError(f"{where}: {role} {name!r} is class {cls.__name__} here but was "
                            f"{doc.get('class')} when saved; re-save the head with this attrib")
    params = _decode(doc["params"], arrays, where)
    try:
        est = cls(**params, **extra)
    except TypeError as exc:
        raise HeadFileError(f"{where}: cannot rebuild {role} {name!r} from its saved parameters ({exc}); "
                            "re-save the head with this attrib") from None
    for k, v in _decode(doc["state"], arrays, where).items():
        setattr(est, k, v)
    return est


def _canonical(doc: dict[str, Any]) -> bytes:
    return jsonio.canonical(doc)


# ----------------------------------------------------------------------------------- the object
@dataclass
class SavedHead:
    """A fitted head + scorer + threshold: features in; predictions, scores and decisions out.

    ``classes`` are source names aligned with the columns of :meth:`predict_proba`.
    """

    head: ProbeHead
    scorer: Any
    classes: tuple[str, ...]
    layer: tuple[int, ...]
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    check_X: np.ndarray | None = field(default=None, repr=False)  # the self-check's feature vectors

    # ---------------------------------------------------------------------------- metadata
    @property
    def manifest(self) -> Manifest:
        """The manifest of the feature set the head was trained on."""
        return Manifest.from_json(self.info.get("manifest", {}))

    @property
    def feature_set(self) -> str:
        return self.info.get("feature_set", "")

    @property
    def label(self) -> str:
        """Warning label of the features the head was trained on ('' for real weights): decided by the
        weights its manifest records (random-init: always), else the label saved with it."""
        return self.manifest.warning or self.info.get("label", "")

    @property
    def head_name(self) -> str:
        return self.info.get("head_name", "")

    @property
    def score_name(self) -> str:
        return self.info.get("score_name", "")

    @property
    def n_features(self) -> int:
        return int(self.info["n_features"])

    def extraction_mismatch(self, manifest: Manifest | Mapping[str, Any]) -> list[str]:
        """Differences between the head's feature set and ``manifest`` in what the features mean
        (:data:`attrib.manifest.SAME_FEATURES`); empty when the head can read those features."""
        return self.manifest.mismatches(Manifest.coerce(manifest), SAME_FEATURES, ours="head was trained on",
                                        theirs="these features have")

    def features(self, fs: Any, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The head's input read from a :class:`~attrib.store.FeatureSet` (its layer, concatenated)."""
        diffs = self.extraction_mismatch(fs.manifest)
        if diffs:
            raise HeadFileError(f"{fs.path} was not extracted like the head's features:\n  - " + "\n  - ".join(diffs))
        parts = [fs.block(b, rows) for b in self.layer]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    # --------------------------------------------------------------------------- outputs
    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype.kind not in "f":
            X = X.astype(np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise HeadFileError(f"expected features of shape (n, {self.n_features}) (layer "
                                f"{','.join(map(str, self.layer))}), got {X.shape}")
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.head.predict_proba(self._check(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most likely known source of each row (closed set: never ``unknown``)."""
        names = dict(zip(np.asarray(self.head.classes_).tolist(), self.classes))
        return np.array([names[c] for c in self.head.predict(self._check(X)).tolist()], dtype=object)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Open-set score, higher = more likely one of the known sources."""
        return np.asarray(self.scorer.score_samples(self._check(X)), dtype=np.float64)

    def decide(self, X: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """The predicted source, or ``unknown`` where the score is below the threshold."""
        return self._decision(self.predict(X), self.score_samples(X), threshold)

    def _decision(self, pred: np.ndarray, score: np.ndarray, threshold: float | None) -> np.ndarray:
        t = self.threshold if threshold is None else float(threshold)
        return np.where(score >= t, pred, UNKNOWN).astype(object)

    def top_k(self, X: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """(sources (n, k), probabilities (n, k)), most likely first; ties in column order."""
        proba = self.predict_proba(X)
        k = min(k, proba.shape[1])
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return np.asarray(self.classes, dtype=object)[order], np.take_along_axis(proba, order, axis=1)

    def outputs(self, X: np.ndarray, k: int = 3, threshold: float | None = None) -> dict[str, np.ndarray]:
        """Everything `attrib predict` writes for each row, computed once."""
        X = self._check(X)
        pred, score = self.predict(X), self.score_samples(X)
        names, probs = self.top_k(X, k)
        return {"prediction": pred, "score": score, "decision": self._decision(pred, score, threshold),
                "top_sources": names, "top_probabilities": probs}


# ------------------------------------------------------------------------------------ save / load
def save_head(folder: str | os.PathLike, head: ProbeHead, scorer: Any, *, head_name: str, score_name: str,
              classes: Sequence[str], layer: Sequence[int], threshold: float, feature_set: str,
              manifest: Manifest | Mapping[str, Any], check_X: np.ndarray,
              info: dict[str, Any] | None = None, force: bool = False,
              training: Mapping[str, np.ndarray] | None = None, option: str = SAVE_OPTION) -> Path:
    """Write ``folder/head.json`` and ``folder/head.npz`` (and ``train.npz`` with ``training``); returns
    the folder. A folder that already holds a head is refused unless ``force`` (:func:`check_head_folder`).

    ``classes`` are the source names of the head's class labels, in the order of ``head.classes_``.
    ``check_X`` are a few feature vectors (e.g. validation ones) whose outputs are stored so that
    loading can prove the head still computes what it computed here. ``training``: arrays named in
    :data:`TRAINING_ARRAYS` (``*.X`` features are stored as float16, ``*.y`` labels as int64 or text; see the
    module docstring); ``option`` names the folder's option in errors.
    """
    folder = check_head_folder(folder, force, option)
    manifest = Manifest.coerce(manifest)
    if len(classes) != len(head.classes_):
        raise HeadFileError(f"{len(classes)} class names for a head with {len(head.classes_)} classes")
    check_X = np.asarray(check_X, dtype=np.float32)
    arrays: dict[str, np.ndarray] = {}
    doc: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "attrib": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "head": encode_estimator(head, head_name, HEADS, "head", arrays),
        "scorer": encode_estimator(scorer, score_name, SCORERS, "scorer", arrays),
        "classes": list(map(str, classes)), "layer": [int(b) for b in layer],
        "n_features": int(check_X.shape[1]), "threshold": float(threshold),
        "feature_set": feature_set, "label": manifest.warning, "manifest": manifest.to_json(),
    }
    clash = sorted(set(info or {}) & (set(doc) | RESERVED))
    if clash:
        raise HeadFileError(f"save_head: info keys {clash} are reserved")
    doc.update(info or {})
    arrays["check.X"] = check_X
    arrays["check.proba"] = head.predict_proba(check_X)
    arrays["check.score"] = np.asarray(scorer.score_samples(check_X), dtype=np.float64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    npz = buf.getvalue()
    doc["npz_sha256"] = hashlib.sha256(npz).hexdigest()
    train_npz = None
    if training is not None:
        train_npz, doc["training"] = _training_file(training, int(check_X.shape[1]))
    try:
        doc["json_sha256"] = hashlib.sha256(_canonical(doc)).hexdigest()
    except ValueError as exc:  # NaN/inf outside the encoded state
        raise HeadFileError(f"cannot save head: {exc}") from None
    make_folder(folder, option, HeadFileError)
    if train_npz is not None:
        atomic.write_bytes(folder / TRAIN_NAME, train_npz)
    elif (folder / TRAIN_NAME).exists():  # with force: a replaced head's training file is not this head's
        (folder / TRAIN_NAME).unlink()
    atomic.write_bytes(folder / NPZ_NAME, npz)  # with force, re-saving a head replaces it
    atomic.write_text(folder / JSON_NAME, json.dumps(doc, indent=1, allow_nan=False))  # last: the commit point
    return folder


TRAINING_ARRAYS = ("train.X", "train.y", "val.X", "val.y")
RESERVED = frozenset({"format", "format_version", "attrib", "created", "head", "scorer", "classes", "layer",
                      "n_features", "threshold", "feature_set", "label", "manifest", "npz_sha256", "json_sha256",
                      "training", "head_name", "score_name"})
"""Keys of ``head.json`` that :func:`save_head` writes itself (``info`` may not set them)."""


def _training_file(training: Mapping[str, np.ndarray], width: int) -> tuple[bytes, dict[str, Any]]:
    """(bytes of ``train.npz``, its entry in ``head.json``): features as float16, labels as int64 (or text)."""
    unknown = sorted(set(training) - set(TRAINING_ARRAYS))
    if unknown or not {"val.X", "val.y"} <= set(training):
        raise HeadFileError(f"save_head: training arrays must be val.X, val.y (and optionally train.X, train.y), "
                            f"got {sorted(training)}")
    arrays: dict[str, np.ndarray] = {}
    for name, value in training.items():
        if name.endswith(".X"):
            X = np.asarray(value)
            if X.ndim != 2 or X.shape[1] != width:
                raise HeadFileError(f"save_head: {name} has shape {X.shape}, expected (n, {width})")
            half = X.astype(np.float16)
            arrays[name] = half if np.isfinite(half).all() == np.isfinite(X).all() else X.astype(np.float32)
        else:
            y = np.asarray(value)
            if y.dtype.kind not in "iuU":
                raise HeadFileError(f"save_head: {name} must hold integer or text labels, got {y.dtype}")
            arrays[name] = y.astype(np.int64) if y.dtype.kind in "iu" else y
    for part in ("train", "val"):
        if f"{part}.X" in arrays and len(arrays[f"{part}.X"]) != len(arrays.get(f"{part}.y", ())):
            raise HeadFileError(f"save_head: {part}.X and {part}.y differ in length")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    entry = {"file": TRAIN_NAME, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
             "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}}
    return data, entry


def load_training(saved: SavedHead) -> dict[str, np.ndarray] | None:
    """The arrays of a saved head's ``train.npz`` (features as float32), or None for a head saved without
    one (by an older attrib). Checked against the checksum in ``head.json`` first."""
    entry = saved.info.get("training")
    if not entry:
        return None
    if saved.path is None:
        raise HeadFileError("this head was not loaded from a folder, so its training file cannot be read")
    path = saved.path / entry["file"]
    if not path.is_file():
        raise HeadFileError(f"{path} is missing ({saved.path / JSON_NAME} lists it): copy the whole head folder, "
                            "or re-save the head with `attrib probe ... --save-head DIR`")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise HeadFileError(f"{path} does not match the checksum in {JSON_NAME}: it was modified, damaged, or "
                            "comes from another save; re-save the head with `attrib probe ... --save-head DIR`")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: (z[k].astype(np.float32) if k.endswith(".X") else z[k]) for k in z.files}
    except (ValueError, OSError) as exc:
        raise HeadFileError(f"{path}: unreadable ({exc}); re-save the head") from None


def saved_info(saved: SavedHead) -> dict[str, Any]:
    """The ``info`` a head was saved with (what :func:`save_head` did not write itself): what a head
    derived from it (an enrolled head) carries over."""
    return {k: v for k, v in saved.info.items() if k not in RESERVED}


def load_head(folder: str | os.PathLike) -> SavedHead:
    """Read a head saved by :func:`save_head` (or ``attrib probe --save-head``); never runs code."""
    folder = Path(folder)
    jpath, npath = folder / JSON_NAME, folder / NPZ_NAME
    redo = "re-save it with `attrib probe ... --save-head DIR`"
    for p in (jpath, npath):
        if not p.is_file():
            raise HeadFileError(f"{p} is missing: {folder} is not a saved head ({redo})")
    try:
        doc = json.loads(jpath.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise HeadFileError(f"{jpath}: not valid JSON ({exc}); the file is damaged, {redo}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HeadFileError(f"{jpath}: not an attrib head file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise HeadFileError(f"{jpath}: head format version {doc.get('format_version')}, this attrib reads "
                            f"{FORMAT_VERSION}; {redo}")
    body = {k: v for k, v in doc.items() if k != "json_sha256"}
    if hashlib.sha256(_canonical(body)).hexdigest() != doc.get("json_sha256"):
        raise HeadFileError(f"{jpath} does not match its checksum: it was edited or damaged after saving; {redo}")
    npz = npath.read_bytes()
    if hashlib.sha256(npz).hexdigest() != doc.get("npz_sha256"):
        raise HeadFileError(f"{npath} does not match the checksum in {JSON_NAME}: it was modified, damaged, or "
                            f"comes from another save; {redo}")
    try:
        with np.load(io.BytesIO(npz), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise HeadFileError(f"{npath}: unreadable ({exc}); {redo}") from None
    where = str(jpath)
    head = decode_estimator(doc["head"], HEADS, "head", arrays, where)
    scorer = decode_estimator(doc["scorer"], SCORERS, "scorer", arrays, where, head=head)
    info = {k: v for k, v in doc.items() if k not in ("head", "scorer")}
    info.update(head_name=doc["head"]["name"], score_name=doc["scorer"]["name"])
    X = arrays["check.X"]
    saved = SavedHead(head, scorer, tuple(doc["classes"]), tuple(doc["layer"]), float(doc["threshold"]),
                      info, folder, X)
    try:
        same = (np.allclose(saved.predict_proba(X), arrays["check.proba"], rtol=1e-5, atol=1e-7)
                and np.allclose(saved.score_samples(X), arrays["check.score"], rtol=1e-5, atol=1e-7))
    except Exception as exc:  # noqa: BLE001 - any failure here means the state does not fit the code
        raise HeadFileError(f"{folder}: the loaded head fails on its own check features ({type(exc).__name__}: "
                            f"{exc}); saved with attrib {doc.get('attrib')}, this is {__version__}; {redo}") from None
    if not same:
        raise HeadFileError(f"{folder}: the loaded head does not reproduce the outputs recorded when it was "
                            f"saved (attrib {doc.get('attrib')} then, {__version__} now); {redo}")
    return saved
