"""The test suite's own contract: `make test`'s two workers keep each module's tests together.

tests/conftest.py marks every test with an ``xdist_group`` (its module, or the trained phantom
fixture's group), and ``--dist loadgroup`` sends a group to one worker, in order. pytest 9.2's
structured node IDs silently undid that grouping (pytest-dev/pytest-xdist#1386): the tests of one
module then ran on both workers, and a test that reads what an earlier one left behind failed.
"""

from __future__ import annotations

import pytest


def test_every_test_carries_its_modules_group(request):
    mark = request.node.get_closest_marker("xdist_group")
    assert mark is not None and mark.args[0] == request.node.module.__name__


def test_the_group_reaches_the_scheduler_under_two_workers(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("a serial run (TEST_WORKERS=0): no scheduler to reach")
    # xdist hands the scheduler the group as a node ID suffix; without it the group is ignored
    assert request.node.nodeid.endswith(f"@{request.node.module.__name__}")
