# Two entry points: `make demo` runs the main job, `make test` runs every test.
# Each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Serf (gossip) comes from Debian; installed only when missing and we are root.
system-deps:
	@./scripts/install-system-deps

demo: $(STAMP) system-deps
	$(BIN)/python scripts/demo.py

test: $(STAMP) system-deps
	HYPERCORE_REQUIRE_REAL=1 $(BIN)/python -m pytest -q -n 4 --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/select.py

clean:
	rm -rf $(VENV) build src/*.egg-info
