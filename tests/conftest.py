"""Shared fixtures: one template cache per test session, so renderers are built once."""

from __future__ import annotations

import os

import pytest


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
