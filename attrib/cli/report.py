"""`attrib report`: tables, figures and report.html from results.jsonl (and --compare)."""

from __future__ import annotations


import click

from attrib import choices
from attrib.cli_options import (DEFAULT_CACHE)
from attrib.errors import AttribError
from attrib.cli.common import main


@main.command()
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False),
                metavar="RESULTS_DIR...")
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Where to write. [default: RESULTS_DIR; with --compare: RESULTS_A/compare-<B>...]")
@click.option("--metrics", type=click.Choice(choices.REPORT_METRICS), default="standard", show_default=True,
              help="Conventions of the main table: standard (accuracy, AUROC, OSCR), or paper (accuracy, "
              "auroc_paper, oscr_paper, tnr95_paper: the paper's code's tie and walk conventions, to put beside "
              "its published table). Both are in table.csv and the all-metrics table.")
@click.option("--compare", is_flag=True,
              help="Compare studies: one table (each study's mean ± std, and B - A) and one plot.")
@click.option("--cache", "cache_dir", type=click.Path(), default=DEFAULT_CACHE, show_default=True,
              help="Where the feature sets named in the results are looked up (for the feature map).")
@click.option("--features", "features_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              metavar="DIR", help="A feature-set folder the results were computed on, if not in --cache (repeatable).")
@click.option("--head", "head_dirs", multiple=True, type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="A head saved by `probe --save-head`, whose threshold the score distributions show (repeatable; "
              "heads saved inside RESULTS_DIR are found without it).")
@click.option("--map-per-source", type=click.IntRange(min=0), default=100, show_default=True,
              help="Test images per source in the feature map (seeded sample); 0: no feature map.")
def report(results_dirs, out_dir, metrics, compare, cache_dir, features_dirs, head_dirs, map_per_source) -> None:
    """Aggregate RESULTS_DIR/results.jsonl into tables, plots and report.html; print the main table.

    Writes table.md, table.csv, per_unknown.csv, metrics_by_layer.png, metrics_by_shots.png (with several
    shots values), confusion.png and per_unknown.png; from scores saved by `probe --save-scores`: roc.png,
    oscr.png, score_distributions.png and feature_map.png (t-SNE per block; the feature set is looked up in
    --cache or given with --features); and report.html, one self-contained page with all of them. Numbers
    are mean ± std over splits and seeds, in %.

    \b
    Examples:
      attrib report results/demo
      attrib report results/genimage --cache /data/cache --head results/genimage/head
      attrib report --compare results/clean results/paper
    """
    ctx = click.get_current_context()
    if compare:
        given = [opt for n, opt in (("cache_dir", "--cache"), ("features_dirs", "--features"), ("head_dirs", "--head"),
                                    ("map_per_source", "--map-per-source"))
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise AttribError(f"{', '.join(given)}: not used by --compare (it reads result lines only)")
        from attrib.probe.compare import compare_studies

        cmp = compare_studies(results_dirs, out_dir, metrics)
        click.echo(cmp.table)
        for k, p in cmp.paths.items():
            click.echo(f"{k}: {p}", err=True)
        return
    if len(results_dirs) > 1:
        raise AttribError(f"{len(results_dirs)} results folders: give one, or add --compare to compare them")
    from attrib.probe.report import ReportInputs, write_report

    rep = write_report(results_dirs[0], out_dir, metrics,
                       ReportInputs(cache_dir, features_dirs, head_dirs, map_per_source))
    click.echo(rep.main)
    for note in rep.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    for k, p in rep.paths.items():
        click.echo(f"{k}: {p}", err=True)
