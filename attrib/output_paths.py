"""Where results, reports, saved heads and predictions go: checked before the long work that fills them.

One place for every writer of the package's outputs (``attrib probe --out``, ``--save-head``,
``attrib report --out``, ``attrib predict --out``), each raising its own error class, the one the
command line reports.
"""

from __future__ import annotations

import os
from pathlib import Path


def check_output(path: str | os.PathLike, what: str, error: type[Exception], folder: bool = True) -> Path:
    """``path`` as a Path if a folder (``folder=True``) or a file could be written there; else ``error``
    naming ``what`` (the option, e.g. ``--out``), the path and the reason. Creates nothing.

    Why a check apart from writing: outputs are written at the end of long work (a study, an
    extraction), and a path under a file or in a read-only folder should fail before that work, with a
    message instead of a traceback. Every writer of the package's outputs uses it, each with its own
    error class (the one the command line reports).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise error(f"{what} {path} is a file; give a folder (it is created if missing)")
    if not folder and path.is_dir():
        raise error(f"{what} {path} is a folder; give a file name")
    above = path if folder else path.parent
    while not above.exists():  # the first existing folder on the way up is where writing starts
        above = above.parent
    if not above.is_dir():
        raise error(f"{what} {path}: {above} is a file, so nothing can be created under it; choose another path")
    if not os.access(above, os.W_OK | os.X_OK):
        raise error(f"{what} {path}: no permission to write in {above}; choose another path")
    return path


def make_folder(path: str | os.PathLike, what: str, error: type[Exception]) -> Path:
    """:func:`check_output`, then create the folder (and its parents); a failure the check could not
    foresee (e.g. a read-only file system, or a file created meanwhile) is ``error`` too."""
    path = check_output(path, what, error)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{what} {path}: cannot create this folder ({exc.strerror or exc}); choose another path") from None
    return path
