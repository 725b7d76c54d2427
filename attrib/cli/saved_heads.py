"""Commands that use a head saved by `attrib probe --save-head`: `predict` and `enroll`."""

from __future__ import annotations


import click

from attrib import choices
from attrib.cli_options import (DEFAULT_CACHE, runner_options)
from attrib.cli.common import banner, main


# ---------------------------------------------------------------------------------------- predict
@main.command()
@click.option("--head", "head_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A head saved by `attrib probe ... --save-head DIR`.")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Predictions file to write.")
@click.option("--format", "fmt", type=click.Choice(choices.FORMATS), default="csv", show_default=True)
@click.option("--threshold", type=float, default=None,
              help="Score below which a prediction becomes 'unknown'. [default: the head's, chosen to accept "
              f"{100 * choices.DEFAULT_TPR:g}% of known validation images]")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Sources listed per image.")
@click.option("--pretrained", default=None, metavar="FILE",
              help="Not a choice of weights (the head fixes them): where the head's checkpoint file is on this "
              "machine, if not at the path recorded at training time (checked by sha256). [default: the recorded "
              "path; tags need no file]")
@click.option("--cache", "cache_dir", type=click.Path(), default=DEFAULT_CACHE, show_default=True,
              help="Where the images' features are cached (a rerun, e.g. with another threshold, reuses them).")
@runner_options()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(head_dir, images, out, fmt, threshold, top_k, pretrained, cache_dir, batch_size, workers, device,
            precision, quiet):
    """Attribute IMAGES (files, folders searched recursively, or list files of paths) with a saved head.

    Features are extracted with exactly the head's backbone, weights, preprocessing and view (a mismatch
    is refused), then each image gets one row: path, predicted source, score, decision (the source, or
    'unknown' below the threshold; 'error' for unreadable files), the top-k sources with probabilities,
    and the error text.

    \b
    Example:
      attrib predict --head heads/split1 suspicious/ more.png --out predictions.csv
    """
    from attrib.extract.runner import RunConfig
    from attrib.predict import predict as run_predict
    from attrib.probe.persist import load_head

    saved = load_head(head_dir)
    if saved.label:
        banner(f"this head was trained on {saved.label}")
    cfg = RunConfig(batch_size=batch_size, workers=workers, device=device, precision=precision, progress=not quiet)
    res = run_predict(saved, images, out, cache=cache_dir, fmt=fmt, threshold=threshold, top_k=top_k,
                      pretrained=pretrained, config=cfg)
    known = res.rows - res.failed - res.unknown
    click.echo(f"{res.rows} images: {known} attributed to a known source, {res.unknown} unknown, {res.failed} "
               f"unreadable; features cached in {res.feature_set.path}", err=True)
    if saved.label:
        click.secho(f"note: {saved.label}", fg="red", err=True)
    click.echo(str(res.out))


# ----------------------------------------------------------------------------------------- enroll
@main.command()
@click.option("--head", "head_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A saved head (`attrib probe ... --save-head DIR`, or an enrolled one). It is not changed.")
@click.option("--source", required=True, help="Name of the generator to add (a new class of the head).")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the new head; one that already holds a head is refused unless --force.")
@click.option("--holdout", type=float, default=choices.DEFAULT_HOLDOUT, show_default=True,
              help="Share of the images held out of fitting to validate the new class and set the threshold "
              "(at least one image when > 0).")
@click.option("--seed", type=int, default=0, show_default=True, help="Which images are held out.")
@click.option("--force", is_flag=True, help="Replace a head already saved in --out.")
@click.option("--pretrained", default=None, metavar="FILE",
              help="Where the head's checkpoint file is on this machine, if it moved (as for `attrib predict`).")
@click.option("--cache", "cache_dir", type=click.Path(), default=DEFAULT_CACHE, show_default=True,
              help="Where the images' features are cached (shared with `attrib predict`).")
@runner_options()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def enroll(head_dir, source, images, out_dir, holdout, seed, force, pretrained, cache_dir, batch_size, workers,
           device, precision, quiet):
    """Add the generator SOURCE to a saved head from IMAGES (files, folders, list files; as few as 5).

    The images are extracted exactly as `attrib predict` extracts them. The new head keeps every old
    class, adds SOURCE, recomputes its rejection threshold (95% of the known validation images accepted:
    the old classes' stored validation features plus the held-out images of SOURCE), records the
    enrolment in head.json and is self-checked on load like any saved head. A logreg (or gauss) head is
    refitted on its stored training features plus the new images; a head saved before enrolment
    existed has none and must be re-saved; knn and ncm heads are extended without them.

    \b
    Example:
      attrib enroll --head heads/split1 --source newgen samples/newgen/ --out heads/split1+newgen
    """
    from attrib.extract.runner import RunConfig
    from attrib.probe.enroll import enroll as run_enroll
    from attrib.probe.persist import load_head

    saved = load_head(head_dir)
    if saved.label:
        banner(f"this head was trained on {saved.label}")
    cfg = RunConfig(batch_size=batch_size, workers=workers, device=device, precision=precision, progress=not quiet)
    rec = run_enroll(saved, source, images, out_dir, cache=cache_dir, holdout=holdout, seed=seed, force=force,
                     pretrained=pretrained, config=cfg, log=lambda m: click.echo(m, err=True))
    v = rec["validation"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"  # noqa: E731
    click.echo(f"enrolled {source}: {len(rec['fit_images'])} images fitted, {len(rec['holdout_images'])} held out "
               f"({rec['method']}); threshold {rec['threshold_before']:.6g} -> {rec['threshold']:.6g}; old classes' "
               f"validation accuracy {pct(v['old_accuracy_before'])} -> {pct(v['old_accuracy_after'])}, accepted "
               f"{pct(v['old_accepted'])}; held-out {source} images attributed {pct(v['new_accuracy'])}, accepted "
               f"{pct(v['new_accepted'])} (validation: {v['old_classes_from']})", err=True)
    if saved.label:
        click.secho(f"note: {saved.label}", fg="red", err=True)
    click.echo(str(out_dir))
