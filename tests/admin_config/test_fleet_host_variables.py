"""Fleet's newer variables at upload, with Fleet's rules: the host variables anywhere a string is,
$FLEET_VAR_CERTIFICATE_RENEWAL_ID only in a SCEP payload's Subject OU (the older
$FLEET_VAR_SCEP_RENEWAL_ID also in the CN)."""

from __future__ import annotations

import pytest

from tests.admin_config.test_configuration_profiles import _variant, test_scep_ca, upload

__all__ = ["test_scep_ca"]  # the fixture, used here too

OU = b"<string>FLEET DEVICE MANAGEMENT</string>"
CN = b"<string>%SerialNumber% WIFI</string>"


@pytest.mark.parametrize("variable", [b"$FLEET_VAR_HOST_HARDWARE_SERIAL", b"${FLEET_VAR_HOST_UUID}",
                                      b"$FLEET_VAR_HOST_PLATFORM"])
def test_host_variables_are_accepted_in_any_string(admin, test_scep_ca, variable):
    # In the Subject, and in the profile's own description.
    raw = _variant(CN, b"<string>" + variable + b" WIFI</string>")
    raw = raw.replace(b"<key>PayloadDisplayName</key>",
                      b"<key>PayloadDescription</key><string>for " + variable + b"</string>"
                      b"<key>PayloadDisplayName</key>", 1)
    response = upload(admin, raw)
    assert response.status_code == 200, response.json


def test_the_certificate_renewal_id_in_the_ou_is_accepted(admin, test_scep_ca):
    raw = _variant(OU, b"<string>$FLEET_VAR_CERTIFICATE_RENEWAL_ID</string>")
    assert upload(admin, raw).status_code == 200


@pytest.mark.parametrize("old, new", [
    (CN, b"<string>$FLEET_VAR_CERTIFICATE_RENEWAL_ID</string>"),  # the CN: only the older name
    (b"<string>SCEP #1</string>", b"<string>$FLEET_VAR_CERTIFICATE_RENEWAL_ID</string>"),
])
def test_the_certificate_renewal_id_elsewhere_is_refused(admin, test_scep_ca, old, new):
    response = upload(admin, _variant(old, new))
    assert response.status_code == 400
    assert "only be used in the Subject OU" in response.json["message"]


def test_an_unknown_host_variable_is_still_refused(admin, test_scep_ca):
    response = upload(admin, _variant(CN, b"<string>$FLEET_VAR_HOST_COLOR</string>"))
    assert response.status_code == 400
    assert "Unknown Fleet variable $FLEET_VAR_HOST_COLOR" in response.json["message"]
