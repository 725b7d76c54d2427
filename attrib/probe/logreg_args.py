"""The logistic path's arguments (C values, device, screen), checked without loading torch.

Why apart from :mod:`attrib.probe.logreg_path`: ``attrib probe`` checks every option before a long study
(a bad ``--grid`` value or ``--param logreg.device`` fails at once, not in every line), and with
``--jobs N`` the process that checks them never fits a head. Importing torch costs that process about
3 s on a 2-core machine, once per run, before any work; only a device other than the CPU needs torch
to be checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


def check_Cs(Cs: Sequence[float]) -> None:
    """Refuse C values that are not finite and > 0, naming them as the caller gave them.

    Public so that callers that transform C before solving (the binary logistic probe halves it) and
    option parsers check the user's own values, and an error never shows a value the user did not type.
    """
    values = np.asarray(Cs, dtype=object).ravel().tolist()
    bad = [v for v in values if not _positive_finite(v)]
    if bad or not values:
        raise ValueError(f"C values must be finite numbers > 0, got {', '.join(map(str, bad)) or 'none'}")


def _positive_finite(v: object) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(f) and f > 0)


def check_screen(screen_tol: object, screen_margin: object) -> None:
    """Refuse a screen tolerance that is not None or a finite number > 0, and a margin outside [0, 1)."""
    if screen_tol is not None and not _positive_finite(screen_tol):
        raise ValueError(f"screen_tol={screen_tol!r}: use a positive number, or None to solve every C to tol")
    if not (_positive_finite(screen_margin) or screen_margin == 0) or not float(screen_margin) < 1:
        raise ValueError(f"screen_margin={screen_margin!r}: use a share of the validation images in [0, 1)")


PRODUCTS = ("auto", "blas")  # where a logistic path's CPU products run: attrib.probe.onednn


def check_products(products: str) -> None:
    """Refuse a ``products`` setting other than "auto" (oneDNN where it checks out) or "blas"."""
    if products not in PRODUCTS:
        raise ValueError(f"products={products!r}: use 'auto' (oneDNN's CPU products where torch has them) "
                         "or 'blas' (torch's BLAS, as attrib computed before it used oneDNN)")


def check_device(device: str) -> None:
    """Refuse a device :func:`torch_device` would refuse; the CPU is accepted without loading torch."""
    if str(device).strip().lower() != "cpu":
        torch_device(device)


def torch_device(device: str) -> "torch.device":
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when torch sees it) as a torch device;
    anything else, or CUDA on a machine where torch sees none, is refused with what to use instead.

    Public so that a head checks its ``device`` parameter before any work, with the same words."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: torch sees no CUDA device on this machine "
                         "(torch.cuda.is_available() is False); use 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev
