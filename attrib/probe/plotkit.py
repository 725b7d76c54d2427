"""What every report figure shares: the Agg backend, block names counted from 1, a grid of panels, a
title that turns red for random-init features, and PNG files that say what they hold.

Why one place: the conventions (blocks counted from 1 on axes and titles, as the paper's figures do;
the warning label in red) must not drift between plots, and a figure of 5 splits or 12 blocks must stay
readable, which a single strip of panels is not (a grid is). matplotlib is imported by :func:`pyplot`
only, so reading and aggregating results never loads it.

Each PNG records its panels in its metadata (``attrib:panels``, the number; ``attrib:panel-titles``, a
JSON list), so a test or a script can check what a figure holds without looking at its pixels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

PANELS_KEY = "attrib:panels"
TITLES_KEY = "attrib:panel-titles"
KNOWN_COLOR = "black"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def block_label(layer: str, short: bool = False) -> str:
    """A result line's layer (0-based block index, or ``concat:i,j``) counted from 1, as figures show it:
    ``"7"`` -> ``"block 8"`` (short: ``"8"``); ``"concat:9,10,11"`` -> ``"blocks 10+11+12"``."""
    layer = str(layer)
    if layer.startswith("concat:"):
        blocks = "+".join(str(int(b) + 1) for b in layer.split(":", 1)[1].split(","))
        return blocks if short else f"blocks {blocks}"
    return str(int(layer) + 1) if short else f"block {int(layer) + 1}"


def method_title(r: dict[str, Any]) -> str:
    """A method as figure titles name it (blocks counted from 1; tables keep the 0-based index)."""
    params = f" / {r['params']}" if r.get("params") else ""
    return (f"{block_label(r['layer'])} / {r['head']}+{r['score']} / shots {r['shots']} / "
            f"{r.get('protocol', 'clean')}{params}")


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: at most ``max_cols`` per row, rows as even as possible."""
    n = max(n, 1)
    rows = math.ceil(n / max_cols)
    return rows, math.ceil(n / rows)


def panel_grid(plt: Any, n: int, panel: tuple[float, float] = (4.6, 3.6), max_cols: int = 3,
               **subplots: Any) -> tuple[Any, list[Any]]:
    """A figure holding ``n`` panels of ``panel`` inches in a grid; spare cells are switched off."""
    rows, cols = grid_shape(n, max_cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False, **subplots)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes[:n]


def title(fig: Any, text: str, labels: Sequence[str], fontsize: float = 10, **kw: Any) -> Any:
    """The figure's title, followed by the random-init warning label(s) and red when there are some."""
    full = text + ("\n" + " / ".join(labels) if labels else "")
    return fig.suptitle(full, color="red" if labels else "black", fontsize=fontsize, **kw)


def save(fig: Any, path: Path, panels: Sequence[str], dpi: int = 100, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` with its panel titles in the PNG's metadata, and close it."""
    plt = pyplot()
    meta = {PANELS_KEY: str(len(panels)), TITLES_KEY: json.dumps(list(panels))}
    fig.savefig(path, dpi=dpi, metadata=meta, **savefig)
    plt.close(fig)
    return Path(path)


def read_panels(path: str | Path) -> list[str]:
    """The panel titles a figure written by :func:`save` records (its metadata; Pillow reads it)."""
    from PIL import Image

    with Image.open(path) as im:
        text = dict(getattr(im, "text", {}) or im.info)
    titles = json.loads(text.get(TITLES_KEY, "[]"))
    if int(text.get(PANELS_KEY, len(titles))) != len(titles):
        raise ValueError(f"{path}: {text.get(PANELS_KEY)} panels recorded, {len(titles)} titles")
    return titles
