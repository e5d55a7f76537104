# Two commands do everything on a fresh machine: `make profile` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned: its CPU build is on this machine's disk; an unpinned torch pulls a CUDA build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: profile test quick benchmark lint clean

$(STAMP): setup.cfg pyproject.toml setup.py augment-trace.pth
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch named in the same command as everything that depends on it (lightning), so
	# nothing upgrades it to a CUDA build
	$(PY) -m pip install --quiet $(TORCH) -e '.[fast,ray,bench,dev]'
	# an editable install leaves out the start-up hook that a wheel puts in site-packages
	$(PY) -c "import shutil, sysconfig; shutil.copy('augment-trace.pth', sysconfig.get_paths()['purelib'])"
	touch $(STAMP)

profile: $(STAMP)
	$(PY) scripts/profile_aug.py

test: $(STAMP)
	$(PY) -m pytest

# the edit loop: the tests that start no worker process, server, notebook or install
quick: $(STAMP)
	$(PY) -m pytest -m "not slow"

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py all --write-docs

lint: $(STAMP)
	$(PY) -m ruff check augment scripts tests

clean:
	rm -rf $(VENV) runs *.egg-info
