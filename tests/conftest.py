"""Fixtures the test files share, and the marks: modules whose tests start processes are
``slow`` (``make quick`` leaves them out). Helpers that are not fixtures are in ``support``."""

from __future__ import annotations

import pytest
from support import SAMPLE, run_profiler

from augment.loading import backends

# Modules whose tests start worker processes, servers, notebook kernels, Ray or installs:
# marked ``slow`` and left out of ``make quick`` (tests elsewhere that do are marked one by one)
SLOW_MODULES = {
    "test_epochs",
    "test_backend_contract",
    "test_layout",
    "test_backends",
    "test_cluster",
    "test_frameworks",
    "test_http",
    "test_install",
    "test_loader",
    "test_long_runs",
    "test_profiler",
    "test_ray",
    "test_segmentation",
    "test_scripts_and_notebooks",
    "test_state",
    "test_shards",
    "test_trace",
    "test_trace_dataloader",
    "test_tune",
    "test_user_code",
    "test_zero_copy",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sample_dir():
    """data/sample: 128 JPEG tiles 256 x 256 and labels.csv."""
    return SAMPLE


@pytest.fixture(params=backends.names())
def backend_name(request):
    """Every registered backend, by name: a new backend file is tested by adding it."""
    return request.param


@pytest.fixture(scope="session")
def profiler():
    """Run ``scripts/profile_aug.py`` with the given arguments (a completed process)."""
    return run_profiler
