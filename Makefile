# Every target installs what it needs, idempotently. Options pass as ARGS='...'.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt | sha1sum | cut -c1-12)
ARGS ?=

.PHONY: install demo loadtest soak deploy test lint bench-thumbnail bench-embed bench-status clean

install: $(STAMP)
	@scripts/install-system-deps.sh

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	@rm -f $(VENV)/.installed-*; touch $@

demo: install
	$(BIN)/python -m scripts.demo $(ARGS)

# The UAT's load scenario: 5 users uploading at once (2,000 photos each in the UAT; ARGS='--photos 2000').
loadtest: install
	$(BIN)/python -m scripts.demo --users 5 --photos 200 $(ARGS)

soak: install
	$(BIN)/python -m scripts.soak $(ARGS)

test: install
	@scripts/install-system-deps.sh --chromium --node
	$(BIN)/python -m pytest $(ARGS)

# Build, push and apply to the current kubectl context (docs/deploy.md).
deploy: install
	scripts/deploy $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

bench-thumbnail: install
	@scripts/install-system-deps.sh --node
	@cd scripts/sharp && { test node_modules/.package-lock.json -nt package-lock.json || npm ci --no-audit --no-fund; }
	$(BIN)/python -m scripts.bench_thumbnail $(ARGS)

bench-embed: install
	$(BIN)/python -m scripts.bench_embed $(ARGS)

bench-status: install
	@scripts/install-system-deps.sh --wrk
	$(BIN)/python -m scripts.bench_status $(ARGS)
