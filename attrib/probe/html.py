"""``report.html``: one self-contained page a browser opens from the file system.

Why self-contained: a report is mailed, copied to a laptop, attached to a review; it must show the same
without a server, without the network and without the files beside it. So the figures are embedded
(base64 PNG data URIs), the style is inline, there is no script, and every other reference is a
relative link to a file written beside the page (the CSV and Markdown tables, the PNG files).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from attrib import atomic
from attrib.probe.tables import WARNING_TEXT

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1500px;
       padding: 0 1.5em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.warning { background: #fdecea; border: 2px solid #c62828; color: #b71c1c; padding: 0.8em 1em;
           font-weight: bold; margin: 1em 0; }
.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: 0.4em 0.8em; margin: 0.3em 0; }
.wide { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } tr.best td { background: #e8f5e9; font-weight: bold; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1em 0 2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; margin-top: 0.3em; }
dl.config { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.config dt { font-weight: bold; } dl.config dd { margin: 0; font-family: monospace; word-break: break-all; }
"""


@dataclass
class Table:
    heading: str
    intro: str
    head: list[str]
    body: list[list[str]]
    highlight: int | None = None  # row index shown in bold (the best method)


@dataclass
class Figure:
    caption: str
    path: Path  # a PNG beside the page: embedded, and linked


@dataclass
class Page:
    title: str
    labels: list[str] = field(default_factory=list)
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    config: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # other files beside the page, linked


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _prose(text: str) -> str:
    """Escaped text whose `code spans` (as the Markdown report writes them) become <code>."""
    parts = str(text).split("`")
    return "".join(f"<code>{_e(p)}</code>" if i % 2 else _e(p) for i, p in enumerate(parts))


def _is_number(cell: str) -> bool:
    """A number, a mean ± std, a signed difference or n/a: right-aligned."""
    if cell == "n/a" or " ± " in cell:
        return True
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _table(t: Table) -> list[str]:
    out = [f"<h2>{_e(t.heading)}</h2>"] + ([f"<p>{_prose(t.intro)}</p>"] if t.intro else [])
    head = "".join(f"<th>{_e(h)}</th>" for h in t.head)
    out.append(f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>')
    numeric = [bool(t.body) and all(_is_number(row[j]) for row in t.body) for j in range(len(t.head))]
    for i, cells in enumerate(t.body):
        cls = ' class="best"' if i == t.highlight else ""
        out.append(f"<tr{cls}>" + "".join(f'<td class="num">{_e(c)}</td>' if numeric[j] else f"<td>{_e(c)}</td>"
                                          for j, c in enumerate(cells)) + "</tr>")
    out.append("</tbody></table></div>")
    return out


def _figure(f: Figure, folder: Path) -> list[str]:
    data = base64.b64encode(Path(f.path).read_bytes()).decode("ascii")
    rel = _e(Path(f.path).relative_to(folder).as_posix()) if Path(f.path).is_relative_to(folder) else None
    link = f' (<a href="{rel}">{rel}</a>)' if rel else ""
    return [f'<figure><img src="data:image/png;base64,{data}" alt="{_e(f.caption)}">',
            f"<figcaption>{_e(f.caption)}{link}</figcaption></figure>"]


def render(page: Page, folder: Path) -> str:
    """The page as HTML text; ``folder`` is where it will be written (links are relative to it)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(page.title)}</title><style>{STYLE}</style></head><body>", f"<h1>{_e(page.title)}</h1>"]
    out += [f'<div class="warning">WARNING — {_e(lab)}. {_e(WARNING_TEXT)}</div>' for lab in page.labels]
    if page.intro:
        out.append(f"<p>{_prose(page.intro)}</p>")
    out += [f'<div class="note">note: {_prose(n)}</div>' for n in page.notes]
    for t in page.tables:
        out += _table(t)
    if page.figures:
        out.append("<h2>Figures</h2>")
        for f in page.figures:
            out += _figure(f, folder)
    if page.config:
        out.append('<h2>Configuration</h2><dl class="config">')
        out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in page.config]
        out.append("</dl>")
    if page.files:
        out.append("<h2>Files</h2><ul>")
        for p in page.files:
            rel = _e(Path(p).relative_to(folder).as_posix())
            out.append(f'<li><a href="{rel}">{rel}</a></li>')
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(page: Page, path: Path) -> Path:
    """Write ``page`` to ``path`` (atomically: a reader never sees half a page)."""
    path = Path(path)
    atomic.write_text(path, render(page, path.parent))
    return path


def references(text: str) -> list[str]:
    """Every ``src`` and ``href`` of a page (data URIs included): what a page needs to display."""
    import re

    return [html.unescape(m) for m in re.findall(r'(?:src|href)="([^"]*)"', text)]


def missing_references(path: Path, refs: Sequence[str] | None = None) -> list[str]:
    """The references of the page at ``path`` that are neither data URIs nor files beside it."""
    path = Path(path)
    refs = references(path.read_text()) if refs is None else refs
    return [r for r in refs if not r.startswith("data:") and not (path.parent / r).is_file()]
