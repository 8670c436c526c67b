# CartFlow: `make run` serves everything, `make test` runs the whole suite. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum requirements.lock | cut -c1-12)

.PHONY: install run test browser lint bench chaos multihost clean

install: $(STAMP)

$(STAMP): requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	@rm -f $(VENV)/.installed-* && touch $@

run: install
	@./scripts/run.sh

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The storefront in a real browser (tests/e2e/browser/): Playwright driving Debian's Chromium, which
# scripts/chromium.sh installs when it is missing. Screenshots go to tests/e2e/browser/screenshots/.
browser: install
	@./scripts/chromium.sh
	$(BIN)/python -m pytest -m browser tests/e2e/browser $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench $(or $(BENCH_ARGS),all)

chaos: install
	$(BIN)/python -m bench chaos $(CHAOS_ARGS)

# Two web servers behind HAProxy, two Celery workers on RabbitMQ, one beat, a checkout rush and a killed server
# (needs `apt-get install -y haproxy rabbitmq-server`; bench/multihost.py says what is missing).
multihost: install
	$(BIN)/python -m bench multihost $(MULTIHOST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
