"""Matching paths written elsewhere (a split file, a list made on another machine) to rows of an image list.

Split files name images with whatever root their author had; :class:`PathMatcher` finds the row they
mean in *this* image list, or says that none or several fit: it never guesses.
"""

from __future__ import annotations

import os
import posixpath

from attrib.data.catalog import ImageList

MISSING = -1
AMBIGUOUS = -2


class PathMatcher:
    """Find the row of an image list that a path written elsewhere (a split file, a list made on another
    machine) refers to.

    Split files name images with whatever root their author had (``./dataset/GenImage/ADM/...``,
    ``/data/GenImage/ADM/...``), while the image list holds paths relative to *this* dataset root. A
    path matches, in this order:

    1. exactly, after normalisation (``\\`` to ``/``, ``./`` dropped, an absolute path under the root
       made relative);
    2. after dropping leading folders of the given path (the longest tail that is a listed path);
    3. after prepending a folder prefix learned from an earlier unique match (the list's root lies
       above the split file's root);
    4. by a layout-independent ``key`` (for GenImage: generator, subset, ai/nature and file name, so the
       flat and the archive-nested layouts match each other).

    Steps 2-4 never guess: a path that fits several listed images is :data:`AMBIGUOUS`, one that fits
    none is :data:`MISSING`.
    """

    LEARN_BUDGET = 8  # full scans of the list spent on learning prefixes (step 3) before giving up

    def __init__(self, images: ImageList, key=None):
        self.images = images
        self.key = key
        self.root = images.root.replace(os.sep, "/").rstrip("/") if images.root else ""
        self._prefixes: list[str] = []
        self._budget = self.LEARN_BUDGET
        self._keys: dict[str, int] | None = None

    def _normalise(self, path: str) -> str:
        p = path.strip().replace("\\", "/")
        if self.root and p.startswith(self.root + "/"):
            p = p[len(self.root) + 1:]
        p = posixpath.normpath(p)
        return p.lstrip("/") if p != "." else ""

    def match(self, path: str) -> int:
        rel = self._normalise(path)
        index = self.images.index
        row = index(rel)
        if row is not None:
            return row
        parts = rel.split("/")
        for k in range(1, len(parts)):
            row = index("/".join(parts[k:]))
            if row is not None:
                return row
        for prefix in self._prefixes:
            row = index(prefix + rel)
            if row is not None:
                return row
        if self._budget > 0:
            self._budget -= 1
            tail = "/" + rel
            hits = [i for i, p in enumerate(self.images.paths) if p.endswith(tail)]
            if len(hits) > 1:
                return AMBIGUOUS
            if hits:
                self._prefixes.append(self.images.paths[hits[0]][: -len(rel)])
                return hits[0]
        if self.key is not None:
            k = self.key(rel)
            if k is not None:
                if self._keys is None:
                    self._keys = {}
                    for i, p in enumerate(self.images.paths):
                        kp = self.key(p)
                        if kp is not None:
                            self._keys[kp] = AMBIGUOUS if kp in self._keys else i
                return self._keys.get(k, MISSING)
        return MISSING


__all__ = ["PathMatcher", "MISSING", "AMBIGUOUS"]
