"""Shared fixtures: one template cache per test session, so renderers are built once."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory: pytest.TempPathFactory):
    """A fresh data directory for the session ($VAESAE_DATA): no official files, empty cache."""
    root = tmp_path_factory.mktemp("data")
    old = os.environ.get("VAESAE_DATA")
    os.environ["VAESAE_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("VAESAE_DATA", None)
    else:
        os.environ["VAESAE_DATA"] = old


@pytest.fixture
def seeded_one_thread():
    """A fixed global seed and one torch thread for the test: small batches gain nothing from
    intra-op threads, which only add synchronisation on a busy 2-core machine."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
