"""Studies: sweep splits x layers x heads x scores x shots x seeds over one feature set.

Every finished (split, layer, head, score, shots, seed, protocol, ``--param`` settings) becomes one JSON
line in ``results.jsonl`` (:mod:`attrib.probe.results`), appended as soon as it is known (with ``--jobs
N``: when its job ends), so an interrupted study resumes without redoing finished lines.

With evaluation features (``eval_fs``: ``attrib probe --eval-features``), split rows are drawn from the
training features' image list and the validation and test rows are read from ``eval_fs``, matched by
image (:mod:`attrib.probe.evalrows`).

Why the work is cut into (split, layer, shots, seed) jobs: those are independent and each needs one
feature matrix, while the heads and scores of a job share it (and the scores share the fitted head);
a job's work is :mod:`attrib.probe.job`. The blocks a study needs are read once into a
:class:`~attrib.probe.featcache.FeatureCache` that the jobs (and their worker processes) share.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from attrib.data.splits import SplitRows, SplitSource
from attrib.output_paths import make_folder
from attrib.probe.evalrows import EVAL_PARTS, EvalRows, feature_ids
from attrib.probe.featcache import feature_cache
from attrib.probe.heads import HEADS
from attrib.probe.job import (Job, counted_warnings, path_summary, rows_digest, run_job, warm_up,  # noqa: F401 (re-exported)
                              shots_subset)
from attrib.probe.options import StudyError
from attrib.probe.params import Setting, resolve_params
from attrib.probe.protocol import PROTOCOLS, path_values
from attrib.probe.results import RESULTS, appending, check_compatible, exclusive, line_key, read_results, repair_tail
from attrib.probe.scorers import SCORERS
from attrib.probe.shots import shots_notes
from attrib.store import FeatureSet, identity_hash

DEFAULT_TPR = 0.95
BACKENDS = ("local", "dask")


@dataclass
class StudyConfig:
    splits: SplitSource
    layers: list[tuple[int, ...]]
    heads: list[str] = field(default_factory=lambda: ["logreg"])
    scores: list[str] = field(default_factory=lambda: ["msp"])
    shots: list[int | None] = field(default_factory=lambda: [None])
    seeds: int = 1
    protocol: str = "clean"
    grid: dict[str, list] = field(default_factory=dict)
    jobs: int = 1
    tpr: float = DEFAULT_TPR
    backend: str = "local"  # local: --jobs processes on this machine; dask: the workers of --scheduler
    scheduler: str | None = None
    scratch: str | None = None  # where the per-block feature cache goes (shared storage for a cluster)
    params: list[Setting] = field(default_factory=list)  # --param NAME.KEY=VALUE, parsed
    save_scores: bool = False

    def validate(self) -> None:
        self.heads, self.scores = list(dict.fromkeys(self.heads)), list(dict.fromkeys(self.scores))
        self.layers, self.shots = list(dict.fromkeys(self.layers)), list(dict.fromkeys(self.shots))
        if self.protocol not in PROTOCOLS:
            raise StudyError(f"--protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        for opt, names, registry in (("--heads", self.heads, HEADS), ("--scores", self.scores, SCORERS)):
            bad = [n for n in names if n not in registry]
            if bad or not names:
                raise StudyError(f"{opt}: {', '.join(bad) or 'nothing'} not available; available: "
                                 f"{', '.join(registry)}")
        self._validate_grid()
        head_params = self.estimator_params()[0]
        for h in self.heads:  # like a bad --grid value, a setting the machine cannot run fails up front
            try:
                HEADS[h](**head_params.get(h, {})).check_params()
            except ValueError as exc:
                raise StudyError(f"--param for {h}: {exc}") from None
        if self.seeds < 1:
            raise StudyError("--seeds must be at least 1")
        if self.jobs == 0 or self.jobs < -1:
            raise StudyError(f"--jobs {self.jobs}: use a positive number of processes, or -1 for all CPUs")
        if self.backend not in BACKENDS:
            raise StudyError(f"--backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if (self.backend == "dask") != (self.scheduler is not None):
            raise StudyError("--backend dask needs --scheduler ADDRESS (e.g. tcp://head-node:8786), and "
                             "--scheduler is only for --backend dask")
        if any(s is not None and s < 1 for s in self.shots) or not self.shots:
            raise StudyError("--shots: use positive integers and 'all'")

    def _validate_grid(self) -> None:
        params = {HEADS[h].path_param for h in self.heads}
        bad = [p for p in self.grid if p not in params]
        if bad:
            raise StudyError(f"--grid {', '.join(bad)}: no chosen head sweeps it (the heads sweep: "
                             f"{', '.join(sorted(p for p in params if p)) or 'nothing'})")
        for h in self.heads:  # a bad value would fail every line of the study, one by one
            param = HEADS[h].path_param
            if param in self.grid:
                try:
                    HEADS[h].check_path(self.grid[param])
                except ValueError as exc:
                    raise StudyError(f"--grid {param}={','.join(map(str, self.grid[param]))}: {exc}") from None

    def estimator_params(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """(head_params, score_params) of ``--param``, by head / score name (checked: see resolve_params)."""
        return resolve_params(self.params, self.heads, self.scores, HEADS, SCORERS)

    def pairs(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(supported, skipped) (head, score) pairs: a scorer that cannot read a head is skipped."""
        ok, skipped = [], []
        for h in self.heads:
            probe = HEADS[h]()
            for s in self.scores:
                (ok if SCORERS[s].supports(probe) else skipped).append((h, s))
        return ok, skipped


# ----------------------------------------------------------------------------------------- a study
@dataclass
class StudyRun:
    results: Path
    written: int = 0
    skipped_done: int = 0
    errors: list[str] = field(default_factory=list)
    skipped_pairs: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def stderr_log(msg: str) -> None:
    """The default `log` of a study and of `--save-head`: one line on stderr, apart from the tables on stdout."""
    print(msg, file=sys.stderr)


def run_study(fs: FeatureSet, cfg: StudyConfig, out_dir: str | os.PathLike, progress: bool = True,
              log: Callable[[str], None] = stderr_log, eval_fs: FeatureSet | None = None) -> StudyRun:
    """Run every missing line of the study into ``out_dir/results.jsonl``.

    ``fs`` and ``eval_fs`` are feature sets or unions of several (:class:`attrib.union.FeatureUnion`);
    with ``eval_fs``, validation and test rows are read from it (the module docstring says how).
    """
    cfg.validate()
    out_dir = make_folder(out_dir, "--out", StudyError)
    with exclusive(out_dir):
        t0 = time.perf_counter()
        run = StudyRun(out_dir / RESULTS)
        jobs = _plan(fs, cfg, run, log, eval_fs)
        if jobs:
            _execute(fs, cfg, jobs, run, progress, eval_fs)
        run.seconds = time.perf_counter() - t0
        return run


def study_meta(fs: FeatureSet, eval_fs: FeatureSet | None) -> dict[str, Any]:
    """What every result line of a study records about its features (the training and evaluation sets)."""
    ev = fs if eval_fs is None else eval_fs
    labels = list(dict.fromkeys(lab for lab in (fs.label, ev.label) if lab))
    return {"feature_set": fs.id, "feature_hash": identity_hash(fs.manifest), "label": "; ".join(labels),
            "features": feature_ids(fs), "eval_features": feature_ids(ev),
            "eval_feature_hash": identity_hash(ev.manifest)}


def _plan(fs: FeatureSet, cfg: StudyConfig, run: StudyRun, log: Callable[[str], None],
          eval_fs: FeatureSet | None = None) -> list[Job]:
    """The jobs with lines still missing from ``run.results`` (repaired first), after checking that
    their lines can join those already there."""
    results = run.results
    torn = repair_tail(results)
    if torn:
        log(f"{results}: cut a torn last line ({torn} bytes) left by an interrupted run; it is redone")
    existing = read_results(results) if results.exists() else []
    done = {line_key(d): bool(d.get("scores_file")) for d in existing}  # key -> has saved scores

    pairs, run.skipped_pairs = cfg.pairs()
    if run.skipped_pairs:
        log("skipped (score cannot use this head): " + ", ".join(f"{h}+{s}" for h, s in run.skipped_pairs))
    if not pairs:
        raise StudyError("no (head, score) pair is supported: choose other --heads / --scores")
    meta = study_meta(fs, eval_fs)
    rows_of: dict[tuple[str, int], SplitRows] = {
        (name, seed): cfg.splits.rows(name, seed) for name in cfg.splits.names() for seed in range(cfg.seeds)}
    eval_rows_of = EvalRows(fs, eval_fs).map(rows_of) if eval_fs is not None else {}
    digests = {key: rows_digest(rows) for key, rows in rows_of.items()}
    paths = {h: path_summary(HEADS[h], path_values(HEADS[h], cfg.grid)) for h in cfg.heads}
    check_compatible(existing, meta["feature_set"], meta["feature_hash"], digests, paths, results,
                     eval_features=meta["eval_features"], eval_hash=meta["eval_feature_hash"])
    if cfg.protocol == "paper":
        for (name, _seed), rows in rows_of.items():
            if not len(rows.val_unknown):
                raise StudyError(f"--protocol paper: split {name} has no validation images of its unknown "
                                 "generators; use --protocol clean")

    splits = {name: cfg.splits.split(name) for name in cfg.splits.names()}
    for note in shots_notes(cfg.shots, rows_of):  # a shots value some class cannot fill
        log(f"note: {note}")
    head_classes, scorer_classes = {h: HEADS[h] for h in cfg.heads}, {s: SCORERS[s] for s in cfg.scores}
    head_params, score_params = cfg.estimator_params()
    image_paths = np.asarray(fs.images.paths, dtype=str) if cfg.save_scores else None
    jobs, without_scores = [], 0
    for name, layer, shots, seed in itertools.product(splits, cfg.layers, cfg.shots, range(cfg.seeds)):
        rows = rows_of[(name, seed)]
        job = Job(splits[name], rows, layer, shots, seed, [], cfg.protocol, cfg.grid, cfg.tpr,
                  {**meta, "rows": digests[(name, seed)]}, head_classes, scorer_classes, head_params, score_params,
                  eval_rows=eval_rows_of.get((name, seed)))
        if image_paths is not None:
            job.scores_dir = str(results.parent)
            job.test_paths = (image_paths[rows.test], image_paths[rows.test_unknown])
        job.todo = [p for p in pairs if job.key(*p) not in done]
        run.skipped_done += len(pairs) - len(job.todo)
        without_scores += sum(1 for p in pairs if job.key(*p) in done and not done[job.key(*p)])
        if job.todo:
            jobs.append(job)
    if cfg.save_scores and without_scores:
        log(f"--save-scores: {without_scores} line(s) already in {results} were computed without it and are not "
            "redone; use a new --out to save their scores too")
    return jobs


def _execute(fs: FeatureSet, cfg: StudyConfig, jobs: list[Job], run: StudyRun, progress: bool,
             eval_fs: FeatureSet | None = None) -> None:
    """Run ``jobs`` (in this process, or ``cfg.jobs`` workers) and append their lines to ``run.results``."""
    from tqdm import tqdm

    train = np.concatenate([j.rows.train for j in jobs])
    evaluated = np.concatenate([getattr(j.evaluated, part) for j in jobs for part in EVAL_PARTS])
    blocks = list(dict.fromkeys(b for j in jobs for b in j.layer))  # read in the order the jobs need them
    with _parallel_backend(cfg), _workers(cfg, len(jobs)) as workers, \
            feature_cache(fs, train, blocks, progress, eval_fs=eval_fs, eval_rows=evaluated,
                          scratch=cfg.scratch) as cache:
        bar = tqdm(total=len(jobs), desc="probe", unit="job", disable=not progress)
        with appending(run.results) as append:
            def write(line: dict) -> None:
                append(line)
                run.written += 1

            if workers is None:  # every line is written the moment it is computed
                done_jobs = (run_job(j, cache, write) for j in jobs)
            else:  # a worker's lines come back when its whole job is done
                done_jobs = workers.run(jobs, cache)
            for lines, errors in done_jobs:
                for line in lines:
                    write(line)
                run.errors.extend(errors)
                bar.update()
        bar.close()


class _Workers:
    """joblib workers for a study's jobs, started before the features are read.

    Why: a fresh worker spends seconds importing torch and scikit-learn before its first job (about 4 s
    each on a 2-core machine), and reading the study's blocks into the feature cache takes the main
    process as long or longer. Warm-up tasks, sent as soon as the pool exists, let both happen at once.
    """

    def __init__(self, parallel: Any, n_warm: int):
        from joblib import delayed

        self.parallel = parallel
        self._warming = parallel(delayed(warm_up)() for _ in range(n_warm)) if n_warm else None

    def run(self, jobs: list[Job], cache: Any) -> Iterator[tuple[list[dict], list[str]]]:
        """The jobs' (lines, errors), in the order they finish."""
        from joblib import delayed

        self.settle()
        return self.parallel(delayed(run_job)(j, cache) for j in jobs)

    def settle(self) -> None:
        """Wait for the warm-up tasks: joblib runs one call of a pool at a time."""
        warming, self._warming = self._warming, None
        for _ in warming or ():
            pass


@contextlib.contextmanager
def _workers(cfg: StudyConfig, n_jobs: int) -> Iterator[_Workers | None]:
    """The study's workers (None: the jobs run in this process, ``--jobs 1``). On this machine they are
    warmed up (:class:`_Workers`); a cluster's workers (``--backend dask``) are long-lived already."""
    if cfg.jobs == 1 and cfg.backend == "local":
        yield None
        return
    from joblib import Parallel, effective_n_jobs

    local = cfg.backend == "local"
    # batch_size=1: a job takes seconds, so one job per dispatch keeps the workers evenly loaded (joblib's
    # "auto" would learn from the instant warm-up tasks to send several at once)
    with Parallel(n_jobs=cfg.jobs if local else -1, return_as="generator_unordered", batch_size=1) as parallel:
        workers = _Workers(parallel, min(effective_n_jobs(cfg.jobs), n_jobs) if local else 0)
        try:
            yield workers
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped the study is the one to report
                workers.settle()
            raise


@contextlib.contextmanager
def _parallel_backend(cfg: StudyConfig) -> Iterator[None]:
    """joblib's backend for the study's jobs: its own process pool, or a dask cluster's workers.

    Why joblib's dask backend rather than a scheduler of our own: the jobs, their order and their lines
    stay exactly those of ``--jobs N`` (so results are identical), and dask brings the cluster tooling
    (SLURM/Kubernetes deployment, dashboards, worker restarts) users already run.
    """
    if cfg.backend == "local":
        yield
        return
    try:
        from distributed import Client
    except ImportError:
        raise StudyError("--backend dask needs dask's distributed scheduler: pip install 'attrib[dask]'") from None
    from joblib import parallel_config

    try:
        client = Client(cfg.scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise StudyError(f"--scheduler {cfg.scheduler}: cannot reach the dask scheduler ({exc}); start one "
                         "(dask scheduler / dask worker, or dask-jobqueue) and give its address") from None
    try:
        with parallel_config(backend="dask"):
            yield
    finally:
        client.close()
