# Widget Inventory: `make run` serves the app locally, `make test` runs the test suite.
# Both create .venv and install the pinned dependencies on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SECRET_FILE := .local/secret_key
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_WIDGETS ?= 500

.PHONY: run test install migrate clean deploy-check reliability worker

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# A local, never-committed secret key for `make run`.
$(SECRET_FILE):
	mkdir -p $(dir $@)
	$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

run: export DJANGO_DEBUG = 1
run: export DJANGO_SECRET_KEY = $(shell cat $(SECRET_FILE) 2>/dev/null)
run: install $(SECRET_FILE)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_widgets --count $(DEMO_WIDGETS) --if-empty
	@$(BIN)/python manage.py ensure_local_admin
	@echo "Serving http://$(HOST):$(PORT)/  (API /api/, admin /admin/, docs /api/docs/)"
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# The background worker (webhook deliveries, docs/events.md) for `make run`'s database:
# run it in a second terminal. In production the Procfile's worker line runs it.
worker: export DJANGO_DEBUG = 1
worker: export DJANGO_SECRET_KEY = $(shell cat $(SECRET_FILE) 2>/dev/null)
worker: install $(SECRET_FILE)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py run_worker

# The suite runs on SQLite by default; set DATABASE_URL to run it on PostgreSQL and
# REDIS_URL for the Redis tests. A throwaway secret key is generated per run.
test: install
	DJANGO_SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

# The full reliability runs (docs/RELIABILITY.md): schemathesis on every operation, 60 s of
# load, and a database outage plus a killed worker under 40 s of load. Needs PostgreSQL on
# 127.0.0.1:5432 (ADMIN_DATABASE_URL) and the PostgreSQL 15 binaries for the private server.
reliability: install
	$(BIN)/python tests/reliability/fuzz.py --examples 100
	$(BIN)/python tests/reliability/load.py --seconds 60
	$(BIN)/python tests/reliability/outage.py --seconds 40

clean:
	rm -rf $(VENV) .local db.sqlite3 staticfiles .pytest_cache

# --- Benchmark (bench/README.md): not part of `make test`. Needs PostgreSQL, Redis and wrk.
.PHONY: bench bench-quick
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python bench/run.py --quick $(BENCH_ARGS)

# The Elastic Beanstalk rehearsal (README, "Deploying"): the committed bundle, deployed and
# served here against a fresh PostgreSQL database and Redis. Needs both running.
deploy-check: install
	$(BIN)/python deploy/check.py
