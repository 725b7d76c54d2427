"""What a ``--shots`` value really trained on.

``--shots N`` takes N training images per class; a class with fewer trains on all it has. That is what
a researcher sweeping ``1,5,10,100,500,all`` over several splits wants (one small class must not stop
the sweep), but the number must not lie: ``--shots 100000`` on a dataset with 96 training images per
class is ``--shots all``, and ``--shots 100`` with classes of 40 and 4000 images is an unbalanced
training set. So the study notes every such shots value before it runs (:func:`shots_notes`), each
result line keeps the real per-class counts (``n.train_per_class``), and the report shows them next
to the shots value they fell short of (:func:`used_per_class`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from attrib.data.splits import SplitRows

SHOWN_CLASSES = 4  # classes named per split in a note; the rest are counted


def train_counts(rows: SplitRows) -> dict[str, int]:
    """Training images per class of one split's rows (before any shots subset)."""
    counts = np.bincount(np.asarray(rows.y_train, dtype=np.int64), minlength=len(rows.split.classes))
    return {c: int(n) for c, n in zip(rows.split.classes, counts)}


def _short(counts: Mapping[str, int], shots: int) -> dict[str, int]:
    return {c: n for c, n in counts.items() if n < shots}


def shots_notes(shots_values: Iterable[int | None], rows_of: Mapping[tuple[str, int], SplitRows]) -> list[str]:
    """One note per shots value that some class of some split cannot fill, naming those classes.

    ``rows_of`` maps (split, seed) to its rows; a class's count is its smallest over seeds.
    """
    counts: dict[str, dict[str, int]] = {}
    for (name, _seed), rows in rows_of.items():
        for c, n in train_counts(rows).items():
            counts.setdefault(name, {})[c] = min(n, counts.get(name, {}).get(c, n))
    notes = []
    for shots in (s for s in shots_values if s is not None):
        short = {name: _short(per_class, shots) for name, per_class in counts.items()}
        short = {name: cs for name, cs in short.items() if cs}
        if not short:
            continue
        if all(len(short.get(name, {})) == len(per_class) for name, per_class in counts.items()):
            most = max(n for per_class in counts.values() for n in per_class.values())
            notes.append(f"--shots {shots}: no class has that many training images (the largest has {most}), so "
                         f"these lines train on every training image, the same as --shots all; the report shows "
                         "the per-class counts used")
            continue
        where = "; ".join(f"split {name}: {_listing(cs)}" for name, cs in short.items())
        notes.append(f"--shots {shots}: fewer training images than that in some classes ({where}); these classes "
                     "train on all they have, so the training set is unbalanced; the report shows the per-class "
                     "counts used")
    return notes


def _listing(short: Mapping[str, int]) -> str:
    items = sorted(short.items(), key=lambda kv: (kv[1], kv[0]))
    text = ", ".join(f"{c} {n}" for c, n in items[:SHOWN_CLASSES])
    return text + (f" and {len(items) - SHOWN_CLASSES} more" if len(items) > SHOWN_CLASSES else "")


def used_per_class(runs: Iterable[Mapping[str, Any]]) -> str:
    """Training images per class over ``runs`` (result lines): ``'96'`` or ``'40–100'`` (min–max over
    classes, splits and seeds); ``''`` when the lines do not record them (made by an older attrib)."""
    values = [int(v) for r in runs for v in ((r.get("n") or {}).get("train_per_class") or {}).values()]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def fell_short(shots: str, runs: Iterable[Mapping[str, Any]]) -> bool:
    """True when some class of some run trained on fewer images than ``shots`` asked (never for 'all')."""
    if not shots.isdigit():
        return False
    want = int(shots)
    return any(int(v) < want for r in runs for v in ((r.get("n") or {}).get("train_per_class") or {}).values())
