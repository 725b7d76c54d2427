"""Command line: ``attrib features | cache | probe | report | predict | enroll``.

Option names are part of the contract in DESIGN.md; each command's --help explains what it does.
Errors a user can cause (:class:`attrib.errors.AttribError`) are caught once, by the group, and shown
as ``Error: <message>`` with their exit status; anything else keeps its traceback. Nothing heavy
(torch, scikit-learn, h5py, matplotlib) is imported before a command runs, so --help is instant.
"""

from attrib.cli.common import main
# each module registers its commands with `main` (the order of `attrib --help` is main's docstring's)
from attrib.cli import cache, features, probe, report, robustness, saved_heads  # noqa: E402,F401

__all__ = ["main"]
