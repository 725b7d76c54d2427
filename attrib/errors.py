"""The one base class of every error a user can cause, and the exit status each kind gives.

Why one base: the command line catches :class:`AttribError` once (in :mod:`attrib.cli`) and shows
``Error: <message>`` without a traceback, so a new error type reaches the user as a clean message the
day it is written, not after someone remembers to add it to a per-command ``except`` list. Anything
else that escapes a command is a bug and keeps its traceback.

Module-specific errors keep their old second base (``ValueError``, ``RuntimeError``) where callers
catch them by it: ``class SplitError(AttribError, ValueError)``. This module imports nothing, so any
module (and the CLI's ``--help``) can use it for free.

Exit status: 2 when the command could not do its job because of its input (a bad option value, a
missing or damaged file, weights that cannot be loaded), as click does for usage errors; 1 when it ran
to the end and its answer is "no" (``cache verify`` found damage, result lines failed, ``cache find``
matched nothing), like ``grep``; 0 otherwise.
"""

from __future__ import annotations


class AttribError(Exception):
    """An error the user can fix; the message names the file or value and says how. Exit status 2."""

    exit_code = 2


class ProblemsFound(AttribError):
    """The command ran to the end and found problems (or found nothing); the message says which. Exit status 1."""

    exit_code = 1


__all__ = ["AttribError", "ProblemsFound"]
