"""A stand-in for scep-proxy's ScepGateway probe, for tests of the admin API that save no CA
(the owners of hosts, deliveries and CA traffic: tests/support/owner_doubles.py)."""

from __future__ import annotations


class NoProber:
    """ScepGateway that must not be asked: these tests save no CA."""

    def probe(self, url):
        raise AssertionError("no CA is saved in these tests")
