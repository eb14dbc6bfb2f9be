# Widget Inventory: `make run` serves the app locally, `make test` runs the test suite.
# Both create .venv and install the pinned dependencies on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ENV_FILE := .env
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_WIDGETS ?= 500

.PHONY: run test lint admin-password screenshots worker install migrate clean deploy-check reliability

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# Local settings for every manage.py command (config/env.py): DEBUG on and a local secret key,
# in a git-ignored .env written once (a key from the older .local/secret_key is kept, so
# tokens issued with it stay valid). Variables set in the environment win over the file.
$(ENV_FILE):
	@umask 077 && { \
	  echo "# Local development settings, written by make run. Never commit or deploy this file."; \
	  echo "DJANGO_DEBUG=1"; \
	  echo "DJANGO_SECRET_KEY=$$(cat .local/secret_key 2>/dev/null || $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')"; \
	} > $@
	@echo "Wrote $@ (DEBUG on, a local secret key): manage.py reads it."

run: install $(ENV_FILE)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_widgets --count $(DEMO_WIDGETS) --if-empty
	@$(BIN)/python manage.py ensure_local_admin
	@echo "Serving http://$(HOST):$(PORT)/  (API /api/, admin /admin/, docs /api/docs/)"
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# A new random password for the local admin, printed (`manage.py changepassword admin` lets
# you choose one instead).
admin-password: install $(ENV_FILE)
	@$(BIN)/python manage.py ensure_local_admin --reset-password

# The images in docs/ from the app `make run` serves (docs/screenshots.py; needs Chromium).
screenshots: install $(ENV_FILE)
	$(BIN)/python docs/screenshots.py --base-url http://$(HOST):$(PORT)

# The background worker (webhook deliveries, docs/events.md) for `make run`'s database:
# run it in a second terminal. In production the Procfile's worker line runs it.
worker: install $(ENV_FILE)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py run_worker

# The suite runs on SQLite by default; set DATABASE_URL to run it on PostgreSQL and
# REDIS_URL for the Redis tests. A throwaway secret key is generated per run.
test: install
	DJANGO_SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (pyproject.toml): the rules and the formatting CI requires. `ruff format` and
# `ruff check --fix` make most of the changes it asks for.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The full reliability runs (docs/reliability.md): schemathesis on every operation, 60 s of
# load, a database outage plus a killed worker under 40 s of load, and read replicas (a private
# primary and a streaming replica of it on ports 5510/5511, Redis db 13). Needs PostgreSQL on
# 127.0.0.1:5432 (ADMIN_DATABASE_URL) and the PostgreSQL 15 binaries for the private servers.
reliability: install
	$(BIN)/python tests/reliability/fuzz.py --examples 100
	$(BIN)/python tests/reliability/load.py --seconds 60
	$(BIN)/python tests/reliability/outage.py --seconds 40
	$(BIN)/python tests/reliability/replicas.py

clean:
	rm -rf $(VENV) .local $(ENV_FILE) db.sqlite3 staticfiles .pytest_cache

# --- Benchmark (bench/README.md): not part of `make test`. Needs PostgreSQL, Redis and wrk.
.PHONY: bench bench-quick
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python bench/run.py --quick $(BENCH_ARGS)

# The Elastic Beanstalk rehearsal (docs/deploy.md): the committed bundle, deployed and
# served here against a fresh PostgreSQL database and Redis. Needs both running.
deploy-check: install
	$(BIN)/python deploy/check.py
