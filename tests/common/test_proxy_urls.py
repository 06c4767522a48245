"""Proxy URLs (mdmscep_common.proxy_urls): what the processor renders into a profile is what the
proxy reads back, part for part, whatever the public URL looks like."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdmscep_common.proxy_urls import (
    CA_NAME,
    HOST_UUID,
    ONE_TIME_CODE,
    PROFILE_UUID,
    MalformedId,
    ProxyId,
    decode_id,
    decode_url,
    encode_id,
    proxy_url,
)

PROXY_IDS = st.builds(ProxyId, st.from_regex(HOST_UUID, fullmatch=True),
                      st.from_regex(PROFILE_UUID, fullmatch=True),
                      st.from_regex(CA_NAME, fullmatch=True),
                      st.from_regex(ONE_TIME_CODE, fullmatch=True))
PUBLIC_URLS = st.sampled_from(["https://proxy.example", "https://proxy.example/",
                               "http://127.0.0.1:8443/base", "https://proxy.example/a/b/"])


@given(proxy_id=PROXY_IDS, public_url=PUBLIC_URLS)
def test_a_rendered_proxy_url_decodes_to_the_same_id(proxy_id, public_url):
    url = proxy_url(public_url, proxy_id)
    assert url.startswith(public_url.rstrip("/") + "/mdm/scep/proxy/")
    assert "," not in url and url.count("%2C") == 3
    assert decode_url(url) == proxy_id
    assert decode_url(url + "?operation=GetCACaps") == proxy_id


@given(proxy_id=PROXY_IDS)
def test_an_encoded_id_is_one_path_segment_that_decodes_back(proxy_id):
    encoded = encode_id(proxy_id)
    assert "/" not in encoded
    assert decode_id(encoded.replace("%2C", ",")) == proxy_id


@given(proxy_id=PROXY_IDS | st.builds(ProxyId, st.text(min_size=1), st.text(min_size=1),
                                       st.text(min_size=1), st.text(min_size=1)))
def test_an_encoded_id_is_the_whole_id_path_escaped(proxy_id):
    """The shortcut for ids of plain parts gives quote()'s bytes exactly, and anything else still
    goes through quote()."""
    raw = ",".join((proxy_id.host_uuid, proxy_id.profile_uuid, proxy_id.ca_name,
                    proxy_id.one_time_code))
    assert encode_id(proxy_id) == quote(raw, safe="")


def test_the_id_layout():
    url = proxy_url("https://proxy.example/", ProxyId("H-1", "P_1", "Test_SCEP", "c0de"))
    assert url == "https://proxy.example/mdm/scep/proxy/H-1%2CP_1%2CTest_SCEP%2Cc0de"


@pytest.mark.parametrize("url", ["https://proxy.example/elsewhere/H%2CP%2CCA%2Cc",
                                 "https://proxy.example/mdm/scep/proxy/H%2CP%2CCA",
                                 "https://proxy.example/mdm/scep/proxy/H%2CP%2C%3C%3E%2Cc"])
def test_what_is_not_a_proxy_url_is_malformed(url):
    with pytest.raises(MalformedId):
        decode_url(url)
