"""The NetworkPolicy model of tests/deploy/network_policy.py follows the documented semantics
(kubernetes.io "Network Policies"): the isolation tests are only as good as it is."""

from __future__ import annotations

import pytest

from tests.deploy.network_policy import Pod, UnsupportedPolicy, ingress_allowed

WEB = Pod("web", "shop", {"app": "web"}, {"http": (8080, "TCP")})
API = Pod("api", "shop", {"app": "api"})
API_ELSEWHERE = Pod("api", "other", {"app": "api"})
PROMETHEUS = Pod("prometheus", "monitoring", {"app": "prometheus"})


def policy(spec, namespace="shop"):
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": namespace}, "spec": spec}


DENY_ALL = policy({"podSelector": {}, "policyTypes": ["Ingress"]})


def test_a_pod_no_policy_selects_accepts_everything():
    only_api = policy({"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"]})
    assert ingress_allowed([only_api], API, WEB, 8080)
    assert not ingress_allowed([only_api], WEB, API, 8080)
    assert ingress_allowed([], API, WEB, 1)


def test_default_deny_then_allow_is_a_union():
    allow_api = policy({"podSelector": {"matchLabels": {"app": "web"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                                     "ports": [{"port": 8080}]}]})
    assert not ingress_allowed([DENY_ALL], API, WEB, 8080)
    assert ingress_allowed([DENY_ALL, allow_api], API, WEB, 8080)
    assert not ingress_allowed([DENY_ALL, allow_api], API, WEB, 9090), "another port"
    assert not ingress_allowed([DENY_ALL, allow_api], WEB, WEB, 8080), "another pod"
    assert not ingress_allowed([DENY_ALL, allow_api], API_ELSEWHERE, WEB, 8080), \
        "a podSelector alone means the policy's own namespace"


def test_namespace_and_pod_selector_in_one_peer_must_both_match():
    both = policy({"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app": "prometheus"}}}]}]})
    either = policy({"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"podSelector": {"matchLabels": {"app": "prometheus"}}}]}]})
    impostor = Pod("prometheus", "shop", {"app": "prometheus"})
    grafana = Pod("grafana", "monitoring", {"app": "grafana"})
    assert ingress_allowed([both], PROMETHEUS, WEB, 8080)
    assert not ingress_allowed([both], impostor, WEB, 8080)
    assert not ingress_allowed([both], grafana, WEB, 8080)
    assert ingress_allowed([either], impostor, WEB, 8080)
    assert ingress_allowed([either], grafana, WEB, 8080)


def test_named_ports_resolve_on_the_destination_and_match_expressions_apply():
    named = policy({"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web", "api"]}]},
        "ingress": [{"ports": [{"port": "http"}]}]})
    assert ingress_allowed([named], API, WEB, 8080)
    assert not ingress_allowed([named], API, WEB, 8081)
    assert not ingress_allowed([named], WEB, API, 8080), "api has no port named http"
    assert not ingress_allowed([named], API, WEB, 8080, protocol="UDP")


def test_fields_outside_the_model_are_refused():
    with pytest.raises(UnsupportedPolicy):
        ingress_allowed([policy({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})], API, WEB, 8080)
