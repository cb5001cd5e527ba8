"""Fixtures shared by the test files."""

from typing import Iterator

import pytest

try:
    from tests.fakeplatform import FakePlatform
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]


@pytest.fixture
def fp() -> Iterator[FakePlatform]:
    """A loopback fake platform answering job-take with 204 at once when empty."""
    with FakePlatform() as platform:
        yield platform
