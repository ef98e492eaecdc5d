# Two commands matter: `make demo` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := demo_data
DEMO_ARGS ?=

.PHONY: install demo demo-data test faults bench bench-peers bench-gpu clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo-data: $(DEMO_DATA)/.complete

# Rebuilt when the generator changes (a new evaluation set), so an older demo_data is never evaluated as new.
$(DEMO_DATA)/.complete: data/synth.py data/scenes.py data/captions.py | $(STAMP)
	$(BIN)/contrastive data synth $(DEMO_DATA)
	$(BIN)/contrastive data inspect $(DEMO_DATA)/train
	touch $@

# Trains the tiny CLIP (a finished run is not retrained: `rm -rf runs/demo` to start over), then prints
# its evaluation. Any loss: make demo DEMO_ARGS='loss.name=siglip run_dir=runs/demo-siglip'
demo: demo-data
	$(BIN)/contrastive train -c demo $(DEMO_ARGS)
	$(BIN)/python -m contrastive.demo_summary $(DEMO_DATA) $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest

# The whole fault-injection suite (a fast subset of it is part of `make test`).
faults: $(STAMP)
	CONTRASTIVE_ALL_FAULTS=1 $(BIN)/python -m pytest tests/faults

# Benchmarks print tables of figures measured side by side in one run; docs/benchmarks.md records them.
bench: $(STAMP) demo-data
	$(BIN)/python benchmarks/loader_throughput.py
	$(BIN)/python benchmarks/loss_step_cost.py --quick
	$(BIN)/python benchmarks/eval_throughput.py --quick
	$(BIN)/python benchmarks/score_throughput.py
	$(BIN)/python benchmarks/training_throughput.py
	$(BIN)/python benchmarks/frozen_tower.py
	$(BIN)/python benchmarks/compiled_step.py
	$(BIN)/python benchmarks/start_from_weights.py --data $(DEMO_DATA)
	$(BIN)/python benchmarks/stop_latency.py -c demo
	$(BIN)/python benchmarks/checkpoint_stall.py
	$(BIN)/python benchmarks/startup.py

# Side by side with OpenCLIP (docs/benchmarks.md): a second venv holds the peer, a benchmark-only dependency that
# the project never imports (nor does the peer venv hold the project: OpenCLIP pins an older webdataset); both
# sides run in one session and the table gives ratios.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

$(PEERS_STAMP): Makefile
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 open-clip-torch==3.3.0 \
		'webdataset==0.2.86' pandas  # what open-clip-torch[training] pins for its data pipeline
	touch $@

bench-peers: $(STAMP) $(PEERS_STAMP) demo-data
	$(BIN)/python benchmarks/versus_openclip.py --peer-python $(PEERS)/bin/python

# One GPU, one command, under 5 minutes from a bare machine (docs/benchmarks.md, "One GPU"): ours and OpenCLIP's
# ViT-B/16 steps; gpu.json and gpu.md go to BENCH_GPU_OUT. A longer budget, for the rows a short one cuts:
# BENCH_GPU_ARGS='--budget-s 540'; one model: BENCH_GPU_ARGS='--models siglip_b16'
BENCH_GPU_OUT ?= bench-gpu
BENCH_GPU_ARGS ?=

bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py --out $(BENCH_GPU_OUT) $(BENCH_GPU_ARGS)

clean:
	rm -rf $(VENV) $(PEERS) $(DEMO_DATA) runs build *.egg-info
