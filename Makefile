# The toolkit's jobs. `make help` lists them. Every stage reruns on another dataset by naming it:
#   make preprocess MANIFEST=manifests/industrial-parts.toml
#   make train DATA=data/industrial-parts RUN=runs/industrial-parts PRESET=paper
SHELL := /bin/bash
VENV ?= $(or $(APS_VENV),$(HOME)/.cache/aps/venv)
PY := $(VENV)/bin/python
APS := $(VENV)/bin/aps
MANIFEST ?= manifests/industrial-demo.toml
DATASET ?= $(basename $(notdir $(MANIFEST)))
DATA ?= data/$(DATASET)
RUN ?= runs/$(DATASET)
REPORT ?= reports/$(DATASET)
PRESET ?= cpu
TIME_BUDGET ?=
EPOCHS ?=
SCHEDULER ?= local
EPOCHS_FLAG := $(if $(EPOCHS),--epochs $(EPOCHS),)
BUDGET_FLAG := $(if $(TIME_BUDGET),--time-budget $(TIME_BUDGET),)
# the demo: the cpu preset (the best found for 2 cores) for 6 minutes; docs/RESULTS.md, "The demo"
DEMO_BUDGET ?= 6m

STAGE ?= search

.PHONY: help setup demo preprocess train eval test lint bench clean ablation cpu-quality

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

setup:  ## install system packages, the virtualenv (~/.cache/aps/venv, or APS_VENV) and the project
	bash scripts/setup.sh

demo: setup  ## set up, then preprocess, train (the cpu preset, 6 minutes) and evaluate the built-in demo dataset
	@started=$$(date +%s); \
	for stage in preprocess train eval; do \
	  t=$$(date +%s); $(MAKE) --no-print-directory $$stage PRESET=cpu TIME_BUDGET=$(DEMO_BUDGET) || exit $$?; \
	  times="$$times$${times:+, }$$stage $$(( $$(date +%s) - t )) s"; \
	done; \
	echo "demo: done in $$(( ($$(date +%s) - started + 30) / 60 )) min ($$times)."; \
	echo "  look:  $(REPORT)/report.html (every test part turning in 3D beside its ground truth; offline)"; \
	echo "  photo: $(APS) reconstruct PHOTO.jpg --checkpoint $(RUN) --out recon/"; \
	echo "  more:  make preprocess train eval MANIFEST=manifests/industrial-parts.toml TIME_BUDGET=60m (133 parts, the cpu preset's hour)"

preprocess:  ## meshes -> zarr store (MANIFEST=..., DATA=...)
	$(APS) preprocess --manifest $(MANIFEST) --out $(DATA) --scheduler $(SCHEDULER)

train:  ## store -> checkpoints in RUN (DATA=..., RUN=..., PRESET=cpu|cpu-demo|paper, TIME_BUDGET=60m, EPOCHS=...)
	$(APS) train --data $(DATA) --out $(RUN) --preset $(PRESET) $(BUDGET_FLAG) $(EPOCHS_FLAG)

eval:  ## checkpoint + store -> meshes, metrics, pictures in REPORT
	$(APS) eval --checkpoint $(RUN) --data $(DATA) --out $(REPORT)

test:  ## run the test suite
	$(PY) -m pytest -q

lint:  ## ruff over the code
	$(VENV)/bin/ruff check aps common pipeline trainer inference evaluation reconstruct experiments tests benchmarks scripts

ablation:  ## paper Table 2 ablation, fixed-s sweep, training speed on the full industrial dataset (docs/RESULTS.md; ABLATION_FLAGS=--full on a GPU)
	$(PY) -m experiments.ablation --manifest manifests/industrial-parts.toml --data data/industrial-parts --out reports/ablation $(ABLATION_FLAGS)

cpu-quality:  ## quality per CPU-hour study: time-budgeted runs on the industrial parts (docs/RESULTS.md; STAGE=search|...)
	$(PY) -m experiments.cpu_quality --stage $(STAGE) --data data/industrial-parts --out reports/cpu_quality

bench:  ## print the speed and size figures of each stage
	$(PY) benchmarks/bench_preprocess.py

clean:  ## remove generated data, runs and reports (not the virtualenv)
	rm -rf data runs reports
