"""Shared test set-up: every test starts with an empty param store and a fixed seed."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import pyro
import pytest
import torch

# NUTS references made by the tests are cached in one temporary folder per run, never in
# the user's home.
os.environ.setdefault("PYROVI_CACHE_DIR", tempfile.mkdtemp(prefix="pyrovi-test-cache-"))
# pytest-xdist runs one worker per core: each worker and every process it starts (case
# studies, guides, the CLI, torchrun's workers) computes on one thread. Two threads per
# process on a 2-core machine made the subprocess tests 3-5x slower (OpenMP threads
# spinning against the other worker's).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state() -> None:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)


@pytest.fixture(scope="session")
def stored_nuts() -> Any:
    """tests/fixtures/references/nuts_cache.py: installs stored NUTS runs of fixed, seeded
    data into the tests' NUTS cache (``stored_nuts.install(name, model, data, ...)``)."""
    path = Path(__file__).parent / "fixtures" / "references" / "nuts_cache.py"
    spec = importlib.util.spec_from_file_location("nuts_cache", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
