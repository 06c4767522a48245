"""Hostile SCEP requests: the proxy id parser (mdmscep_common.proxy_urls.decode_id) and the
whole request path of the proxy app (Flask app as app.py builds it, a fake ProfileAuthority over
gRPC, a recording stub CA).

Random and mutated ids, operations, methods, query strings and bodies never give a 500 or an
unhandled exception; refusals are short plain text that never echoes the one-time code; and
whatever the request says, the only place the proxy ever sends anything is the configured CA URL.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdmscep_common import proxy_urls
from mdmscep_common.proxy_urls import MalformedId, ProxyId
from mdmscep_common.proxy_urls import decode_id as parse_proxy_id
from scep_proxy import scep_protocol
from scep_proxy.scep_protocol import OID_MESSAGE_TYPE
from tests.fuzz.strategies import fuzz, mutations
from tests.scep_proxy.test_scep_proxy_protocol import scep_message
from tests.support.proxy_world import CA, ProxyWorld

PKCS_REQ = scep_message([(OID_MESSAGE_TYPE, "19")])

HOSTS = st.from_regex(proxy_urls.HOST_UUID, fullmatch=True)
PROFILES = st.from_regex(proxy_urls.PROFILE_UUID, fullmatch=True)
CAS = st.from_regex(proxy_urls.CA_NAME, fullmatch=True)
CODES = st.from_regex(proxy_urls.ONE_TIME_CODE, fullmatch=True)


# --- the id parser -----------------------------------------------------------------------------

@given(raw=st.one_of(st.text(max_size=400),
                     st.lists(st.text(max_size=40), min_size=3, max_size=5).map(",".join)))
@fuzz(scale=2)
def test_any_id_parses_or_is_malformed(raw):
    try:
        parsed = parse_proxy_id(raw)
    except MalformedId as exc:
        assert len(raw) < 8 or raw not in str(exc)  # the reason never quotes the input
        return
    assert isinstance(parsed, ProxyId)
    assert ",".join((parsed.host_uuid, parsed.profile_uuid, parsed.ca_name,
                     parsed.one_time_code)) == raw
    assert "one_time_code" not in repr(parsed)  # the code is a secret: kept out of logs


@given(host=HOSTS, profile=PROFILES, ca=CAS, code=CODES)
@fuzz()
def test_the_url_rendered_into_profiles_parses_back(host, profile, ca, code):
    url = proxy_urls.proxy_url("https://proxy.example/", ProxyId(host, profile, ca, code))
    assert url.startswith("https://proxy.example/mdm/scep/proxy/")
    raw = unquote(url.rsplit("/", 1)[1])
    assert parse_proxy_id(raw) == ProxyId(host, profile, ca, code)


@given(base=st.sampled_from(["http://ca.example/scep", "https://ca.example:8443/a/b?tenant=x",
                             "http://10.0.0.1/cgi-bin/pkiclient.exe?operation=evil&x=1"]),
       operation=st.text(max_size=30), message=st.text(max_size=60))
@fuzz()
def test_operation_urls_never_leave_the_cas_url(base, operation, message):
    from urllib.parse import parse_qs, urlsplit

    out = urlsplit(scep_protocol.operation_url(base, operation, message=message))
    original = urlsplit(base)
    assert (out.scheme, out.netloc, out.path) == (original.scheme, original.netloc, original.path)
    query = parse_qs(out.query, keep_blank_values=True)
    assert query["operation"] == [operation] and query["message"] == [message]


# --- the request path ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    world = ProxyWorld()
    yield world
    world.close()


def _check_answer(world, response, code: str | None, head: bool = False) -> None:
    assert response.status_code != 500, response.get_data(as_text=True)
    if response.status_code == 308:
        # Werkzeug merges repeated slashes in the path: a redirect to the same host and route.
        assert response.headers["Location"].startswith(("/mdm/scep/proxy/",
                                                         "http://localhost/mdm/scep/proxy/"))
        return
    assert response.status_code in {200, 400, 403, 404, 405, 409, 413, 429, 503}, \
        (response.status_code, response.get_data(as_text=True))
    if response.status_code != 200 and not head:
        text = response.get_data(as_text=True)
        assert text.startswith("SCEP proxy") and len(text) < 600
        if code and len(code) >= 6:
            assert code not in text
    for request in world.ca.requests:
        assert (request.path, request.host_header) == ("/scep", world.ca.netloc)


RAW_IDS = st.one_of(
    st.text(max_size=120),
    st.tuples(HOSTS, PROFILES, st.sampled_from([CA, "Other", "../../x"]), CODES).map(",".join),
    st.sampled_from(["", ",,,", "a,b,c", "a,b,c,d,e", "%2C%2C%2C", "../../etc/passwd",
                     "http://evil.example/x", "@evil.example", "a,b,Test_SCEP,c/../../x",
                     "a,b,Test_SCEP,c?operation=GetCACert", "a\x00,b,Test_SCEP,c"]),
)
OPERATIONS = st.one_of(st.none(), st.sampled_from(["GetCACaps", "GetCACert", "PKIOperation",
                                                   "getcacaps", "PKIOperation\x00", ""]),
                       st.text(max_size=20))


@given(raw_id=RAW_IDS, operation=OPERATIONS, method=st.sampled_from(["GET", "POST", "HEAD", "PUT"]),
       message=st.one_of(st.none(), st.text(max_size=200)), body=st.binary(max_size=300),
       extra=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=3))
@fuzz(scale=2)
def test_random_requests_get_an_answer_never_a_500(world, raw_id, operation, method, message,
                                                   body, extra):
    query = {**extra}
    if operation is not None:
        query["operation"] = operation
    if message is not None:
        query["message"] = message
    path = "/mdm/scep/proxy/" + quote(raw_id, safe="")
    response = world.client.open(path, method=method, query_string=query, data=body)
    _check_answer(world, response, raw_id.rsplit(",", 1)[-1], head=method == "HEAD")


@given(body=mutations(PKCS_REQ, [b"\x30\x80", b"\x06\x0a", b"\x13\x0219", b"\x00" * 8,
                                 b"\xff" * 4, b"\x31\x00", PKCS_REQ[:40]]),
       use_get=st.booleans(), granted=st.booleans())
@fuzz(scale=2)
def test_mutated_pki_messages(world, body, use_get, granted):
    host, profile, code = world.grant() if granted else (uuid.uuid4().hex, "P", "notacode")
    path = world.path(host, profile, code)
    before = len(world.fake.calls_for(code, "PKIOperation"))
    # Each example comes from its own address: the per-client refusal limit (tested in
    # tests/security) would otherwise answer 429 once earlier examples used it up.
    client = {"REMOTE_ADDR": world.new_client_address()}
    if use_get:
        response = world.client.get(path, environ_base=client, query_string={
            "operation": "PKIOperation", "message": scep_protocol.encode_get_message(body)})
    else:
        response = world.client.post(path + "?operation=PKIOperation", data=body,
                                     environ_base=client)
    _check_answer(world, response, code)
    try:
        scep_protocol.scep_request_type(body)
        well_formed = True
    except scep_protocol.MalformedMessage:
        well_formed = False
    if not well_formed:
        # Garbage is refused before the processor is asked: the code stays usable.
        assert response.status_code == 400
        assert len(world.fake.calls_for(code, "PKIOperation")) == before
        if granted:
            assert not world.fake.code_used(code)
    elif granted:
        assert response.status_code == 200 and world.fake.code_used(code)
