# Every target installs what it needs, idempotently. Options pass as ARGS='...'.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/lock/*.txt | sha1sum | cut -c1-12)
ARGS ?=
# No library phones home from tests, demos and benchmarks, as in the embed image: onnxruntime's
# usage telemetry, albumentations' (insightface's) version check at import.
export ORT_DISABLE_TELEMETRY := 1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install lock docs demo loadtest soak capacity deploy test lint bench-thumbnail bench-embed bench-status clean audit fresh-check images test-images demo-compose

install: $(STAMP)
	@scripts/install-system-deps.sh

$(STAMP):
	@scripts/install-system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q 'pip>=25.3'  # --build-constraint, below
	$(BIN)/python -m pip install -q --require-hashes --build-constraint requirements/lock/build.txt \
		-r requirements/lock/dev.txt
	@rm -f $(VENV)/.installed-*; touch $@

# Regenerates every requirements/lock/*.txt from requirements/*.in (docs/development.md).
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q uv==0.13.9
	$(BIN)/python -m scripts.lock $(ARGS)

# Regenerates what is generated from code: docs/configuration.md's settings tables (the
# settings models) and functions/status/openapi.yaml (functions/status/schemas.py).
docs: install
	$(BIN)/python -m scripts.gen_config_docs
	$(BIN)/python -m scripts.gen_openapi

demo: install
	$(BIN)/python -m scripts.demo $(ARGS)

# The demo against docker-compose.yml, the stack in containers from the images (needs Docker).
demo-compose: install
	$(BIN)/python -m scripts.demo --compose $(ARGS)

# The UAT's load on this machine, with a small uploader among large ones: the fairness check
# (scripts/loadtest.py; 2,000 photos each in the UAT: ARGS='--photos 2000').
loadtest: install
	$(BIN)/python -m scripts.loadtest $(ARGS)

soak: install
	$(BIN)/python -m scripts.soak $(ARGS)

test: install
	@scripts/install-system-deps.sh --chromium --node
	$(BIN)/python -m pytest $(ARGS)

# Every image, photo-pipeline/<name>:dev (BASE_IMAGE=... overrides the base; docs/local-stack.md).
images:
	$(PYTHON) -m scripts.build_images $(ARGS)

# Each function image built and run as its Knative Service runs it (needs Docker; not in make test).
test-images: install
	$(BIN)/python -m pytest -m images tests/images $(ARGS)

# Build, push and apply to the current kubectl context (docs/deploy.md): needs only python3,
# docker or podman, and kubectl.
deploy:
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

# The UAT on a Knative cluster, predicted from the manifests and the stages' measured costs
# (docs/capacity.md).
capacity: install
	$(BIN)/python -m scripts.capacity $(ARGS)

bench-embed: install
	$(BIN)/python -m scripts.bench_embed $(ARGS)

bench-status: install
	@scripts/install-system-deps.sh --wrk
	$(BIN)/python -m scripts.bench_status $(ARGS)

# Known vulnerabilities in every lock (OSV) and the sharp reference (npm); fails closed.
audit:
	scripts/audit.sh

# The README's two commands from a fresh clone of HEAD in a clean Debian container (needs Docker).
fresh-check:
	scripts/fresh-check.sh $(ARGS)
