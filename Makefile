# The two commands of README.md: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install system demo test lint jstest e2e browser screenshot cluster bench soak phones

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	touch $@

install: $(BIN)/.installed

# Re-resolve requirements.in to the newest versions it allows and rewrite requirements.txt, the
# lock every install uses: every package pinned, with the sha256 of each of its files on PyPI.
# pip-tools runs from a throwaway venv, so it is no dependency of the project. pip's own
# configuration is set aside (a machine may add local indexes or wheel folders there), so the
# lock holds PyPI's files and hashes only. See docs/operations.md, Dependencies.
LOCK_VENV := /tmp/teamtrack-pip-tools
LOCK_ENV := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null
.PHONY: lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_ENV) $(LOCK_VENV)/bin/pip install --quiet pip==26.3 pip-tools==7.6.2
	$(LOCK_ENV) $(LOCK_VENV)/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe \
	    --strip-extras --no-emit-index-url --no-emit-find-links \
	    --output-file requirements.txt requirements.in
	rm -rf $(LOCK_VENV)

# Debian packages (nginx, Redis, Chromium, docker-compose, Node.js) and a running Redis, for the tests.
system:
	bash deploy/system.sh

demo: install
	DEBUG=true $(BIN)/python manage.py demo

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run

# The front end's modules (static/js/) under Node's built-in test runner; no npm packages. The
# shell lists the files: Node 18 and 20 take a directory, but Node 22 and later take only globs.
jstest: system
	node --test tests/js/*.test.js

test: lint system jstest
	$(BIN)/pytest

e2e: install system
	$(BIN)/pytest -m e2e

# The map page in Debian's Chromium (/usr/bin/chromium; .ci/run installs it).
browser: install system
	TEAMTRACK_WRITE_DOCS=1 $(BIN)/pytest -m browser

# Regenerate docs/screenshot-map.png, the picture in README.md.
screenshot: install system
	TEAMTRACK_WRITE_DOCS=1 $(BIN)/pytest -m browser -k screenshot

# nginx over 2 daphne replicas relayed through Redis, with the demo team (see README.md).
cluster: install system
	$(BIN)/python -m deploy.cluster --replicas 2 --layer redis --port 8080 --demo 25

# The benchmark (about 30 minutes; results in loadtest/results/). LAYER=kafka for the Kafka layer.
LAYER ?= redis
bench: install system
	$(BIN)/python -m loadtest.bench --layer $(LAYER)

# The phone apps' HTTP endpoints (OsmAnd, OwnTracks) beside the worker socket: server CPU per
# position (about 6 minutes; loadtest/results/phones-*). DATABASE=postgres counts PostgreSQL too.
DATABASE ?= sqlite
phones: install system
	$(BIN)/python -m loadtest.phones --database $(DATABASE)

# The soak: 300 devices with churn for MINUTES, memory of every process (loadtest/results/soak-*).
MINUTES ?= 240
soak: install system
	$(BIN)/python -m loadtest.soak --minutes $(MINUTES) --layer $(LAYER)
