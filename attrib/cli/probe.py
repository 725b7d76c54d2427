"""`attrib probe` (stage 2): a study on cached features."""

from __future__ import annotations


import click

from attrib import choices
from attrib.cli_options import (GridValues, Layers, ParamSetting, PerClass, RegistryNames, Shots)
from attrib.errors import ProblemsFound
from attrib.cli.sources import refuse_split_file_options, split_source, study_features
from attrib.cli.common import main


@main.command()
@click.option("--features", "features_path", required=True, multiple=True, type=click.Path(),
              help="Feature-set folder (printed by `attrib features`; see `attrib cache ls`). Repeat it to read "
              "several feature sets of the same model, weights, preprocessing and view as one image list.")
@click.option("--eval-features", "eval_paths", multiple=True, type=click.Path(),
              help="Read validation and test images (known and unknown) from this feature set instead (repeatable, "
              "like --features), matched by image path: same model and weights as --features, another --preprocess "
              "or --view (e.g. bicubic train / bilinear eval, or a jpeg:75 test view). [default: --features]")
@click.option("--splits", default="all", show_default=True,
              help="Which splits to run: all, 1-5, 1,3, or names (GenImage: the paper's five; demo: three; with "
              "--split-file or --splits-dir: theirs, where N also finds splitN).")
@click.option("--splits-dir", type=click.Path(exists=True, file_okay=False), default=None, metavar="DIR",
              help="Define the splits by the paper's own split files under DIR (POSE format, e.g. "
              "split1_train/annotations/split1_train.txt, path<TAB>label), read as they are: fixed rows, the same "
              "for every seed, instead of rows sampled by seed. Class names come from the built-in splits (splitN "
              "= split N) or from --split-file. (`attrib features --splits-dir DIR` extracts just these images.)")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or JSON file naming each split's known and unknown sources (see README); works "
              "with any dataset. Rows are sampled by seed, or taken from --splits-dir.")
@click.option("--known-test", type=click.Choice(choices.KNOWN_TEST), default="test", show_default=True,
              help="With --splits-dir: test known classes on splitN_test.txt, or on splitN_val.txt as the "
              "paper's code does (the file that also selects C).")
@click.option("--allow-missing", is_flag=True,
              help="With --splits-dir: run even if some listed images are not in the feature set (they are "
              "reported, first 20 and the count). Default: that is an error.")
@click.option("--protocol", type=click.Choice(choices.PROTOCOLS), default="clean", show_default=True,
              help="clean: each head's C / k chosen on known-class validation data only (accuracy, then "
              "log-loss). paper: as the paper's code does (optimistic; for replication): training classes "
              "balanced by cycling, C / k chosen by validation auroc_paper against the unknown generators' "
              "validation images.")
@click.option("--layers", type=Layers(), default="all", show_default=True, help=Layers.help)
@click.option("--heads", type=RegistryNames("attrib.probe.heads.HEADS", choices.HEADS), default="logreg",
              show_default=True, help=f"Comma-separated heads, or all: {', '.join(choices.HEADS)}.")
@click.option("--scores", type=RegistryNames("attrib.probe.scorers.SCORERS", choices.SCORERS), default="msp",
              show_default=True, help=f"Comma-separated open-set scores, or all: {', '.join(choices.SCORERS)}. "
              "Pairs a score cannot use are skipped.")
@click.option("--shots", type=Shots(), default="all", show_default=True,
              help="Training images per class: e.g. 1,2,5,10,50,100,500,all.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds per shots value (each seed draws its own shots subset and validation split).")
@click.option("--train-per-class", type=PerClass(), default=None,
              help="Cap on training images per class (or 'all'). [default: "
              f"{choices.DEFAULT_TRAIN_PER_CLASS}, as in the paper's code]")
@click.option("--val-per-class", type=PerClass(), default=None,
              help="Cap on validation images per class, unknown generators included (or 'all'). [default: "
              f"{choices.DEFAULT_VAL_PER_CLASS}; --splits-dir: {choices.POSE_PER_CLASS}, first in file order, as in "
              "the paper's code]")
@click.option("--test-per-class", type=PerClass(), default=None,
              help="Cap on test images per class, unknown generators included (or 'all'). [default: "
              f"{choices.DEFAULT_TEST_PER_CLASS}]")
@click.option("--grid", type=GridValues(), multiple=True,
              help="Values to sweep for a head's path hyperparameter instead of its default, e.g. "
              "C=0.01,0.1,1,10 or k=1,5,10 (repeatable). [default: C = 10^linspace({}, {}, {}); k = {}..{}]".format(
                  *choices.DEFAULT_LOG10_C, choices.DEFAULT_KS[0], choices.DEFAULT_KS[-1]))
@click.option("--param", "params", type=ParamSetting(), multiple=True, help=ParamSetting.help)
@click.option("--save-scores", is_flag=True,
              help="Also save each new line's per-sample test scores, predictions and labels to OUT/scores/<line "
              "key>.npz (named in the line as scores_file), to recompute any metric later without refitting.")
@click.option("--jobs", type=click.IntRange(min=-1), default=1, show_default=True,
              help="Parallel processes over (split, layer, shots, seed) jobs (-1 = all CPUs). Results are "
              "identical for any value.")
@click.option("--backend", type=click.Choice(choices.BACKENDS), default="local", show_default=True,
              help="local: --jobs processes on this machine. dask: the workers of the dask cluster at "
              "--scheduler (pip install 'attrib[dask]'); they must reach the feature set, and --scratch, on a "
              "shared file system. Results are identical either way.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="With --backend dask: the scheduler's address, e.g. tcp://head-node:8786.")
@click.option("--scratch", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where the study's per-block feature arrays go while it runs (removed after; rows x width x 2 "
              "bytes per block, checked against the free space before any is read). [default: $TMPDIR; with "
              "--backend dask give a folder every worker can read]")
@click.option("--save-head", "save_head_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also fit and save a head for later use (attrib predict): clean protocol, one split; the "
              "best layer/head/score on validation data unless one of each is given. .npz + JSON, no pickle. "
              "A folder that already holds a head is refused unless --force.")
@click.option("--force", is_flag=True, help="With --save-head: replace a head already saved in DIR.")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Results folder (results.jsonl, tables, plots).")
@click.option("--quiet", is_flag=True, help="No progress bar, no table.")
def probe(features_path, splits, splits_dir, split_file, known_test, allow_missing, protocol, layers, heads,
          scores, shots, seeds, train_per_class, val_per_class, test_per_class, out_dir, quiet, **opts):
    """Stage 2: fit probes on cached features and measure closed-set accuracy, AUROC, OSCR and more.

    Appends one JSON line per (split, layer, head, score, shots, seed) to OUT/results.jsonl (a rerun
    skips finished lines, so an interrupted study resumes), then writes the report (table.md,
    table.csv, per_unknown.csv, plots) and prints the main table.

    \b
    Examples:
      attrib probe --features cache/demo__attrib-tiny__random-init-1a2b3c4d --out results/demo
      attrib probe --features cache/<set> --layers 7 --shots 1,5,10,all --seeds 5 --jobs 4 --out results/shots
      attrib probe --features cache/<set> --splits 1 --layers 4-9 --save-head heads/split1 --out results/s1
      attrib probe --features cache/genimage__... --splits-dir /data/GenImage-splits --out results/paper-files
      attrib probe --features cache/my_generators__... --split-file splits.yaml --out results/mine
      attrib probe --features $BICUBIC_SET --eval-features $BILINEAR_SET --splits-dir /data/GenImage-splits --out r/p
      attrib probe --features cache/genimage__... --features cache/other__... --split-file cross.yaml --out r/cross
    """
    from attrib.probe.report import write_report
    from attrib.probe.choose import check_save_head, save_chosen_head
    from attrib.probe.study import StudyConfig, run_study

    refuse_split_file_options(splits_dir, allow_missing)
    fs, eval_fs = study_features(features_path, opts["eval_paths"])
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    source = split_source(fs, splits, splits_dir, split_file, {
        "train_per_class": train_per_class, "val_per_class": val_per_class, "test_per_class": test_per_class},
        known_test, allow_missing)
    for note in source.notes():
        click.secho(f"note: {note}", fg="yellow", err=True)
    cfg = StudyConfig(splits=source, layers=layers.resolve(fs.n_blocks), heads=heads, scores=scores, shots=shots,
                      seeds=seeds, protocol=protocol, grid=dict(opts["grid"]), jobs=opts["jobs"],
                      backend=opts["backend"], scheduler=opts["scheduler"], scratch=opts["scratch"],
                      params=list(opts["params"]), save_scores=opts["save_scores"])
    cfg.validate()
    if opts["save_head_dir"]:  # fail before a long study, not after
        check_save_head(cfg, opts["save_head_dir"], opts["force"])
    run = run_study(fs, cfg, out_dir, progress=not quiet, log=log, eval_fs=eval_fs)
    for e in run.errors[:20]:
        click.echo(f"FAILED {e}", err=True)
    if run.errors and not run.written + run.skipped_done:
        raise ProblemsFound(f"all {len(run.errors)} result line(s) failed (listed above); nothing to report")
    rep = write_report(run.results.parent)
    saved = save_chosen_head(fs, cfg, opts["save_head_dir"], progress=not quiet, log=log, eval_fs=eval_fs,
                             force=opts["force"]) \
        if opts["save_head_dir"] else None
    if not quiet:
        click.echo(rep.main)
    click.echo(f"results: {run.results} ({run.written} new lines in {run.seconds:.1f} s, {run.skipped_done} already "
               "done)", err=True)
    for k, p in rep.paths.items():
        click.echo(f"{k}: {p}", err=True)
    if saved:
        _print_saved_head(saved, opts["save_head_dir"], fs.label)
    if run.errors:
        raise ProblemsFound(f"{len(run.errors)} result line(s) failed (listed above) and were not written; rerun "
                            "the same command to retry them")


def _print_saved_head(saved: dict, head_dir: str, label: str | None) -> None:
    v = saved["validation"]
    click.echo(f"saved head: {head_dir}  layer {saved['layer']}, {saved['head']}+{saved['score']} "
               f"{saved['hparams']}, chosen by {saved['choice']['criterion']}; threshold {saved['threshold']:.6g} "
               f"(validation: accuracy {100 * v['accuracy']:.2f}%, known accepted {100 * v['tpr']:.2f}%)", err=True)
    if label:
        click.secho(f"WARNING: the saved head was trained on {label}", fg="red", err=True)
