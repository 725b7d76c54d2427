"""The C path's float32 products on the CPU by oneDNN, with AVX-512 where torch has it; torch's BLAS otherwise.

Why: most of a path's time is two skinny products per pass, the logits ``W^T Z^T`` ((g K) x D by
D x rows) and the gradient ``G Z`` back, plus one rotation of the rows ``Z U``. torch's own CPU matmul
calls MKL, which on the AMD EPYC measured (AVX-512, one thread) spends a third of these products
copying operands into its packed layout (a profile: 13 % of all samples against 26 % in the kernel):
22 ms forward and 16 ms back for 20,000 x 768 rows and 25 columns. oneDNN's kernels, compiled at run
time for the CPU's vector width, take 9 and 6 ms, 2-3x less at every size the solver uses (2,000 to
20,000 rows, one or two threads, no extra memory); the rotation takes 0.14 s against 0.24 s with
numpy's OpenBLAS. Without AVX-512 there is no such gain: on the same CPU with both libraries held to
AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``, the nearest thing to an AVX2 machine
there was), oneDNN's forward product was 13-24 % faster than MKL's and its backward one 14-20 %
slower. So oneDNN is used only where torch runs its AVX-512 kernels
(``torch.backends.cpu.get_cpu_capability()``; ``ATEN_CPU_CAPABILITY=avx2`` turns it off too).

torch reaches oneDNN with plain (strided) float32 tensors only through an operator of its own compiler
(``torch.ops.mkldnn._linear_pointwise``, what ``torch.compile`` emits for a linear layer on the CPU),
which is not a public API: it may be missing from a build or change in a later torch. So it is checked
once per process against plain float64 arithmetic (on strided operands, as the solver passes them),
and any absence, error or disagreement falls back to torch's BLAS for the whole process. The two differ only in
the float32 rounding of sums (a few 1e-7 relative), far below the solver's tolerances; the chosen C
may still move on lines whose validation accuracy ties (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Callable

import torch

from attrib.probe.logreg_args import check_products

Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # f(a, b) = a @ b.T

_CHECKED: dict[str, Product | None] = {}


def onednn_for(products: str, like: torch.Tensor) -> Product | None:
    """oneDNN's ``f(a, b) = a @ b.T`` for tensors like ``like`` when ``products`` is "auto", they are
    float32 on the CPU and the operator passed its check in this process; else None: torch's BLAS, as
    before this module (``products="blas"``: on the benchmark's lines, the same results to every saved
    digit as the code before it).

    ``a`` and ``b`` may be any 2-D views (the solver passes row slices and transposes of them).
    """
    check_products(products)
    if products == "auto" and like.device.type == "cpu" and like.dtype == torch.float32:
        return onednn_nt()
    return None


def onednn_nt() -> Product | None:
    """oneDNN's ``a @ b.T`` on a CPU with AVX-512 if this torch has the operator and it agrees with plain
    arithmetic; else None."""
    if "nt" not in _CHECKED:
        _CHECKED["nt"] = _checked(_onednn_nt) if _avx512() else None
    return _CHECKED["nt"]


def available() -> bool:
    """Whether the solver's CPU products run on oneDNN in this process (for benchmark reports)."""
    return onednn_nt() is not None


def _avx512() -> bool:
    """Whether torch runs its AVX-512 kernels here, where oneDNN's products were measured faster."""
    return str(torch.backends.cpu.get_cpu_capability()).upper().startswith("AVX512")


def _onednn_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


def _checked(f: Product) -> Product | None:
    """``f`` if it gives ``a @ b.T`` on the operand layouts the solver uses, to float32 precision."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return None
    try:
        gen = torch.Generator().manual_seed(0)
        rows, a, g = (torch.randn(*shape, generator=gen, device="cpu") for shape in ((300, 70), (11, 70), (11, 250)))
        cases = [(a, rows[20:270]),      # logits: weights by a row slice of the data
                 (g, rows[20:270].T),    # gradient: by the transposed slice (a strided view)
                 (rows[:40], rows[200:270].T)]  # rotation: a row block by a transposed square matrix
        for x, y in cases:
            got, want = f(x, y), x.double() @ y.double().T
            if got.shape != want.shape or got.dtype != torch.float32:
                return None
            if not torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max())):
                return None
    except (RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError):
        return None
    return f
