"""Stand-ins for admin-config's two gRPC peers, for tests of the admin API that save no CA and
delete no host through mdm-endpoint."""

from __future__ import annotations


class NoProber:
    """ScepGateway that must not be asked: these tests save no CA."""

    def probe(self, url):
        raise AssertionError("no CA is saved in these tests")


class NoRegistry:
    """HostRegistry that knows no host in mdm-endpoint."""

    def delete_host(self, host_uuid):
        return False
