# attrib: `make demo` runs the whole pipeline offline; `make test` runs the test suite.
# Every target creates the virtual environment (.venv) on first use. Variables map one-to-one to CLI
# options (see `attrib features --help`, `attrib probe --help`); defaults run the demo.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
ATTRIB      := $(BIN)/attrib
STAMP       := $(VENV)/.attrib-installed

# stage 1: attrib features
DATASET     ?= demo
ROOT        ?=
LIST        ?=
MODEL       ?= ViT-B-16
PRETRAINED  ?= laion2b_s34b_b88k
FALLBACK    ?=
VIEW        ?= none
CACHE       ?= cache
SHARD_SIZE  ?=
BATCH_SIZE  ?= 64
WORKERS     ?=
DEVICE      ?= auto
PRECISION   ?= auto
THREADS     ?=
LIMIT       ?=
MAX_PER_SOURCE ?=
# the paper's split files (POSE format): features extracts exactly their images, probe uses them
SPLITS_DIR  ?=
# stage 2: attrib probe (FEATURES defaults to the newest feature set matching the variables above)
FEATURES    ?=
SPLITS      ?= all
SPLIT_FILE  ?=
PROTOCOL    ?= clean
LAYERS      ?= all
HEADS       ?= logreg
SCORES      ?= msp
SHOTS       ?= all
SEEDS       ?= 1
JOBS        ?= 1
RESULTS     ?= results/$(DATASET)
# the robustness study (attrib robustness) on FEATURES or the feature set above, with the study variables
# of stage 2: the paper's perturbations (resize, blur, jpeg, crop, or all) at its levels 1-5; TRAIN_VIEW=
# paper-train-aug also trains on augmented features. Defaults: a quick demo run (2 x 2 conditions).
PERTURB     ?= jpeg,blur
INTENSITIES ?= 1,5
TRAIN_VIEW  ?=
ROBUST_OUT  ?= results/$(DATASET)-robustness

# make paper: the paper's table (Cioni et al.) beside attrib's replication of it; see docs/paper.md.
# LAYERS given on the command line wins; else the paper's block (index 7 of 12) or, for a model of another
# depth (attrib-tiny's 4 blocks on the offline demo: block 2), the block at the same relative depth.
PAPER_LAYERS = $(if $(filter file,$(origin LAYERS)),paper,$(LAYERS))
PAPER_RESULTS ?= results/$(DATASET)-paper
# the paper's code tests known classes on splitN_val.txt (with SPLITS_DIR, its split files)
PAPER_KNOWN_TEST ?= val

opt = $(if $(strip $(2)),$(1) $(2))

FEATURE_ARGS = --dataset $(DATASET) $(call opt,--root,$(ROOT)) $(call opt,--list,$(LIST)) \
	--model $(MODEL) --pretrained "$(PRETRAINED)" $(call opt,--fallback-model,$(FALLBACK)) \
	--view $(VIEW) --cache $(CACHE) $(call opt,--shard-size,$(SHARD_SIZE)) --batch-size $(BATCH_SIZE) \
	$(call opt,--workers,$(WORKERS)) $(call opt,--threads,$(THREADS)) --device $(DEVICE) --precision $(PRECISION) \
	$(call opt,--limit,$(LIMIT)) $(call opt,--max-per-source,$(MAX_PER_SOURCE)) $(call opt,--splits-dir,$(SPLITS_DIR))
FIND_ARGS = --cache $(CACHE) --dataset $(DATASET) --model $(MODEL) --pretrained "$(PRETRAINED)" --view $(VIEW) \
	$(call opt,--limit,$(LIMIT)) $(call opt,--max-per-source,$(MAX_PER_SOURCE)) $(call opt,--splits-dir,$(SPLITS_DIR))
STUDY_ARGS = --splits $(SPLITS) $(call opt,--splits-dir,$(SPLITS_DIR)) $(call opt,--split-file,$(SPLIT_FILE)) \
	--protocol $(PROTOCOL) --layers "$(LAYERS)" --heads $(HEADS) \
	--scores $(SCORES) --shots $(SHOTS) --seeds $(SEEDS) --jobs $(JOBS)
PROBE_ARGS = $(STUDY_ARGS) --out $(RESULTS)
ROBUST_ARGS = --perturb $(PERTURB) --intensities $(INTENSITIES) $(call opt,--train-view,$(TRAIN_VIEW)) \
	--cache $(CACHE) --batch-size $(BATCH_SIZE) $(call opt,--workers,$(WORKERS)) --device $(DEVICE) \
	--precision $(PRECISION) $(STUDY_ARGS) --out $(ROBUST_OUT)

.PHONY: help install demo features probe report paper robustness test test-slow test-all test-quick bench clean-demo shell lint

help:
	@echo "make demo       build the offline demo dataset, extract features, probe, print the table"
	@echo "make features   stage 1 (DATASET=demo|genimage|folder|list ROOT=... MODEL=... PRETRAINED=...)"
	@echo "make probe      stage 2 on the newest matching feature set (or FEATURES=cache/...)"
	@echo "make paper      the paper's table beside attrib's replication (demo offline; ROOT=/data/GenImage for real)"
	@echo "make robustness train clean, evaluate on perturbed views (PERTURB=jpeg,blur INTENSITIES=1,5 TRAIN_VIEW=)"
	@echo "make test       the test suite without the tests marked slow (a few minutes)"
	@echo "make test-slow  the slow end-to-end tests (CI runs both); make test-all: everything at once"
	@echo "make bench      the benchmarks (tens of minutes; one: make bench-NAME, e.g. bench-protocol)"
	@echo "make bench-fulldata  full-data probes on 100k, 300k and 1.3M synthetic rows (not in make bench)"
	@echo "make lint       ruff check (rules in pyproject.toml)"
	@echo "make shell      a shell with .venv active, so 'attrib' is on PATH (or: source .venv/bin/activate)"

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

features: $(STAMP)
	$(ATTRIB) features $(FEATURE_ARGS)

probe: $(STAMP)
	@fs="$(FEATURES)"; \
	if [ -z "$$fs" ]; then fs=$$($(ATTRIB) cache find $(FIND_ARGS)) || exit 1; fi; \
	echo "$(ATTRIB) probe --features $$fs $(PROBE_ARGS)"; \
	$(ATTRIB) probe --features "$$fs" $(PROBE_ARGS)

report: $(STAMP)
	$(ATTRIB) report $(RESULTS)

# Extracts the features first when no matching feature set is cached (on the demo, with the offline
# attrib-tiny fallback, as `make demo` does), then the views the study needs, then the study.
robustness: $(STAMP)
	@fs="$(FEATURES)"; \
	if [ -z "$$fs" ]; then \
		fs=$$($(ATTRIB) cache find $(FIND_ARGS) 2>/dev/null) || { \
			$(MAKE) --no-print-directory features FALLBACK="$(or $(FALLBACK),$(if $(filter demo,$(DATASET)),attrib-tiny))" \
			&& fs=$$($(ATTRIB) cache find $(FIND_ARGS)); } || exit 1; \
	fi; \
	echo "$(ATTRIB) robustness --features $$fs $(ROBUST_ARGS)"; \
	$(ATTRIB) robustness --features "$$fs" $(ROBUST_ARGS)

# The demo asks for the paper's model; with no network and no cached weights it falls back, loudly, to
# the built-in random-init attrib-tiny (a pipeline check, not CLIP features).
demo: $(STAMP)
	$(MAKE) --no-print-directory features probe DATASET=demo FALLBACK=attrib-tiny

# The paper's setup: features with the paper's preprocessing (bicubic for training, bilinear for evaluation),
# logreg + MSP at the paper's block under --protocol paper, trained on one set and evaluated on the other,
# then its table beside the published one. Offline, DATASET=demo falls back (loudly) to random-init
# attrib-tiny: a pipeline check, labelled so in every table, not a replication.
paper: FALLBACK := $(or $(FALLBACK),$(if $(filter demo,$(DATASET)),attrib-tiny))
paper: $(STAMP)
	@train=$$($(ATTRIB) features $(FEATURE_ARGS) --preprocess paper-train) || exit 1; \
	train=$$(echo "$$train" | tail -n 1); \
	eval=$$($(ATTRIB) features $(FEATURE_ARGS) --preprocess paper) || exit 1; \
	eval=$$(echo "$$eval" | tail -n 1); \
	layers="$(PAPER_LAYERS)"; \
	if [ "$$layers" = paper ]; then layers=$$($(BIN)/python -m attrib.probe.published block "$$train") || exit 1; fi; \
	set -x; \
	$(ATTRIB) probe --features "$$train" --eval-features "$$eval" --splits $(SPLITS) \
		$(call opt,--splits-dir,$(SPLITS_DIR)) $(if $(SPLITS_DIR),--known-test $(PAPER_KNOWN_TEST)) \
		$(call opt,--split-file,$(SPLIT_FILE)) --protocol paper --layers "$$layers" --heads logreg --scores msp \
		--seeds 1 --jobs $(JOBS) --save-scores --quiet --out $(PAPER_RESULTS) || exit 1; \
	$(ATTRIB) report $(PAPER_RESULTS) --metrics paper || exit 1; \
	$(BIN)/python -m attrib.probe.published table $(PAPER_RESULTS)

# `make test` leaves out the tests marked @pytest.mark.slow (real processes, end-to-end runs, a browser:
# more than ~5 s each) so that it stays a few minutes; CI (.ci/run) runs `make test-slow` after it.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m attrib.bench

bench-%: $(STAMP)
	$(BIN)/python -m attrib.bench $* $(BENCH_ARGS)

test-quick: test  # the name this target had before `make test` left the slow tests out

lint: $(STAMP)
	$(BIN)/ruff check .

# The CLI lives in $(VENV)/bin/attrib: this opens a shell with the virtual environment active (`exit` leaves).
shell: $(STAMP)
	@echo "$(VENV) is active in this shell: attrib is on PATH ('exit' to leave)"
	@VIRTUAL_ENV="$(abspath $(VENV))" PATH="$(abspath $(BIN)):$$PATH" $${SHELL:-/bin/sh}

clean-demo:
	rm -rf data/demo results/demo results/demo-paper results/demo-robustness $(CACHE)/demo__*
