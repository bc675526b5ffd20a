import pytest

from tests.mock_upstream import MockUpstream


@pytest.fixture(scope="module")
def mock():
    """The scriptable mock upstream on 127.0.0.1, one per test module (a module may override it)."""
    with MockUpstream() as upstream:
        yield upstream
