"""File names as the image list holds them: any bytes the file system allows, written as UTF-8 text.

Why this exists: POSIX file names are bytes, not text. Python lists a name that is not valid UTF-8
(``b"bad\\xff\\xfe.png"``, common in archives made on old Windows or Latin-1 systems) with *surrogate
escapes* (``"bad\\udcff\\udcfe.png"``), which open files fine but cannot be encoded as UTF-8. The image
list hashes its paths and stores them in ``images.tsv`` (UTF-8 text), so these names need:

- :func:`path_bytes`: the name's bytes, exactly as on disk, for hashes and seeded keys. For a valid
  UTF-8 name these are its UTF-8 bytes, so every existing image-list hash stays the same;
- :func:`escape_path` / :func:`unescape_path`: a lossless text form for ``images.tsv`` (and prediction
  files): each byte that is not UTF-8 is written ``\\xNN`` (``NN`` = ``80``-``ff``, lower case). A name
  that needs no escape is written as it is, so ordinary lists are byte-identical to before; in a name
  that does, every backslash is doubled (``\\\\``), so a literal ``\\x80`` in a name reads back as itself.

A tab, newline or carriage return in a name cannot be stored in a tab-separated line at all: listings
skip such a file with a note (:class:`Skipped`, :func:`unlistable`) instead of failing the whole dataset.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

_UNDECODED = re.compile("[\udc80-\udcff]")  # what os.fsdecode makes of a byte that is not UTF-8
# a backslash the decoder would read as an escape: before another backslash, or before x80..xff
_AMBIGUOUS = re.compile(r"\\(?=\\|x[89a-f][0-9a-f])")
_ESCAPE = re.compile(r"\\\\|\\x([89a-f][0-9a-f])")


def path_bytes(path: str) -> bytes:
    """The bytes of ``path`` as the file system holds them (UTF-8 for ordinary names)."""
    return path.encode("utf-8", "surrogateescape")


def escape_path(path: str) -> str:
    """Text form of ``path`` that is valid UTF-8 and reads back with :func:`unescape_path`."""
    if not _UNDECODED.search(path) and not _AMBIGUOUS.search(path):
        return path  # the common case: written as it is
    return _UNDECODED.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", path.replace("\\", "\\\\"))


def unescape_path(text: str) -> str:
    """The path that :func:`escape_path` wrote as ``text`` (a text without escapes is returned as it is)."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)) if m.group(1) else "\\", text)


def shown(path: str) -> str:
    """``path`` quoted for a message, with tabs, newlines and undecodable bytes visible."""
    return re.sub(r"\\udc([89a-f][0-9a-f])", r"\\x\1", repr(path))


def unlistable(name: str) -> bool:
    """True when ``name`` holds a character a tab-separated image list cannot store."""
    # tab, newline, carriage return; spelled out because the listing calls this for every file
    # (6x faster than any() over a tuple)
    return "\t" in name or "\n" in name or "\r" in name


@dataclass
class Skipped:
    """What a listing left out and why: each reason becomes one note, with a count and examples.

    A dataset with thousands of odd names must give a few readable lines, not thousands.
    """

    examples: int = 3
    by_reason: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, path: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown_paths = self.by_reason.setdefault(reason, [])
        if len(shown_paths) < self.examples:
            shown_paths.append(shown(path))

    def __bool__(self) -> bool:
        return bool(self.counts)

    def notes(self) -> list[str]:
        out = []
        for reason, n in self.counts.items():
            more = f" and {n - len(self.by_reason[reason])} more" if n > len(self.by_reason[reason]) else ""
            out.append(f"{n} {reason}: {', '.join(self.by_reason[reason])}{more}")
        return out

    def print(self, file=None) -> None:
        """Write the notes to stderr (where every listing note goes)."""
        for note in self.notes():
            print(f"note: {note}", file=file or sys.stderr)


# The reasons, worded once: the notes of folder, GenImage and predict listings read the same.
TAB_IN_FILE = "image file(s) skipped: a tab or line break in the name cannot be stored in images.tsv; rename them"
TAB_IN_FOLDER = ("folder(s) skipped with everything below them: a tab or line break in the name cannot be stored "
                 "in images.tsv; rename them")
LINK_LOOP = "symlink loop(s) not followed (a link to a folder that contains it)"
LINK_INSIDE = ("symlink(s) not followed: they lead to a folder inside the listed tree, which is listed under its own "
               "path")
LINK_AGAIN = "symlink(s) not followed: they lead to a folder that is listed already through another link"


def as_label(name: str) -> str:
    """A folder name used as a source label: its escaped text form if it holds bytes that are not UTF-8.

    Labels travel into reports, JSON and plots as text, so they must never hold surrogate escapes.
    """
    return escape_path(name) if _UNDECODED.search(name) else name
