"""Admin API: configuration profile upload and validation (README.md "Admin API")."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from mdmscep_common.config_events import ProfileState, read_profile_state
from tests.support.service_fixtures import create_ca

PROFILES = "/api/v1/fleet/configuration_profiles"
SEED = (Path(__file__).parents[1] / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()


def upload(admin, raw: bytes, field: str = "profile"):
    return admin.post(PROFILES, data={field: (io.BytesIO(raw), "profile.mobileconfig")},
                      content_type="multipart/form-data")


@pytest.fixture
def test_scep_ca(admin, custom_ca):
    response = create_ca(admin, "Test_SCEP", custom_ca.url, "custom-ca-challenge")
    assert response.status_code == 200
    return response.json["id"]


def test_seed_profile_is_accepted_unchanged(admin, test_scep_ca, db_conn, publisher):
    response = upload(admin, SEED)
    assert response.status_code == 200, response.json
    profile_uuid = response.json["profile_uuid"]
    row = db_conn.execute("SELECT * FROM profiles WHERE uuid = %s", (profile_uuid,)).fetchone()
    assert bytes(row["raw"]) == SEED
    assert row["identifier"] == "Fleet.custom.SCEP" and row["name"] == "SCEP proxy cert"
    assert db_conn.execute("SELECT ca_id FROM profile_certificate_authorities WHERE profile_uuid = %s",
                           (profile_uuid,)).fetchall() == [{"ca_id": test_scep_ca}]
    listed = admin.get(PROFILES).json["profiles"]
    assert [(p["profile_uuid"], p["name"], p["identifier"]) for p in listed] == [
        (profile_uuid, "SCEP proxy cert", "Fleet.custom.SCEP")]
    assert listed[0]["created_at"].endswith("Z")
    key, event = publisher.messages[-1]
    state = read_profile_state(event.pop("profile"))
    assert (key, event) == ("config.changed", {"kind": "profile", "action": "added",
                                               "profile_uuid": profile_uuid})
    # The profile as committed, for the processor's copy.
    assert state == ProfileState(profile_uuid, "Fleet.custom.SCEP", "SCEP proxy cert", SEED,
                                 hashlib.sha256(SEED).digest(), True, (test_scep_ca,))
    activity = admin.get("/api/v1/fleet/activities").json["activities"][0]
    assert activity["type"] == "created_configuration_profile"
    assert activity["details"]["profile_name"] == "SCEP proxy cert"


def test_delete_profile_and_then_its_ca(admin, test_scep_ca, publisher):
    profile_uuid = upload(admin, SEED).json["profile_uuid"]
    in_use = admin.delete(f"/api/v1/fleet/certificate_authorities/{test_scep_ca}")
    assert in_use.status_code == 409
    assert "SCEP proxy cert" in in_use.json["message"]
    assert admin.delete(f"{PROFILES}/{profile_uuid}").status_code == 204
    assert admin.delete(f"{PROFILES}/{profile_uuid}").status_code == 404
    assert publisher.messages[-1][1]["action"] == "deleted"
    assert admin.get("/api/v1/fleet/activities").json["activities"][0]["type"] == \
        "deleted_configuration_profile"
    assert admin.delete(f"/api/v1/fleet/certificate_authorities/{test_scep_ca}").status_code == 204


def _variant(old: bytes, new: bytes) -> bytes:
    assert old in SEED
    return SEED.replace(old, new)


SCEP_PAYLOAD = SEED[SEED.index(b"<dict>\n          <key>PayloadContent</key>"):
                    SEED.index(b"</array>\n    <key>PayloadDisplayName</key>")]


@pytest.mark.parametrize("raw, message", [
    (b"", "empty"),
    (b"<plist><dict><key>a</key></dict>", "Malformed profile"),
    (b"this is not xml", "Malformed profile"),
    (b"bplist00\x08", "binary property lists"),
    (b'<?xml version="1.0"?><plist version="1.0"><array/></plist>', "top level"),
    (_variant(b"<string>Configuration</string>", b"<string>com.apple.wifi.managed</string>"),
     "PayloadType must be Configuration"),
    (_variant(b"<key>PayloadIdentifier</key>\n    <string>Fleet.custom.SCEP</string>", b""),
     "PayloadIdentifier is missing"),
    (_variant(b"<string>4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC</string>", b"<string></string>"),
     "PayloadUUID is missing"),
    (_variant(b"<string>SCEP proxy cert</string>", b"<string>$FLEET_VAR_HOST_SERIAL</string>"),
     "Unknown Fleet variable $FLEET_VAR_HOST_SERIAL"),
    (_variant(b"<string>SCEP proxy cert</string>",
              b"<string>$FLEET_VAR_CUSTOM_SCEP_CHALLENGE_Test_SCEP</string>"),
     "can only be used in a com.apple.security.scep payload"),
    (_variant(b"<string>$FLEET_VAR_CUSTOM_SCEP_CHALLENGE_Test_SCEP</string>",
              b"<string>prefix $FLEET_VAR_CUSTOM_SCEP_CHALLENGE_Test_SCEP</string>"),
     "Challenge must be exactly"),
    (_variant(b"<string>${FLEET_VAR_CUSTOM_SCEP_PROXY_URL_Test_SCEP}</string>",
              b"<string>http://ca.example/scep</string>"),
     "URL must be exactly"),
    (_variant(b"<string>${FLEET_VAR_CUSTOM_SCEP_PROXY_URL_Test_SCEP}</string>",
              b"<string>$FLEET_VAR_CUSTOM_SCEP_PROXY_URL_Other</string>"),
     "name different certificate authorities"),
    (SEED.replace(b"Test_SCEP", b"Missing_CA"), "Certificate authority Missing_CA does not exist"),
    (_variant(b"<string>FLEET DEVICE MANAGEMENT</string>",
              b"<string>$FLEET_VAR_SCEP_RENEWAL_ID</string>").replace(b"<string>OU</string>",
                                                                      b"<string>O</string>"),
     "only be used in the Subject CN or OU"),
    (_variant(b"<string>SCEP #1</string>", b"<string>$FLEET_VAR_SCEP_RENEWAL_ID</string>"),
     "only be used in the Subject CN or OU"),
    (_variant(SCEP_PAYLOAD, SCEP_PAYLOAD + SCEP_PAYLOAD.replace(b"com.fleetdm.custom.scep",
                                                                  b"com.fleetdm.custom.scep2")),
     "Only one com.apple.security.scep payload"),
    (_variant(b"<key>Key Type</key>", b"<!-- $FLEET_VAR_CUSTOM_SCEP_CHALLENGE_Test_SCEP -->"
                                      b"<key>Key Type</key>"),
     "written literally"),
    (_variant(b"<string>$FLEET_VAR_CUSTOM_SCEP_CHALLENGE_Test_SCEP</string>",
              b"<string><![CDATA[$FLEET_VAR_CUSTOM_SCEP_CHALLENGE_Test_SCEP]]></string>"),
     "inside a CDATA section"),
    (_variant(b"<string>SCEP #1</string>",
              b"<string>$FLEET_VAR_CUSTOM_SCEP_PROXY_URL_Test_SCEP2</string>"),
     "must all name its SCEP payload's certificate authority (Test_SCEP), not Test_SCEP2"),
])
def test_invalid_profiles_are_400_naming_the_problem(admin, test_scep_ca, db_conn, raw, message):
    response = upload(admin, raw)
    assert response.status_code == 400, response.json
    assert message in response.json["message"]
    assert db_conn.execute("SELECT count(*) AS n FROM profiles").fetchone()["n"] == 0


def test_renewal_id_in_cn_or_ou_is_accepted(admin, test_scep_ca):
    raw = _variant(b"<string>FLEET DEVICE MANAGEMENT</string>",
                   b"<string>$FLEET_VAR_SCEP_RENEWAL_ID</string>")
    assert upload(admin, raw).status_code == 200


def test_duplicate_identifier_is_400(admin, test_scep_ca):
    assert upload(admin, SEED).status_code == 200
    response = upload(admin, SEED.replace(b"4CD1BD65", b"5CD1BD65"))
    assert response.status_code == 400
    assert "PayloadIdentifier Fleet.custom.SCEP already exists" in response.json["message"]


def test_profile_without_variables_is_accepted(admin):
    plain = (b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>'
             b"<key>PayloadContent</key><array/><key>PayloadIdentifier</key><string>com.x.plain</string>"
             b"<key>PayloadType</key><string>Configuration</string><key>PayloadUUID</key>"
             b"<string>1</string><key>PayloadVersion</key><integer>1</integer></dict></plist>")
    assert upload(admin, plain).status_code == 200


def test_missing_field_and_oversized_upload(admin):
    assert upload(admin, SEED, field="file").status_code == 400
    assert upload(admin, b"x" * (3 << 20)).status_code == 413


def test_host_profiles_of_unknown_host_is_404(admin):
    assert admin.get("/api/v1/fleet/hosts/nope/configuration_profiles").status_code == 404


def test_a_profile_and_its_bytes_as_uploaded(admin, test_scep_ca):
    """GET one profile; with alt=media (as Fleet spells it) the uploaded bytes, byte for byte and
    unrendered: what `mdmscep gitops export` writes and `apply` compares."""
    profile_uuid = upload(admin, SEED).json["profile_uuid"]
    shown = admin.get(f"{PROFILES}/{profile_uuid}")
    assert shown.status_code == 200
    assert shown.json == admin.get(PROFILES).json["profiles"][0]
    media = admin.get(f"{PROFILES}/{profile_uuid}?alt=media")
    assert media.status_code == 200 and media.get_data() == SEED
    assert media.headers["Content-Type"] == "application/x-apple-aspen-config"
    assert media.headers["Content-Disposition"] == \
        'attachment; filename="Fleet.custom.SCEP.mobileconfig"'
    assert admin.get(f"{PROFILES}/{profile_uuid}?alt=json").status_code == 400
    assert admin.get(f"{PROFILES}/no-such?alt=media").status_code == 404
    assert admin.get(f"{PROFILES}/no-such").status_code == 404


def test_a_downloaded_profiles_file_name_is_plain(admin):
    # The PayloadIdentifier is the uploader's text: quotes, separators and controls stay out of
    # the header.
    odd = (b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>'
           b"<key>PayloadContent</key><array/><key>PayloadIdentifier</key>"
           b'<string>../a"b;\xe2\x80\xae c</string>'
           b"<key>PayloadType</key><string>Configuration</string><key>PayloadUUID</key>"
           b"<string>1</string><key>PayloadVersion</key><integer>1</integer></dict></plist>")
    profile_uuid = upload(admin, odd).json["profile_uuid"]
    media = admin.get(f"{PROFILES}/{profile_uuid}?alt=media")
    assert media.get_data() == odd
    assert media.headers["Content-Disposition"] == 'attachment; filename=".._a_b___c.mobileconfig"'
