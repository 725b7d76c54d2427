"""Command line: ``attrib features | cache | probe | report | predict | enroll``.

Option names are part of the contract in DESIGN.md; each command's --help explains what it does.
Errors a user can cause (:class:`attrib.errors.AttribError`) are caught once, by the group, and shown
as ``Error: <message>`` with their exit status; anything else keeps its traceback. Nothing heavy
(torch, scikit-learn, h5py, matplotlib) is imported before a command runs, so --help is instant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from attrib import __version__, choices
from attrib.cli_options import (DEFAULT_CACHE, GridValues, Layers, ParamSetting, PerClass, RegistryNames, Shots,
                                ViewSpec, runner_options)
from attrib.errors import AttribError, ProblemsFound
from attrib.manifest import PREPROCESSES


class _Shown(click.ClickException):
    """An AttribError as click shows it: 'Error: <message>' on stderr, no traceback, the error's exit status."""

    def __init__(self, exc: AttribError):
        super().__init__(str(exc))
        self.exit_code = exc.exit_code


class AttribGroup(click.Group):
    """The top-level group: the one place where an AttribError becomes a message and an exit status.

    Subcommands (and the sub-group ``cache``) run inside this ``invoke``, so one ``except`` covers every
    command, including errors raised while converting option values.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AttribError as exc:
            raise _Shown(exc) from None


def _options_given(names) -> list[str]:
    """The current command's options among ``names`` that the user gave (command line or environment),
    as --option names: an option that does not apply is refused only when it was asked for."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return ["--" + n.replace("_", "-").replace("list-file", "list") for n in names
            if ctx.get_parameter_source(n) in given]


def _given(name: str) -> bool:
    """Whether the user gave the current command's option ``name`` (rather than leaving its default)."""
    return bool(_options_given([name]))


def _refuse_unused(option: str, needs: str) -> AttribError:
    return AttribError(f"{option} applies only {needs}; drop {option} or add what it needs")


def _banner(text: str) -> None:
    line = "!" * min(100, max(60, len(text) + 8))
    click.secho(f"{line}\n!!! {text}\n{line}", fg="red", bold=True, err=True)


@click.group(cls=AttribGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="attrib")
def main() -> None:
    """attrib: which generator made this image? Open-set origin attribution from frozen CLIP features.

    \b
    Stage 1  attrib features   images -> CLIP -> CLS token of every block, cached once (HDF5 shards)
    Stage 2  attrib probe      cached features -> linear probes + open-set scores -> results.jsonl
             attrib report     results.jsonl -> tables (Markdown, CSV) and plots
             attrib robustness train clean, evaluate on JPEG/resize/blur/crop views at five intensities
             attrib cache      ls | info | verify | find  the feature sets in a cache folder
    Use      attrib predict    new images + a head saved by `probe --save-head` -> predictions.csv
             attrib enroll     a saved head + a few images of a new generator -> a head that knows it
    """
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------------------- features
def _rows_options(command):
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


def _rows_requested(rows: dict) -> bool:
    """Whether --rows-for and --rows-from are given (one without the other is refused, and so are the
    options that only choose those rows)."""
    from attrib.extract.rows_for import RowsForError

    if rows["rows_for"] and rows["rows_from"]:
        return True
    if rows["rows_for"] or rows["rows_from"]:
        raise RowsForError("--rows-for SPLITS and --rows-from FEATURE_SET go together: the splits' rows are drawn "
                           "from the clean feature set's image list (e.g. --rows-for all --rows-from cache/<set>)")
    stray = _options_given(_ROWS_DETAILS)
    if stray:
        raise RowsForError(f"{', '.join(stray)} only choose the rows of --rows-for SPLITS --rows-from FEATURE_SET")
    return False


def _rows_target(rows: dict, splits_dir: str | None, view, preprocess: str | None):
    """(clean feature set, its split source, the :class:`attrib.extract.rows_for.Target`) of --rows-for."""
    from attrib.extract.rows_for import eval_rows_target

    clean = _open_fs(rows["rows_from"])
    caps = {"val_per_class": rows["val_per_class"], "test_per_class": rows["test_per_class"]}
    source = _split_source(clean, rows["rows_for"], splits_dir, rows["split_file"], caps, rows["known_test"],
                           allow_missing=True)
    return clean, source, eval_rows_target(clean, [source], rows["seeds"], view, preprocess)


def _features_rows_for(rows: dict, splits_dir: str | None, view, preprocess: str, cache_dir: str, cfg) -> None:
    """`attrib features --rows-for`: the view of a clean feature set's evaluation rows, found or extracted."""
    from attrib.extract.rows_for import RowsForError, provide

    decided = _options_given(_DECIDED_BY_ROWS_FROM)
    if decided:
        raise RowsForError(f"{', '.join(decided)}: with --rows-from the image list and the backbone are the clean "
                           "feature set's; drop these options")
    clean, source, target = _rows_target(rows, splits_dir, view, preprocess if _given("preprocess") else None)
    if clean.label:
        _banner(f"{clean.id}: {clean.label}")
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
@_rows_options
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
    from attrib.data import open_dataset
    from attrib.data.catalog import sample_per_source
    from attrib.data.pose import restrict_to_pose
    from attrib.extract.backbone import (DEFAULT_MODEL, DEFAULT_PRETRAINED, RANDOM_INIT, RANDOM_INIT_LABEL, TINY,
                                         WeightsUnavailable, load_backbone)
    from attrib.extract.runner import RunConfig, dist_from_env, even_subset, extract

    progress = not quiet
    if _rows_requested(rows):
        cfg = RunConfig(batch_size=batch_size, workers=workers, device=device, precision=precision,
                        shard_size=shard_size, threads=threads, progress=progress)
        return _features_rows_for(rows, only_splits_dir, view, preprocess, cache_dir, cfg)
    if rank is None or world_size is None:  # explicit options need no (possibly broken) launcher variables
        env_rank, env_world, _ = dist_from_env()
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
    if _given("sample_seed") and not max_per_source:
        raise _refuse_unused("--sample-seed", "with --max-per-source N (it seeds that sample)")
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
    if not pretrained and model == DEFAULT_MODEL:
        pretrained = DEFAULT_PRETRAINED
    try:
        backbone = load_backbone(model, pretrained or None, preprocess)
    except WeightsUnavailable as exc:
        if not fallback_model:
            raise
        _banner(f"{exc}")
        _banner(f"FALLING BACK to {fallback_model} with random weights: {RANDOM_INIT_LABEL}")
        backbone = load_backbone(fallback_model, None if fallback_model == TINY else RANDOM_INIT, preprocess)
        extra["requested"] = {"model": model, "pretrained": pretrained, "reason": str(exc)}
    if backbone.random_init:
        _banner(f"{backbone.spec['model']} has random weights: {RANDOM_INIT_LABEL}")
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


def _features_outcome(summary, rank: int, world_size: int) -> str:
    """The summary line of `attrib features`: 'already complete' when there was nothing to do."""
    fs = summary.feature_set
    if summary.already_complete:
        return f"already complete: {fs.n_images} images in {fs.n_shards} shards; nothing to extract"
    if summary.shards_todo == 0:
        return (f"nothing to do for rank {rank} of {world_size}: its shards are done; {summary.shards_left} shards "
                "of other ranks still missing")
    return f"done: {summary}"


# ------------------------------------------------------------------------------------------ cache
@main.group()
def cache() -> None:
    """Inspect feature sets: ls, info, verify, find."""


def _open_fs(path: str):
    from attrib.store import FeatureSet

    return FeatureSet.open(path)


@cache.command("ls")
@click.argument("cache_dir", required=False, default=DEFAULT_CACHE, type=click.Path())
def cache_ls(cache_dir: str) -> None:
    """List the feature sets under CACHE_DIR (default: cache/), newest first."""
    from attrib.parts import GrownFeatureSet
    from attrib.store import list_feature_sets

    sets = list_feature_sets(cache_dir)
    if not sets:
        click.echo(f"no feature sets in {cache_dir}/ (make one with `attrib features`)")
        return
    for fs in sets:
        state = _shard_state(fs)
        label = f"  [{fs.label}]" if fs.label else ""
        grown = f" (grown: {len(fs.parts)} parts)" if isinstance(fs, GrownFeatureSet) else ""
        click.echo(f"{fs.path}  {fs.n_images} images{grown}  {fs.n_blocks}x{fs.width}  {state}{label}")


def _shard_state(fs, whole: str = "complete", part: str = "shards") -> str:
    """``whole`` when every shard is there and none damaged, else how many shards are whole and how many
    damaged (cheap checks, no HDF5: see FeatureSet.damaged_shards)."""
    done, damaged = len(fs.shards_done()), len(fs.damaged_shards())
    if done == fs.n_shards and not damaged:
        return whole
    state = f"{done - damaged}/{fs.n_shards} {part}"
    return state + (f", {damaged} DAMAGED (rerun `attrib features`, or `attrib cache verify --repair`)" if damaged
                    else "")


@cache.command("info")
@click.argument("feature_set", type=click.Path())
def cache_info(feature_set: str) -> None:
    """Print the manifest and per-source image counts of FEATURE_SET (and its parts, if it grew)."""
    from attrib.parts import GrownFeatureSet

    fs = _open_fs(feature_set)
    if fs.label:
        click.secho(f"WARNING: {fs.label}", fg="red", bold=True)
    click.echo(json.dumps(fs.manifest.to_json(), indent=2))
    click.echo(f"shards: {_shard_state(fs, f'{fs.n_shards}/{fs.n_shards} complete', 'complete')}, "
               f"{fs.nbytes() / 1e6:.1f} MB")
    for line in fs.describe() if isinstance(fs, GrownFeatureSet) else ():
        click.echo(line)
    counts = fs.images.counts()
    click.echo("images per (source, subset):")
    for (src, sub), n in counts.items():
        click.echo(f"  {src:28s} {sub:6s} {n}")


@cache.command("verify")
@click.argument("feature_set", type=click.Path())
@click.option("--max-failed", type=int, default=50, show_default=True, help="Failed images to list.")
@click.option("--repair", is_flag=True, help="Remove the broken shards found (truncated, empty, holding other rows, "
              "checksum mismatch), so that rerunning `attrib features` with the same options re-extracts them.")
def cache_verify(feature_set: str, max_failed: int, repair: bool) -> None:
    """Check FEATURE_SET: every shard opens, rows cover the image list once, checksums, features finite in
    ok rows, and the manifest's label against its weights.

    Failed images are listed with their error. Exit status 1 when something is wrong (also after --repair:
    the removed shards are missing until `attrib features` extracts them again).
    """
    fs = _open_fs(feature_set)
    rep = fs.verify()
    click.echo(f"{fs.path}: {rep.n_images} images in {rep.n_shards} shards")
    for k in rep.missing:
        click.echo(f"  MISSING shard {k} ({fs.shard_path(k).name}): rerun `attrib features` with the same options")
    for k, why in rep.broken:
        click.echo(f"  BROKEN {'shard ' + str(k) if k >= 0 else 'feature set'}: {why}")
    for name in rep.leftovers:
        click.echo(f"  note: leftover temporary file {name} (its writer was killed; the file name says on "
                   "which host and pid); delete it once no extraction runs")
    for text in rep.claims:
        click.echo(f"  note: shard claim {text}")
    if rep.nonfinite:
        click.echo(f"  NON-FINITE features in {len(rep.nonfinite)} ok rows, e.g. {rep.nonfinite[:10]}")
    click.echo(f"  {len(rep.failed)} images failed to decode (recorded, excluded from probes)")
    from attrib.data.filenames import escape_path

    for row, path, err in rep.failed[:max_failed]:
        click.echo(f"    row {row}: {escape_path(path)}: {err}")  # printable on any terminal
    if len(rep.failed) > max_failed:
        click.echo(f"    ... and {len(rep.failed) - max_failed} more")
    for note in getattr(rep, "notes", ()):  # a grown feature set's (attrib.parts)
        click.echo(f"  note: {note}")
    if repair:
        removed = fs.remove_broken_shards(rep)
        for k, why in removed:
            click.echo(f"  REMOVED {fs.shard_path(k).name}: {why}")
        if removed:
            raise ProblemsFound(f"removed {len(removed)} broken shard(s) of {fs.path}; rerun `attrib features` with "
                              "the same options to extract them again")
    if not rep.ok:
        raise ProblemsFound("verification failed" + ("" if repair or not any(k >= 0 for k, _ in rep.broken) else
                                                     "; `attrib cache verify --repair` removes the broken shards, "
                                                     "then rerun `attrib features` with the same options"))
    click.echo("OK")


@cache.command("find")
@click.option("--cache", "cache_dir", default=DEFAULT_CACHE, show_default=True, type=click.Path(),
              help="Cache root to search.")
@click.option("--dataset", default=None, help="Dataset name (demo, genimage, or a folder/list name).")
@click.option("--model", default=None, help="Model as given to `attrib features` (a fallback's request counts).")
@click.option("--pretrained", default=None, metavar="TAG|FILE",
              help="Only feature sets extracted with these weights, as given to `attrib features --pretrained` "
              "(a tag, or a checkpoint file matched by path or file name). [default: any weights]")
@click.option("--view", default=None, metavar="SPEC",
              help="Only feature sets of this view (`attrib features --view`; jpeg:75.0 finds jpeg:75). "
              "[default: any view]")
@click.option("--max-per-source", type=click.IntRange(min=1), default=None,
              help="Match the image list `attrib features --max-per-source N` makes (default: unsampled).")
@click.option("--sample-seed", type=int, default=0, show_default=True, help="Seed of --max-per-source.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Match the image list of a --limit N trial (default: no limit).")
@click.option("--splits-dir", type=click.Path(), default=None, metavar="DIR",
              help="Only feature sets extracted with `attrib features --splits-dir DIR` (restricted to the images "
              "of these split files). [default: only unrestricted feature sets]")
@_rows_options
def cache_find(cache_dir, dataset, model, pretrained, view, max_per_source, sample_seed, limit, splits_dir,
               **rows) -> None:
    """Print the newest complete feature set matching the filters (used by `make probe`).

    A feature set matches when `attrib features` with these options would extract into it: the same
    model, weights and view, and the same image list (a --max-per-source N larger than every (source,
    subset) group gives the unsampled list, for example). With --rows-for and --rows-from (and the same
    --seeds, caps and split options): the evaluation rows `attrib features --rows-for` extracted; add
    --view to pick a view. Without them, such subsets are never found.
    """
    from attrib.extract.views import View
    from attrib.manifest import FeatureRequest
    from attrib.store import find_feature_set

    if _given("sample_seed") and not max_per_source:
        raise _refuse_unused("--sample-seed", "with --max-per-source N (it seeds that sample)")
    want_view = View.parse(view).spec if view is not None else None
    rows_sha = None
    if _rows_requested(rows):  # --splits-dir then defines the rows, as in `attrib features --rows-for`
        rows_sha = _rows_target(rows, splits_dir, View.parse(view), None)[2].images.sha256()
        splits_dir = None
    request = FeatureRequest(dataset=dataset, model=model, pretrained=pretrained, view=want_view,
                             max_per_source=max_per_source, sample_seed=sample_seed, limit=limit,
                             splits_dir=str(Path(splits_dir).resolve()) if splits_dir else None, rows_for=rows_sha)
    fs = find_feature_set(cache_dir, request)
    if fs is not None:
        _note_fallback(fs, model, pretrained, cache_dir)
        click.echo(str(fs.path))
        return
    given = {"dataset": dataset, "model": model, "pretrained": pretrained, "view": view,
             "max-per-source": max_per_source, "limit": limit, "splits-dir": splits_dir,
             "rows-for": rows["rows_for"], "rows-from": rows["rows_from"]}
    filters = " ".join(f"--{k} {v}" for k, v in given.items() if v is not None)
    raise ProblemsFound(f"no complete feature set in {cache_dir}/ matches {filters or '(no filters)'}; run "
                        "`make features` (or `attrib features`) with the same options first")


def _note_fallback(fs, model: str | None, pretrained: str | None, cache_dir: str) -> None:
    """Say on stderr when the set found was made by a fallback model, not the model and weights asked for."""
    m = fs.manifest
    if m.requested is None or (model in (None, m.model) and pretrained in (None, m.weights)):
        return
    asked = " ".join(x for x in (model, pretrained) if x)
    wanted = " ".join(x for x in (m.requested.model, m.requested.pretrained) if x)
    click.secho(f"note: asked for {asked}, but {cache_dir}/ holds only a FALLBACK for it: {fs.id}, extracted with "
                f"{m.model} ({m.weights}) because {wanted} was unavailable" + (f" [{fs.label}]" if fs.label else ""),
                fg="yellow", err=True)


# ------------------------------------------------------------------------------------------ probe
def _refuse_split_file_options(splits_dir: str | None, allow_missing: bool) -> None:
    """--allow-missing and --known-test only change how the paper's split files (--splits-dir) are read."""
    if splits_dir:
        return
    if allow_missing:
        raise _refuse_unused("--allow-missing", "with --splits-dir DIR (images the split files name but the "
                             "feature set lacks); without it, rows are drawn from the feature set itself")
    if _given("known_test"):
        raise _refuse_unused("--known-test", "with --splits-dir DIR (which split file tests the known classes)")


def _split_source(fs, splits: str, splits_dir: str | None, split_file: str | None, caps: dict,
                  known_test: str, allow_missing: bool):
    """The SplitSource of `attrib probe`: POSE files (--splits-dir), a YAML/JSON file, or built-in splits."""
    from attrib.data.pose import PoseSplits
    from attrib.data.sampling import SampledSplits
    from attrib.data.splitfile import load_split_file
    from attrib.data.splits import SplitError, builtin_splits, select_splits
    from attrib.union import split_images

    kind = fs.manifest.kind
    ok, _ = fs.status()
    defined = load_split_file(split_file) if split_file else None
    available = defined if defined is not None else builtin_splits(kind)
    images = split_images(fs, available.values())  # a union's source names, as the splits use them
    # the caps the user gave ('all' = no cap); the others keep the split source's own defaults
    given = {k: None if v == "all" else v for k, v in caps.items() if v is not None}
    if splits_dir:
        return PoseSplits(images, ok, splits_dir, defined, kind, known_test=known_test,
                          allow_missing=allow_missing, only=splits, **given)
    if not available:
        raise SplitError(f"feature set {fs.id} ({kind}) has no built-in splits (only demo and genimage do): "
                         f"name known and unknown sources with --split-file FILE, or use --splits-dir DIR")
    return SampledSplits(images, ok, select_splits(available, splits), **given)


def _probe_features(paths: tuple[str, ...], eval_paths: tuple[str, ...]):
    """(training features, evaluation features or None) of `attrib probe`: a feature set, or the union of
    several; evaluation features of another backbone are refused before anything is read. Warning labels
    (random-init) are shown once each."""
    from attrib.probe.evalrows import check_same_backbone
    from attrib.union import open_features

    fs = open_features(paths, "--features")
    eval_fs = open_features(eval_paths, "--eval-features") if eval_paths else None
    if eval_fs is not None:
        check_same_backbone(fs, eval_fs)
    labelled: dict[str, list[str]] = {}
    for x in (fs, eval_fs):
        if x is not None and x.label:
            labelled.setdefault(x.label, []).append(x.id)
    for label, ids in labelled.items():
        _banner(f"{', '.join(ids)}: {label}")
    return fs, eval_fs


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
              help="Where the study's per-block feature arrays go while it runs (removed after). [default: "
              "$TMPDIR; with --backend dask give a folder every worker can read]")
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

    _refuse_split_file_options(splits_dir, allow_missing)
    fs, eval_fs = _probe_features(features_path, opts["eval_paths"])
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    source = _split_source(fs, splits, splits_dir, split_file, {
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
    from attrib.probe.study import StudyConfig

    conds = conditions(parse_perturbations(perturb), parse_intensities(intensities))
    clean = _open_fs(features_path)
    if clean.label:
        _banner(f"{clean.id}: {clean.label}")
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    caps = {k: opts[k] for k in ("train_per_class", "val_per_class", "test_per_class")}
    _refuse_split_file_options(opts["splits_dir"], opts["allow_missing"])
    sources: dict = {}

    def source_for(fs):
        if fs.path not in sources:
            sources[fs.path] = _split_source(fs, opts["splits"], opts["splits_dir"], opts["split_file"], caps,
                                             opts["known_test"], opts["allow_missing"])
        return sources[fs.path]

    def config_for(fs):
        cfg = StudyConfig(splits=source_for(fs), layers=opts["layers"].resolve(fs.n_blocks), heads=opts["heads"],
                          scores=opts["scores"], shots=opts["shots"], seeds=opts["seeds"], protocol=opts["protocol"],
                          grid=dict(opts["grid"]), jobs=opts["jobs"])
        cfg.validate()
        return cfg

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
        _banner(f"this head was trained on {saved.label}")
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
        _banner(f"this head was trained on {saved.label}")
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


if __name__ == "__main__":  # pragma: no cover
    main()
