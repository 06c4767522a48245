"""Subject policy belongs to the CA: the proxy relays a CSR it cannot read (it is encrypted to the
CA), so an admin who wants to restrict subjects runs the CA with a CSR verifier. The one shipped in
deploy/scep/ works with the real micromdm scepserver."""

from __future__ import annotations

import pytest

from hostsim.scep import ScepEnrollmentFailed, enroll
from tests.support.scepserver import ROOT, start_scepserver

POLICY = ROOT / "deploy" / "scep" / "csr-subject-policy.sh"
CHALLENGE = "policy-challenge"


@pytest.fixture(scope="module")
def policed_ca(tmp_path_factory):
    server = start_scepserver(challenge=CHALLENGE, workdir=tmp_path_factory.mktemp("policed-ca"),
                              csr_verifier=POLICY,
                              env={"CSR_SUBJECT_REGEX": "^CN=allowed-[a-z0-9]+,OU=fleet-[0-9a-f-]{36}(,|$)"})
    yield server
    server.stop()


def test_the_ca_issues_a_subject_the_policy_allows(policed_ca, tmp_path):
    enrolled = enroll(policed_ca.url, CHALLENGE,
                      [[["CN", "allowed-host1"]], [["OU", "fleet-0f8fad5b-d9cb-469f-a165-70867728950e"]]],
                      workdir=tmp_path)
    assert enrolled.certificate.subject.rfc4514_string().startswith("CN=allowed-host1")


@pytest.mark.parametrize("subject", [
    [[["CN", "someone-else"]], [["OU", "fleet-0f8fad5b-d9cb-469f-a165-70867728950e"]]],
    [[["CN", "allowed-host2"]], [["OU", "not-a-renewal-id"]]],
])
def test_the_ca_refuses_a_subject_the_policy_does_not_allow(policed_ca, tmp_path, subject):
    refused_before = policed_ca.log().count("CSR verify failed")
    with pytest.raises(ScepEnrollmentFailed, match="badRequest"):
        enroll(policed_ca.url, CHALLENGE, subject, workdir=tmp_path)
    assert policed_ca.log().count("CSR verify failed") == refused_before + 1
