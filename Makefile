# Two commands do everything on a fresh machine: `make profile` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned: its CPU build is on this machine's disk; an unpinned torch pulls a CUDA build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: profile test quick test-pythons benchmark peers lint clean

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

# the quick tests on every Python setup.cfg claims, a venv each in .venv-pythons/ (not in CI:
# a large download); PYTHONS="3.10 3.13" to choose
test-pythons:
	$(PYTHON) scripts/test_pythons.py $(if $(PYTHONS),--pythons $(PYTHONS))

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py all --write-docs

# The peers (issue 24) in their own environment: torchvision needs torch 2.14.1 (a CUDA build
# from this machine's disk that runs on the CPU). DALI's CPU operators come from PyPI; FFCV
# is only a source build (the system's OpenCV 4 and libturbojpeg headers): tried, not needed.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

$(PEERS_STAMP): setup.cfg pyproject.toml setup.py
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 torchdata \
		'albumentations>=2,<3' spdl -e '.[fast]'
	-timeout 600 $(PEERS)/bin/python -m pip install --quiet nvidia-dali-cuda120
	-timeout 300 $(PEERS)/bin/python -m pip install --quiet ffcv
	touch $(PEERS_STAMP)

peers: $(PEERS_STAMP)
	$(PEERS)/bin/python scripts/peers.py --write-docs

lint: $(STAMP)
	$(PY) -m ruff check augment scripts tests

clean:
	rm -rf $(VENV) $(PEERS) runs *.egg-info
