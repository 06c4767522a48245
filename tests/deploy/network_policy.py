"""Which pod may open a connection to which port of another, under a set of NetworkPolicies.

The rules of networking.k8s.io/v1 for ingress, as a network plugin that enforces them applies
them: a pod that no Ingress policy selects accepts everything; a selected pod accepts a
connection when any rule of any policy selecting it admits both the source (a `from` peer, or
any source when `from` is absent) and the port (a number, or a named container port of the
destination, TCP by default; any port when `ports` is absent). A peer with podSelector alone
means pods of the policy's namespace; with namespaceSelector, pods of matching namespaces; with
both, pods matching both. ipBlock and endPort are refused (deploy/k8s does not use them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class UnsupportedPolicy(Exception):
    """A policy uses a field this model does not implement."""


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    # container port name → (number, protocol); unnamed ports under their number as a string
    ports: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        # Kubernetes labels every namespace with its name.
        return {"kubernetes.io/metadata.name": self.namespace}


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: every matchLabels pair and every matchExpressions term must hold; an
    empty selector matches everything."""
    selector = selector or {}
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise UnsupportedPolicy(f"selector fields {sorted(unknown)}")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for term in selector.get("matchExpressions") or []:
        key, operator, values = term["key"], term["operator"], term.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise UnsupportedPolicy(f"selector operator {operator}")
    return True


def _policy_types(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return spec["policyTypes"]
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def _peer_admits(peer: dict[str, Any], policy_namespace: str, source: Pod) -> bool:
    unknown = set(peer) - {"podSelector", "namespaceSelector"}
    if unknown:
        raise UnsupportedPolicy(f"peer fields {sorted(unknown)}")
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], source.namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector"), source.labels) if "podSelector" in peer else True


def _port_admits(rule_port: dict[str, Any], destination: Pod, port: int, protocol: str) -> bool:
    if "endPort" in rule_port:
        raise UnsupportedPolicy("endPort")
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    if "port" not in rule_port:
        return True
    wanted = rule_port["port"]
    if isinstance(wanted, int):
        return wanted == port
    return destination.ports.get(wanted) == (port, protocol)


def ingress_allowed(policies: list[dict[str, Any]], source: Pod, destination: Pod, port: int,
                    protocol: str = "TCP") -> bool:
    """May `source` connect to `port` of `destination`?"""
    selecting = [p for p in policies
                 if p["metadata"]["namespace"] == destination.namespace
                 and "Ingress" in _policy_types(p)
                 and selector_matches(p["spec"]["podSelector"], destination.labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if peers and not any(_peer_admits(peer, policy["metadata"]["namespace"], source)
                                 for peer in peers):
                continue
            ports = rule.get("ports")
            if ports and not any(_port_admits(p, destination, port, protocol) for p in ports):
                continue
            return True
    return False


def pod_of(workload: dict[str, Any]) -> Pod:
    """The pod a Deployment or Job makes, with the ports of its containers."""
    template = workload["spec"]["template"]
    ports = {}
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            number, protocol = port["containerPort"], port.get("protocol", "TCP")
            ports[port.get("name", str(number))] = (number, protocol)
    return Pod(workload["metadata"]["name"], workload["metadata"]["namespace"],
               dict(template["metadata"]["labels"]), ports)
