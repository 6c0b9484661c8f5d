"""Shared test configuration.

Tests marked ``slow`` run in CI (where ``CI`` is set) or with ``--runslow``;
elsewhere they are skipped with a reason, so the default run stays fast.
"""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI, or locally with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
