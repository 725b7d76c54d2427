"""`attrib features` (stage 1), with `--rows-for` (the views of a study's evaluation rows)."""

from __future__ import annotations

from pathlib import Path

import click

from attrib import choices
from attrib.cli_options import (DEFAULT_CACHE, PerClass, ViewSpec, runner_options)
from attrib.manifest import PREPROCESSES
from attrib.cli.sources import split_source
from attrib.cli.common import banner, option_given, open_fs, options_given, refuse_unused, main


# --------------------------------------------------------------------------------------- features
def rows_options(command):
    """``--rows-for`` and the probe options that decide those rows, shared by `features` and `cache find`."""
    options = (
        click.option("--rows-for", metavar="SPLITS", default=None,
                     help="Only the validation and test rows (known and unknown) of these splits (all, 1-5, 1,3, "
                     "names), as `attrib probe --splits SPLITS` with the same --seeds, caps and --splits-dir / "
                     "--split-file draws them from --rows-from: a perturbed test set costs its test rows, not the "
                     "dataset. Its own feature set (the manifest records rows_for). Needs --rows-from."),
        click.option("--rows-from", type=click.Path(exists=True, file_okay=False), default=None, metavar="FEATURE_SET",
                     help="With --rows-for: the clean feature set whose image list, split rows and backbone (model, "
                     "weights; and preprocessing unless --preprocess is given) are used."),
        click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
                     help="With --rows-for: the rows of seeds 0..N-1, as `attrib probe --seeds N` (sampled splits "
                     "draw other validation rows for each seed)."),
        click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="With --rows-for: the splits of this YAML/JSON file, as `attrib probe --split-file`."),
        click.option("--known-test", type=click.Choice(choices.KNOWN_TEST), default="test", show_default=True,
                     help="With --rows-for and --splits-dir: as `attrib probe --known-test`."),
        click.option("--val-per-class", type=PerClass(), default=None,
                     help="With --rows-for: as `attrib probe --val-per-class` (a larger cap only adds rows)."),
        click.option("--test-per-class", type=PerClass(), default=None,
                     help="With --rows-for: as `attrib probe --test-per-class`."),
    )
    for option in reversed(options):
        command = option(command)
    return command


_ROWS_DETAILS = ("seeds", "split_file", "known_test", "val_per_class", "test_per_class")
# `features` options that --rows-from decides (the image list and the backbone come from the clean set)
_DECIDED_BY_ROWS_FROM = ("dataset", "root", "list_file", "model", "pretrained", "fallback_model", "out", "limit",
                         "max_per_source", "sample_seed", "rank", "world_size")


def rows_requested(rows: dict) -> bool:
    """Whether --rows-for and --rows-from are given (one without the other is refused, and so are the
    options that only choose those rows)."""
    from attrib.extract.rows_for import RowsForError

    if rows["rows_for"] and rows["rows_from"]:
        return True
    if rows["rows_for"] or rows["rows_from"]:
        raise RowsForError("--rows-for SPLITS and --rows-from FEATURE_SET go together: the splits' rows are drawn "
                           "from the clean feature set's image list (e.g. --rows-for all --rows-from cache/<set>)")
    stray = options_given(_ROWS_DETAILS)
    if stray:
        raise RowsForError(f"{', '.join(stray)} only choose the rows of --rows-for SPLITS --rows-from FEATURE_SET")
    return False


def rows_target(rows: dict, splits_dir: str | None, view, preprocess: str | None):
    """(clean feature set, its split source, the :class:`attrib.extract.rows_for.Target`) of --rows-for."""
    from attrib.extract.rows_for import eval_rows_target

    clean = open_fs(rows["rows_from"])
    caps = {"val_per_class": rows["val_per_class"], "test_per_class": rows["test_per_class"]}
    source = split_source(clean, rows["rows_for"], splits_dir, rows["split_file"], caps, rows["known_test"],
                           allow_missing=True)
    return clean, source, eval_rows_target(clean, [source], rows["seeds"], view, preprocess)


def _features_rows_for(rows: dict, splits_dir: str | None, view, preprocess: str, cache_dir: str, cfg) -> None:
    """`attrib features --rows-for`: the view of a clean feature set's evaluation rows, found or extracted."""
    from attrib.extract.rows_for import RowsForError, provide

    decided = options_given(_DECIDED_BY_ROWS_FROM)
    if decided:
        raise RowsForError(f"{', '.join(decided)}: with --rows-from the image list and the backbone are the clean "
                           "feature set's; drop these options")
    clean, source, target = rows_target(rows, splits_dir, view, preprocess if option_given("preprocess") else None)
    if clean.label:
        banner(f"{clean.id}: {clean.label}")
    for note in source.notes():
        click.secho(f"note: {note}", fg="yellow", err=True)
    click.echo(f"{len(target.images)} validation and test rows of split(s) {', '.join(source.names())} x "
               f"{rows['seeds']} seed(s), of the {clean.n_images} images of {clean.id}; view {view.spec}, "
               f"preprocess {target.preprocess}", err=True)
    got = provide(cache_dir, clean, [target], cfg, extract=True)
    fs = got.sets[0]
    click.echo(f"done: {got.images_extracted} images extracted in {got.seconds:.1f} s" if got.extracted else
               "done: already in the cache, nothing extracted", err=True)
    if fs.label:
        click.secho(f"note: {fs.label}", fg="red", err=True)
    click.echo(str(fs.path))


@main.command()
@click.option("--dataset", type=click.Choice(choices.DATASETS), default="demo",
              show_default=True, help="demo: built-in offline demo (built on first use); genimage: GenImage "
              "under --root (<generator>/[<archive>/]{train,val}/{ai,nature}/); folder: one sub-folder of --root "
              "per source ('real' = real images; train/val/test sub-folders optional); list: --list file.")
@click.option("--root", type=click.Path(), default=None,
              help=f"Dataset folder (demo default: {choices.DEFAULT_DEMO_ROOT}). Paths in the cache are relative "
              "to it. With --dataset list: the folder relative paths start from (default: the list file's folder).")
@click.option("--list", "list_file", type=click.Path(), default=None,
              help="For --dataset list: a file of path<TAB>source[<TAB>subset] lines ('#' comments, optional "
              "header line; a feature set's images.tsv works).")
@click.option("--build-demo", is_flag=True,
              help="With --dataset demo: build the demo at --root if it is not there. Only the default root "
              "(data/demo) is built without it, so a mistyped --root is an error, not a second demo.")
@click.option("--model", default=choices.DEFAULT_MODEL, show_default=True,
              help="open_clip model name, hf-hub:org/repo, local-dir:/folder (open_clip_config.json + weights), "
              f"timm:<name>, or {choices.TINY} (built-in tiny ViT).")
@click.option("--pretrained", default=None, metavar="TAG|FILE",
              help=f"The weights to load into --model: an open_clip tag ({choices.DEFAULT_PRETRAINED}, openai, ...), "
              f"a checkpoint file, or {choices.RANDOM_INIT}. Ignored for hf-hub:/local-dir: models. [default: "
              f"{choices.DEFAULT_PRETRAINED} for {choices.DEFAULT_MODEL}, {choices.RANDOM_INIT} for {choices.TINY}, "
              "timm's own weights for timm:]")
@click.option("--fallback-model", default=None, metavar="NAME",
              help="If the weights are neither cached nor downloadable, warn loudly and use this model with "
              "random weights instead (make demo uses attrib-tiny). Default: fail.")
@click.option("--view", type=ViewSpec(), default="none", show_default=True,
              help=f"{ViewSpec.help} Each view is its own feature set.")
@click.option("--preprocess", type=click.Choice(PREPROCESSES), default="model",
              show_default=True, help="model: the model's own transform; paper: the paper's (squash to the "
              "input size, bilinear, ImageNet mean/std); paper-train: the same with bicubic. Part of the "
              "feature set's identity.")
@click.option("--cache", "cache_dir", type=click.Path(), default=DEFAULT_CACHE, show_default=True,
              help="Cache root; the feature set goes to CACHE/<dataset>__<model>__<weights>[__<view>]-<hash>.")
@click.option("--out", type=click.Path(), default=None, help="Exact feature-set folder (overrides --cache naming).")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Images per HDF5 shard (the unit of resume and of rank splitting). [default: "
              f"{choices.DEFAULT_SHARD_SIZE}, or the existing feature set's]")
@runner_options(" With cuda, ranks started by torchrun use cuda:$LOCAL_RANK.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads for the forward pass (CPU runs; e.g. cores / ranks when several ranks share a "
              "machine). [default: torch's, all cores]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Quick trial: only N images, spread evenly over the list (its own feature set).")
@click.option("--max-per-source", type=click.IntRange(min=1), default=None,
              help="At most N images per (source, subset), a seeded sample that does not depend on listing "
              "order (a larger N only adds images). A different N is a different image list, hence its own "
              f"feature set. {choices.DEFAULT_TRAIN_PER_CLASS + choices.DEFAULT_VAL_PER_CLASS} covers the default "
              f"probe caps ({choices.DEFAULT_TRAIN_PER_CLASS} train + {choices.DEFAULT_VAL_PER_CLASS} val, "
              f"{choices.DEFAULT_TEST_PER_CLASS} test).")
@click.option("--sample-seed", type=int, default=0, show_default=True, help="Seed of --max-per-source.")
@click.option("--splits-dir", "only_splits_dir", type=click.Path(exists=True, file_okay=False), default=None,
              metavar="DIR",
              help="Extract only the images named in the split files (POSE format) under DIR, e.g. the paper's "
              "GenImage splits: one pass over exactly the images `attrib probe --splits-dir DIR` needs. The folder "
              "is recorded in the manifest (`attrib cache find --splits-dir DIR` finds the set by it). [default: "
              "every image of the dataset]")
@click.option("--rank", type=click.IntRange(min=0), default=None,
              help="This process's rank: it extracts shards k with k % world-size == rank. [default: "
              "$RANK or $SLURM_PROCID, else 0]")
@click.option("--world-size", type=click.IntRange(min=1), default=None,
              help="Number of processes sharing the work. [default: $WORLD_SIZE or $SLURM_NTASKS, else 1]")
@rows_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def features(dataset, root, list_file, build_demo, model, pretrained, fallback_model, view, preprocess, cache_dir, out,
             shard_size, batch_size, workers, threads, device, precision, limit, max_per_source, sample_seed,
             only_splits_dir, rank, world_size, quiet, **rows):
    """Stage 1: extract the CLS token of every block (one forward per batch) into the feature cache.

    Reruns skip finished shards, so an interrupted run resumes where it stopped, and re-extract damaged
    ones (truncated, empty, holding other rows). Corrupt images are recorded as failed rows, never a crash.
    The last line printed (on stdout) is the feature-set folder; the summary line before it on stderr
    starts with 'done:' (images, failed, seconds, img/s, shards and MB written), or 'already complete:'
    when there was nothing to extract.

    Several processes (ranks) share a run by shards: rank R of W extracts shards k with k % W == R,
    nothing else is coordinated, so any launcher works (torchrun, srun, a SLURM array with --rank and
    --world-size, or W shells). Rerun any rank to finish its missing shards. Runs started by hand
    without ranks share the work too: each claims a shard (shard-*.h5.claim) before extracting it, and
    skips shards other live runs have claimed.

    \b
    Examples:
      attrib features --dataset demo --model attrib-tiny
      attrib features --dataset genimage --root /data/GenImage --max-per-source 5000
      attrib features --dataset genimage --root /data/GenImage --splits-dir /data/GenImage-splits
      attrib features --dataset genimage --root /data/GenImage --view jpeg:75
      attrib features --rows-from cache/<clean set> --rows-for all --view jpeg:26
      attrib features --dataset folder --root /data/my_generators
      attrib features --dataset list --list images.tsv --root /data
      torchrun --nproc-per-node 8 -m attrib features --dataset genimage --root /data/GenImage
      srun --ntasks 16 attrib features --dataset genimage --root /data/GenImage
    """
    from attrib.extract.backbone import RANDOM_INIT_LABEL
    from attrib.extract.runner import RunConfig, dist_from_env, extract

    progress = not quiet
    if rows_requested(rows):
        cfg = RunConfig(batch_size=batch_size, workers=workers, device=device, precision=precision,
                        shard_size=shard_size, threads=threads, progress=progress)
        return _features_rows_for(rows, only_splits_dir, view, preprocess, cache_dir, cfg)
    if rank is None or world_size is None:  # explicit options need no (possibly broken) launcher variables
        env_rank, env_world, _ = dist_from_env()
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
    if option_given("sample_seed") and not max_per_source:
        raise refuse_unused("--sample-seed", "with --max-per-source N (it seeds that sample)")
    images, name, extra = _images(dataset, root, list_file, build_demo, only_splits_dir, max_per_source,
                                  sample_seed, limit, progress)
    backbone = _backbone(model, pretrained, fallback_model, preprocess, extra)
    click.echo(f"{len(images)} images from {name} ({images.root}); model {backbone.spec['model']} "
               f"weights {backbone.spec['weights']}; {backbone.n_blocks} blocks x {backbone.width} dims; "
               f"view {view.spec}", err=True)
    cfg = RunConfig(batch_size=batch_size, workers=workers, device=device, precision=precision,
                    shard_size=shard_size, rank=rank, world_size=world_size, threads=threads,
                    progress=progress)
    summary = extract(images, backbone, cache_dir, name, view, cfg, out=out, manifest_extra=extra,
                      log=lambda msg: click.secho(f"note: {msg}", fg="yellow", err=True))
    click.echo(_features_outcome(summary, rank, world_size), err=True)
    for note in summary.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    if backbone.random_init:
        click.secho(f"note: {RANDOM_INIT_LABEL}", fg="red", err=True)
    click.echo(str(summary.feature_set.path))


def _images(dataset, root, list_file, build_demo, only_splits_dir, max_per_source, sample_seed, limit,
            progress: bool):
    """The images `attrib features` extracts, their dataset's name, and the manifest fields that say how
    they were chosen (so that a subset is never mistaken for the whole dataset)."""
    from attrib.data import open_dataset
    from attrib.data.catalog import sample_per_source
    from attrib.data.pose import restrict_to_pose
    from attrib.extract.runner import even_subset

    images, name = open_dataset(dataset, root, list_file, progress=progress, build_demo=build_demo)
    extra = {"dataset_kind": dataset}
    if only_splits_dir:
        images = restrict_to_pose(images, only_splits_dir)
        extra["splits_dir"] = str(Path(only_splits_dir).resolve())
    if max_per_source:
        images = sample_per_source(images, max_per_source, sample_seed)
        extra.update(max_per_source=max_per_source, sample_seed=sample_seed)
    if limit:
        images = even_subset(images, limit)
        extra["limit"] = limit
    return images, name, extra


def _backbone(model, pretrained, fallback_model, preprocess, extra: dict):
    """The model to extract with; with --fallback-model, a random-weights stand-in when the weights cannot be
    had, said loudly and recorded in the manifest's fields (``extra``)."""
    from attrib.extract.backbone import (DEFAULT_MODEL, DEFAULT_PRETRAINED, RANDOM_INIT, RANDOM_INIT_LABEL, TINY,
                                         WeightsUnavailable, load_backbone)

    if not pretrained and model == DEFAULT_MODEL:
        pretrained = DEFAULT_PRETRAINED
    try:
        backbone = load_backbone(model, pretrained or None, preprocess)
    except WeightsUnavailable as exc:
        if not fallback_model:
            raise
        banner(f"{exc}")
        banner(f"FALLING BACK to {fallback_model} with random weights: {RANDOM_INIT_LABEL}")
        backbone = load_backbone(fallback_model, None if fallback_model == TINY else RANDOM_INIT, preprocess)
        extra["requested"] = {"model": model, "pretrained": pretrained, "reason": str(exc)}
    if backbone.random_init:
        banner(f"{backbone.spec['model']} has random weights: {RANDOM_INIT_LABEL}")
    return backbone


def _features_outcome(summary, rank: int, world_size: int) -> str:
    """The summary line of `attrib features`: 'already complete' when there was nothing to do."""
    fs = summary.feature_set
    if summary.already_complete:
        return f"already complete: {fs.n_images} images in {fs.n_shards} shards; nothing to extract"
    if summary.shards_todo == 0:
        return (f"nothing to do for rank {rank} of {world_size}: its shards are done; {summary.shards_left} shards "
                "of other ranks still missing")
    return f"done: {summary}"
