# The README's commands. Each creates what it needs (venvs, data) and needs nothing installed by hand.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := core task-classification task-detection task-pose backend-tensorrt

.PHONY: dev demo test test-packages test-integration bench bench-torch acceptance docs clean

$(BIN)/tlkit: constraints.txt $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
	$(PY) scripts/mkvenv.py $(VENV) $(PACKAGES)
	touch $@

dev: $(BIN)/tlkit  ## full development environment in .venv (all packages, editable)

demo: dev  ## the main job: the classification workflow end to end on data it makes itself
	$(BIN)/tlkit classification demo -r demo_results

test:  ## every package alone in its own venv, then the cross-package tests in the full env
	$(PY) scripts/test_packages.py

bench: dev  ## benchmarks (pytest-benchmark); numbers saved under benchmarks/results/
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-json=benchmarks/results/latest.json

TORCH_VENV := .venvs/bench-torch
$(TORCH_VENV)/bin/python:
	$(PY) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install -q torch==2.13.0 torch-pruning==1.6.1 onnx==1.18.0

bench-torch: dev $(TORCH_VENV)/bin/python  ## ResNet-18 pruning vs Torch-Pruning (torch lives in its own venv, never in tlkit's)
	$(BIN)/python -m pytest benchmarks/test_bench_pruning.py -q -k vs_torch --benchmark-only --benchmark-json=benchmarks/results/pruning_vs_torch.json

acceptance: dev  ## long acceptance runs on ../shared/data; numbers saved under benchmarks/acceptance/
	$(BIN)/python -m pytest benchmarks/acceptance -q -s

docs: dev  ## regenerate docs/spec-reference.md and docs/model-file.md from the pydantic models
	$(BIN)/python scripts/gen_spec_reference.py

clean:
	rm -rf .venv .venvs demo_results
