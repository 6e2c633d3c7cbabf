# Two commands on a fresh clone: `make demo` runs the main job (taocache run: the embedded video model in
# full and with TaoCache), `make test` runs the tests. Each makes the virtual environment .venv on first use:
# torch first (the build for your machine may differ: set TORCH), then this package with its dev tools.
PYTHON ?= python3
VENV := .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test clean

demo: $(VENV)/.installed
	$(VENV)/bin/taocache run --force

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV)
