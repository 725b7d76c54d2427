"""`attrib robustness`: train on clean features, evaluate on perturbed views."""

from __future__ import annotations


import click

from attrib import choices
from attrib.cli_options import (DEFAULT_CACHE, ViewSpec, runner_options)
from attrib.errors import ProblemsFound
from attrib.manifest import PREPROCESSES
from attrib.cli.probe import probe
from attrib.cli.sources import refuse_split_file_options, split_source
from attrib.cli.common import banner, open_fs, main


# ------------------------------------------------------------------------------------- robustness
# `attrib probe`'s options that define a study; robustness takes the very same option objects (one definition)
_STUDY_OPTIONS = ("splits", "splits_dir", "split_file", "known_test", "allow_missing", "protocol", "layers", "heads",
                  "scores", "shots", "seeds", "train_per_class", "val_per_class", "test_per_class", "grid", "jobs")


def _with_study_options(command: click.Command) -> click.Command:
    """Give ``command`` `attrib probe`'s study options (inserted before --out), so both read alike."""
    shared = [p for p in probe.params if p.name in _STUDY_OPTIONS]
    at = next(i for i, p in enumerate(command.params) if p.name == "out_dir")
    command.params[at:at] = shared
    return command


@_with_study_options
@main.command()
@click.option("--features", "features_path", required=True, type=click.Path(),
              help="The clean feature set: the training features, and the images whose views are evaluated.")
@click.option("--perturb", default="all", show_default=True,
              help=f"The paper's test-time perturbations, comma-separated, or all: {', '.join(choices.PERTURBATIONS)} "
              "(resize = shortest side, blur = Gaussian kernel with sigma 3, jpeg = quality, crop = random resized "
              "crop; see docs/robustness.md).")
@click.option("--intensities", default="all", show_default=True,
              help="The paper's levels, 1 to 5: all, N, A-B or A,B,C.")
@click.option("--train-view", type=ViewSpec(), default=None, metavar="SPEC",
              help="Also train on this view of the clean set's whole image list, e.g. paper-train-aug (the paper's "
              "training-time random perturbations), evaluated on every condition too: the table then shows both "
              "trainings. [default: clean training only]")
@click.option("--preprocess", type=click.Choice(PREPROCESSES), default=None,
              help="Preprocessing of the evaluation features (e.g. paper when the clean set is paper-train). "
              "[default: the clean feature set's]")
@click.option("--no-extract", is_flag=True,
              help="Use views already in --cache only; refuse (listing them) when some are missing.")
@click.option("--cache", "cache_dir", type=click.Path(), default=DEFAULT_CACHE, show_default=True,
              help="Where views are looked for and extracted to.")
@runner_options()
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Results folder: runs/<train>/<condition>/results.jsonl, robustness.json, robustness.csv, "
              "robustness.md, robustness.png.")
@click.option("--quiet", is_flag=True, help="No progress bars, no table.")
def robustness(features_path, perturb, intensities, train_view, preprocess, no_extract, cache_dir, batch_size,
               workers, device, precision, out_dir, quiet, **opts):
    """Train on clean features, evaluate on perturbed ones: JPEG, resizing, blur and cropping at the paper's
    five intensities.

    Each (perturbation, intensity) is a view of the validation and test rows of the study's splits only
    (extracted into --cache once, found there afterwards: a rerun extracts nothing). Every condition, and
    the clean one, is a study trained on --features and evaluated on that view (OUT/runs/...; reruns skip
    finished lines). Writes robustness.csv (training, perturbation, intensity, method, each metric's mean
    and std in %), robustness.md and robustness.png (one panel per metric, x = intensity, a line per
    perturbation, the clean value dashed).

    \b
    Examples:
      attrib robustness --features cache/<set> --layers 7 --out results/robustness
      attrib robustness --features cache/<set> --perturb jpeg,blur --intensities 1,3,5 --out results/rb
      attrib robustness --features cache/<set> --train-view paper-train-aug --layers 7 --out results/rb-aug
    """
    from attrib.extract.runner import RunConfig
    from attrib.probe.robustness import conditions, parse_intensities, parse_perturbations, prepare, run_robustness
    from attrib.probe.robustness_report import write_robustness

    conds = conditions(parse_perturbations(perturb), parse_intensities(intensities))
    clean = open_fs(features_path)
    if clean.label:
        banner(f"{clean.id}: {clean.label}")
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    source_for, config_for = _study_configs(opts)
    config_for(clean)  # a bad option fails before anything is extracted
    for note in source_for(clean).notes():
        click.secho(f"note: {note}", fg="yellow", err=True)
    run_cfg = RunConfig(batch_size=batch_size, workers=workers, device=device, precision=precision, progress=not quiet)
    plan = prepare(clean, source_for, opts["seeds"], conds, cache_dir, train_view.spec if train_view else None,
                   preprocess, run_cfg, extract=not no_extract, log=log)
    n_sets = len({fs.path for fs in [*plan.train.values(), *plan.evals.values()]})
    click.echo(f"feature sets: {len(plan.extracted)} extracted ({plan.images_extracted} images), "
               f"{n_sets - len(plan.extracted)} already there", err=True)
    run = run_robustness(plan, config_for, out_dir, progress=not quiet, log=log)
    for e in run.errors[:20]:
        click.echo(f"FAILED {e}", err=True)
    rep = write_robustness(out_dir)
    if not quiet:
        click.echo(rep.main)
    click.echo(f"results: {run.written} new lines, {run.skipped_done} already done", err=True)
    for k, p in rep.paths.items():
        click.echo(f"{k}: {p}", err=True)
    if run.errors:
        raise ProblemsFound(f"{len(run.errors)} result line(s) failed (listed above); rerun the same command to "
                            "retry them")


def _study_configs(opts: dict):
    """(source_for(fs), config_for(fs)): each feature set's splits (read once) and the study every
    condition runs on it, from the command's split and study options."""
    from attrib.probe.study import StudyConfig

    caps = {k: opts[k] for k in ("train_per_class", "val_per_class", "test_per_class")}
    refuse_split_file_options(opts["splits_dir"], opts["allow_missing"])
    sources: dict = {}

    def source_for(fs):
        if fs.path not in sources:
            sources[fs.path] = split_source(fs, opts["splits"], opts["splits_dir"], opts["split_file"], caps,
                                             opts["known_test"], opts["allow_missing"])
        return sources[fs.path]

    def config_for(fs):
        cfg = StudyConfig(splits=source_for(fs), layers=opts["layers"].resolve(fs.n_blocks), heads=opts["heads"],
                          scores=opts["scores"], shots=opts["shots"], seeds=opts["seeds"], protocol=opts["protocol"],
                          grid=dict(opts["grid"]), jobs=opts["jobs"])
        cfg.validate()
        return cfg

    return source_for, config_for
