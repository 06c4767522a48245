import pytest

from tests.deploy.test_nginx_routing import FakeDockerDns


@pytest.fixture
def dns():
    """A stand-in for Docker's embedded DNS (compose service names → loopback addresses)."""
    server = FakeDockerDns()
    server.start()
    yield server
    server.stop()
