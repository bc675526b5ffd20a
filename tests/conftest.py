import pytest

from tests.harness import Gateway, mock_config


@pytest.fixture
def mock_gateway(tmp_path):
    """keyrelay with the built-in mock provider, 2 gevent workers."""
    with Gateway(tmp_path, mock_config(admin_token="test-admin-token")) as gw:
        yield gw
