"""What a user may choose, and the defaults, as the command line's --help states them.

Why a copy of names that live elsewhere: the registries and constants they come from (``HEADS`` in
:mod:`attrib.probe.heads`, ``PRECISIONS`` in :mod:`attrib.extract.runner`, ...) sit in modules that import
scikit-learn, torch or h5py, which take seconds to load, and ``attrib COMMAND --help`` must start at once.
This module imports nothing. ``tests/test_cli_options.py`` checks every value here against the module
that owns it, in order, so --help cannot disagree with the code: change both, or that test fails.
"""

from __future__ import annotations

# attrib.data.DATASETS, attrib.data.DEFAULT_DEMO_ROOT
DATASETS = ("demo", "genimage", "folder", "list")
DEFAULT_DEMO_ROOT = "data/demo"

# attrib.extract.backbone
DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"
TINY = "attrib-tiny"
RANDOM_INIT = "random-init"

# attrib.extract.runner: PRECISIONS and RunConfig's defaults
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEFAULT_BATCH_SIZE = 64

# attrib.store.DEFAULT_SHARD_SIZE
DEFAULT_SHARD_SIZE = 10_000

# attrib.extract.views.VIEWS, PAPER_VIEWS and NAMED_VIEWS (keys, in order), each with an example value
# for --help (None: a view that takes no value)
VIEW_EXAMPLES = {"jpeg": "75", "blur": "1", "noise": "5", "brightness": "1.2", "contrast": "0.8",
                 "saturation": "0.5", "rotate": "10", "resize": "0.5",
                 "shortside": "352", "blurk": "9", "rcrop": "0.125", "paper-train-aug": None}

# attrib.extract.views.PAPER_INTENSITIES (keys, in order): the paper's test-time perturbations
PERTURBATIONS = ("resize", "blur", "jpeg", "crop")

# attrib.probe.heads.HEADS and attrib.probe.scorers.SCORERS (keys, in order)
HEADS = ("logreg", "knn", "ncm", "gauss", "knn-paper")
SCORERS = ("msp", "maxlogit", "energy", "gen", "knn", "mahalanobis", "rmds", "ncm", "vim")

# attrib.probe.heads.DEFAULT_CS == 10 ** linspace(*DEFAULT_LOG10_C), and DEFAULT_KS
DEFAULT_LOG10_C = (-6, 5, 45)
DEFAULT_KS = tuple(range(1, 21))

# attrib.probe.study.BACKENDS
BACKENDS = ("local", "dask")

# attrib.probe.protocol.PROTOCOLS
PROTOCOLS = ("clean", "paper")

# attrib.probe.report.MAIN_METRICS (keys, in order): the conventions of `attrib report --metrics`
REPORT_METRICS = ("standard", "paper")

# attrib.data.sampling and attrib.data.pose: per-class caps of sampled splits, and of POSE validation files
DEFAULT_TRAIN_PER_CLASS = 4000
DEFAULT_VAL_PER_CLASS = 1000
DEFAULT_TEST_PER_CLASS = 4000
POSE_PER_CLASS = 4000
# the POSE file the known classes are tested on (PoseSplits' known_test)
KNOWN_TEST = ("test", "val")

# attrib.probe.study.DEFAULT_TPR: the share of known validation images a saved head's threshold accepts
DEFAULT_TPR = 0.95

# attrib.probe.enroll.DEFAULT_HOLDOUT: the share of an enrolment's images held out to validate it
DEFAULT_HOLDOUT = 0.2

# attrib.predict.FORMATS
FORMATS = ("csv", "jsonl")
