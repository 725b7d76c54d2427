"""The paper's published table, and a replication's numbers beside it (``make paper``).

Cioni et al. (ECCV 2024 workshop), OpenCLIP ViT-B/16 ``laion2b_s34b_b88k``, block 8 of 12 (0-based
index 7), logistic probe + MSP, GenImage splits 1-5, the paper's protocol (C chosen by validation AUROC
against the unknown generators, classes balanced by cycling, bicubic training / bilinear evaluation
preprocessing): closed-set accuracy 97.82 ± 2.51, AUROC 81.39 ± 3.28, OSCR 80.78 ± 4.02 (%, mean ± std
over the five splits). Those numbers come from the paper's code, so the replication is compared on the
paper's conventions (``auroc_paper``, ``oscr_paper``); the standard ones are printed beside them.

Why a module: the published numbers and the block of another model's depth (``attrib-tiny`` on the
offline demo has 4 blocks, not 12) are facts the Makefile should not hard-code twice.

``python -m attrib.probe.published table RESULTS_DIR`` prints the comparison;
``python -m attrib.probe.published block FEATURE_SET`` prints the block to probe.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

PAPER_BLOCK, PAPER_DEPTH = 7, 12  # 0-based block index of the paper's table, and its model's depth
# metric -> (mean, std) in %, as Cioni et al. publish them (logistic probe + MSP, block 8, GenImage splits 1-5)
PUBLISHED = {"accuracy": (97.82, 2.51), "auroc_paper": (81.39, 3.28), "oscr_paper": (80.78, 4.02)}
STANDARD_OF = {"accuracy": "accuracy", "auroc_paper": "auroc", "oscr_paper": "oscr"}
LABELS = {"accuracy": "closed-set accuracy", "auroc_paper": "AUROC", "oscr_paper": "OSCR"}


def paper_block(n_blocks: int) -> int:
    """The 0-based block at the paper's relative depth (block 8 of 12) in a model of ``n_blocks`` blocks:
    7 for a 12-block ViT-B/16, 2 for the 4-block attrib-tiny of the offline demo, 15 for a 24-block ViT-L."""
    if n_blocks < 1:
        raise ValueError(f"a model needs at least one block, got {n_blocks}")
    return max(0, min(n_blocks - 1, round((PAPER_BLOCK + 1) * n_blocks / PAPER_DEPTH) - 1))


def comparison(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: the published numbers beside each logistic-probe + MSP, paper-protocol method of
    ``rows`` (:func:`attrib.probe.report.aggregate` rows, in %), under the paper's and the standard
    conventions. Empty when ``rows`` holds no such method."""
    from attrib.probe.tables import cell, markdown  # here: `block` needs only the standard library

    methods = [r for r in rows if (r["head"], r["score"], r["protocol"]) == ("logreg", "msp", "paper")]
    if not methods:
        return ""
    head = ["", "published (Cioni et al.)"]
    for r in methods:
        where = f"layer {r['layer']}, {r['n_runs']} run(s)" + (f", {r['params']}" if r.get("params") else "")
        head += [f"attrib, paper conventions ({where})", "attrib, standard conventions"]
    body = []
    for m, (mean, std) in PUBLISHED.items():
        cells = [LABELS[m], cell(mean, std)]
        for r in methods:
            s = STANDARD_OF[m]
            cells += [cell(r[m], r[m + "_std"]), cell(r[s], r[s + "_std"])]
        body.append(cells)
    return markdown(head, body)


def comparison_report(results_dir: str) -> str:
    """The comparison for a results folder, with the random-init warning when its features have one."""
    from attrib.probe.tables import aggregate
    from attrib.probe.results import read_results

    results = read_results(results_dir)
    table = comparison(aggregate(results))
    if not table:
        return (f"{results_dir}: no logreg + msp result under --protocol paper; run `make paper` (or `attrib probe "
                "... --heads logreg --scores msp --protocol paper`) first")
    labels = sorted({r.get("label") for r in results if r.get("label")})
    warn = [f"WARNING — {lab}: these numbers say nothing about CLIP or about the paper." for lab in labels]
    note = ("Mean ± std over splits, in % (attrib: population std over runs). The published numbers are the "
            "paper's code's conventions; compare the 'paper conventions' columns with them.")
    return "\n".join(warn + ([""] if warn else []) + [note, "", table])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ("table", "block"):
        print("usage: python -m attrib.probe.published table RESULTS_DIR | block FEATURE_SET", file=sys.stderr)
        return 2
    from attrib.errors import AttribError

    try:
        if args[0] == "block":
            from attrib.union import open_features

            print(paper_block(open_features([args[1]]).n_blocks))
        else:
            print(comparison_report(args[1]))
    except AttribError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
