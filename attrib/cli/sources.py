"""What a study reads: its feature sets (one, a union, training + evaluation) and its split source
(built-in, a split file, or the paper's split files); shared by `probe`, `robustness` and `features --rows-for`."""

from __future__ import annotations



from attrib.cli.common import banner, option_given, refuse_unused


# ------------------------------------------------------------------------------------------ probe
def refuse_split_file_options(splits_dir: str | None, allow_missing: bool) -> None:
    """--allow-missing and --known-test only change how the paper's split files (--splits-dir) are read."""
    if splits_dir:
        return
    if allow_missing:
        raise refuse_unused("--allow-missing", "with --splits-dir DIR (images the split files name but the "
                             "feature set lacks); without it, rows are drawn from the feature set itself")
    if option_given("known_test"):
        raise refuse_unused("--known-test", "with --splits-dir DIR (which split file tests the known classes)")


def split_source(fs, splits: str, splits_dir: str | None, split_file: str | None, caps: dict,
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


def study_features(paths: tuple[str, ...], eval_paths: tuple[str, ...]):
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
        banner(f"{', '.join(ids)}: {label}")
    return fs, eval_fs
