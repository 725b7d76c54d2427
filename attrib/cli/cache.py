"""`attrib cache ls | info | verify | find`: the feature sets in a cache folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from attrib.cli_options import (DEFAULT_CACHE)
from attrib.errors import ProblemsFound
from attrib.cli.features import rows_options, rows_requested, rows_target
from attrib.cli.common import option_given, open_fs, refuse_unused, main


# ------------------------------------------------------------------------------------------ cache
@main.group()
def cache() -> None:
    """Inspect feature sets: ls, info, verify, find."""



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

    fs = open_fs(feature_set)
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
    fs = open_fs(feature_set)
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
@rows_options
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

    if option_given("sample_seed") and not max_per_source:
        raise refuse_unused("--sample-seed", "with --max-per-source N (it seeds that sample)")
    want_view = View.parse(view).spec if view is not None else None
    rows_sha = None
    if rows_requested(rows):  # --splits-dir then defines the rows, as in `attrib features --rows-for`
        rows_sha = rows_target(rows, splits_dir, View.parse(view), None)[2].images.sha256()
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
