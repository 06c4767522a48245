"""Deployment isolation: deploy/ gives each service only its own secrets, from a Secret per
service, and its own gRPC certificate; NetworkPolicies let only the intended callers reach each
gRPC port; compose publishes none and keeps the gRPC servers on its internal network (one network:
there mutual TLS and the per-method caller check, tests/security/test_internal_grpc.py, keep the
wrong callers out). Checked from the files (Kubernetes manifests rendered by
tests/deploy/kustomize_lite.py, docker-compose.yml as YAML), and the compose certificate mounts
against real files from `mdmscep-service-pki`."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from mdmscep_common.grpc_callers import CALLERS
from mdmscep_common.service_tls import ServiceTls
from tests.deploy.deployfiles import (
    COMPOSE_FILE,
    GRPC_CALLERS,
    GRPC_PROCESSES,
    GRPC_SERVES,
    GRPC_TLS_VARIABLES,
    K8S_BASE,
    K8S_OVERLAY,
    MIGRATE_SECRETS,
    NOT_FOR_SCEP_PROXY,
    PROCESS_SECRETS,
    PROCESSES,
    ROOT,
    SECRET_VARIABLES,
    SERVICE_IMAGES,
    SERVICE_OF,
    SERVICES,
)
from tests.deploy.kustomize_lite import build
from tests.deploy.network_policy import Pod, ingress_allowed, pod_of

BY_NAME = {p.name: p for p in PROCESSES}
TLS_FILES = set(GRPC_TLS_VARIABLES.values())
# Secrets a pod may mount besides its service's own: the MDM push certificate (mdm-endpoint).
OPERATOR_SECRETS = {"mdm-endpoint": {"mdmscep-apns"}, "mdm-endpoint-push": {"mdmscep-apns"}}


def test_the_deployment_callers_are_the_ones_each_grpc_server_admits():
    """The callers deploy/ lets through are exactly those the servers' per-method check admits
    (mdmscep_common.grpc_callers): neither a caller the network blocks nor a path left open."""
    for server, services in GRPC_SERVES.items():
        admitted = set().union(*(CALLERS[service] for service in services))
        assert {SERVICE_OF[caller] for caller in GRPC_CALLERS[server]} == admitted, server
    assert set().union(*GRPC_SERVES.values()) == set(CALLERS) - {"grpc.health.v1.Health"}


def test_each_process_mounts_the_certificate_of_the_service_its_code_names():
    for process in PROCESSES:
        main = importlib.import_module(f"{SERVICE_IMAGES[process.image]}.main")
        assert main.SERVICE == SERVICE_OF[process.name], process.name


# --- Kubernetes ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[K8S_BASE, K8S_OVERLAY], ids=["base", "overlay"])
def rendered(request):
    return build(request.param)


def of_kind(rendered, kind):
    return {obj["metadata"]["name"]: obj for obj in rendered if obj["kind"] == kind}


def workloads(rendered):
    """(process name or "migrate", pod spec) of every Deployment and the migration Job."""
    for name, deployment in of_kind(rendered, "Deployment").items():
        yield name, deployment["spec"]["template"]["spec"]
    for job in of_kind(rendered, "Job").values():
        yield "migrate", job["spec"]["template"]["spec"]


def own_secret(process: str) -> str:
    return f"mdmscep-{SERVICE_OF.get(process, process)}"


def test_one_secret_per_service_holding_only_what_it_uses(rendered):
    secrets = {name: set(obj.get("stringData", {})) | set(obj.get("data", {}))
               for name, obj in of_kind(rendered, "Secret").items()}
    expected = {f"mdmscep-{service}": set() for service in SERVICES}
    for process, keys in PROCESS_SECRETS.items():
        expected[own_secret(process)] |= keys
        if process in GRPC_PROCESSES:
            expected[own_secret(process)] |= TLS_FILES
    expected["mdmscep-migrate"] = MIGRATE_SECRETS
    assert secrets == expected
    assert not secrets["mdmscep-scep-proxy"] & NOT_FOR_SCEP_PROXY


def test_every_pod_reads_only_its_own_secret_and_only_the_keys_it_uses(rendered):
    for process, pod in workloads(rendered):
        own = own_secret(process)
        allowed = PROCESS_SECRETS.get(process, MIGRATE_SECRETS)
        for container in pod["containers"]:
            assert not any("secretRef" in source for source in container.get("envFrom", [])), \
                f"{process}: envFrom a Secret would hand over every key of it"
            names = set()
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == own, f"{process} reads {ref['name']}"
                    assert ref["key"] == variable["name"]
                names.add(variable["name"])
            assert names & SECRET_VARIABLES == allowed, process
        for volume in pod.get("volumes", []):
            assert "projected" not in volume, process
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert name == own or name in OPERATOR_SECRETS.get(process, set()), \
                    f"{process} mounts {name}"
                if name == own:
                    assert {item["key"] for item in volume["secret"]["items"]} == TLS_FILES, \
                        f"{process}: mount only the TLS files of its Secret"


def test_scep_proxy_pods_hold_no_encryption_key_admin_token_or_enroll_secret(rendered):
    secrets = of_kind(rendered, "Secret")
    for process in ("scep-proxy", "scep-proxy-grpc"):
        pod = of_kind(rendered, "Deployment")[process]["spec"]["template"]["spec"]
        text = json.dumps(pod)
        for name in NOT_FOR_SCEP_PROXY:
            assert name not in text, f"{process} pod spec names {name}"
        referenced = {ref["name"] for c in pod["containers"] for v in c.get("env", [])
                      if (ref := v.get("valueFrom", {}).get("secretKeyRef"))}
        referenced |= {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert referenced == {"mdmscep-scep-proxy"}
        for name in referenced:
            assert not set(secrets[name]["stringData"]) & NOT_FOR_SCEP_PROXY


def test_every_process_that_serves_or_calls_grpc_has_its_service_certificate(rendered):
    for process, pod in workloads(rendered):
        (container,) = pod["containers"]
        env = {v["name"]: v.get("value") for v in container.get("env", [])}
        if process not in GRPC_PROCESSES:
            assert not set(env) & set(GRPC_TLS_VARIABLES), f"{process} uses no gRPC"
            assert "grpc-tls" not in {v["name"] for v in pod.get("volumes", [])}
            continue
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for variable, file_name in GRPC_TLS_VARIABLES.items():
            path = PurePosixPath(env[variable])
            mount = mounts[str(path.parent)]
            assert mount.get("readOnly") is True
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == own_secret(process), process
            (item,) = [i for i in secret["items"] if i["path"] == path.name]
            assert item["key"] == file_name
            assert secret["defaultMode"] & 0o007 == 0, "not readable by other users"
        if process in GRPC_SERVES:
            assert env["GRPC_BIND_ADDRESS"] == "0.0.0.0", "callers reach it over the pod network"


def test_network_policies_let_only_the_intended_callers_in(rendered):
    policies = list(of_kind(rendered, "NetworkPolicy").values())
    pods = {name: pod_of(obj) for name, obj in
            [*of_kind(rendered, "Deployment").items(), *of_kind(rendered, "Job").items()]}
    controller = Pod("ingress-controller", "ingress-nginx", {
        "app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"})
    prometheus = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    strangers = [
        Pod("debug-shell", "mdmscep", {"app.kubernetes.io/name": "debug"}),
        Pod("unlabelled", "mdmscep", {}),
        Pod("fake-controller", "default", dict(controller.labels)),
        Pod("admission-webhook", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx",
                                                   "app.kubernetes.io/component": "admission-webhook"}),
        Pod("fake-prometheus", "mdmscep", dict(prometheus.labels)),
        Pod("grafana", "monitoring", {"app.kubernetes.io/name": "grafana"}),
    ]
    sources = [*pods.values(), controller, prometheus, *strangers]

    expected: dict[tuple[str, int], set[str]] = {}
    grpc_ports = set()
    for process in PROCESSES:
        ports = pods[process.name].ports
        if process.kind == "grpc":
            expected[(process.name, ports["grpc"][0])] = GRPC_CALLERS[process.name]
            grpc_ports.add(ports["grpc"][0])
        if process.kind == "http":
            expected[(process.name, ports["http"][0])] = {controller.name, prometheus.name}
        if "metrics" in ports:
            expected[(process.name, ports["metrics"][0])] = {prometheus.name}
    assert grpc_ports == {50051, 50052, 50053}

    # Default deny covers every pod of the namespace, also one that no other policy names.
    other_pod = Pod("other-pod", "mdmscep", {"app": "other"}, {"http": (8080, "TCP")})
    for destination in [*pods.values(), other_pod]:
        declared = {number for number, _protocol in destination.ports.values()}
        for port in declared | {22, 5432}:
            allowed = {source.name for source in sources
                       if ingress_allowed(policies, source, destination, port)}
            assert allowed == expected.get((destination.name, port), set()), \
                f"{destination.name}:{port} reachable from {sorted(allowed)}"


# --- docker-compose.yml -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_secret_files(compose, service: dict) -> dict[str, str]:
    """/run/secrets path in the container → the file on the host it comes from."""
    files = {}
    for entry in service.get("secrets", []):
        entry = entry if isinstance(entry, dict) else {"source": entry}
        target = entry.get("target", entry["source"])
        path = target if target.startswith("/") else f"/run/secrets/{target}"
        files[path] = compose["secrets"][entry["source"]]["file"]
    return files


def test_compose_services_get_only_their_own_secrets(compose):
    for process in PROCESSES:
        service = compose["services"][process.name]
        assert "env_file" not in service
        assert set(service["environment"]) & SECRET_VARIABLES == PROCESS_SECRETS[process.name], \
            process.name
        identity = SERVICE_OF[process.name]
        for host_file in compose_secret_files(compose, service).values():
            parts = PurePosixPath(host_file).parts
            assert parts[:2] == (".", ".service-pki") or parts[:1] == (".service-pki",)
            assert host_file.endswith("/ca.crt") or f"/{identity}/" in host_file, \
                f"{process.name} mounts {host_file}"
    migrate = compose["services"]["migrate"]
    assert set(migrate["environment"]) & SECRET_VARIABLES == MIGRATE_SECRETS
    assert "secrets" not in migrate


def test_compose_scep_proxy_holds_no_encryption_key_admin_token_or_enroll_secret(compose):
    for name in ("scep-proxy", "scep-proxy-grpc"):
        text = json.dumps(compose["services"][name])
        for secret in NOT_FOR_SCEP_PROXY:
            assert secret not in text, f"{name} names {secret}"


def test_compose_grpc_processes_have_their_service_certificate(compose):
    for process in PROCESSES:
        service = compose["services"][process.name]
        env = service["environment"]
        if process.name not in GRPC_PROCESSES:
            assert not set(env) & set(GRPC_TLS_VARIABLES) and "secrets" not in service
            continue
        files = compose_secret_files(compose, service)
        identity = SERVICE_OF[process.name]
        for variable, file_name in GRPC_TLS_VARIABLES.items():
            expected = "ca.crt" if file_name == "ca.crt" else f"{identity}/{file_name}"
            assert PurePosixPath(files[env[variable]]) == PurePosixPath(".service-pki", expected)
        assert set(files) == {env[v] for v in GRPC_TLS_VARIABLES}, "nothing else mounted"
        if process.name in GRPC_SERVES:
            assert env["GRPC_BIND_ADDRESS"] == "0.0.0.0"


def test_compose_certificates_from_mdmscep_service_pki_name_the_service_that_mounts_them(
        compose, tmp_path):
    """Run the real tool into a .service-pki next to a copy of the compose file, then load each
    process's mounted files the way the service does at start (ServiceTls: the certificate must
    be the service CA's, name the process's service and match its key)."""
    subprocess.run([str(Path(sys.executable).parent / "mdmscep-service-pki"),
                    str(tmp_path / ".service-pki")], check=True, capture_output=True, timeout=60)
    for name in GRPC_PROCESSES:
        service = compose["services"][name]
        files = compose_secret_files(compose, service)
        host = {variable: tmp_path / files[service["environment"][variable]]
                for variable in GRPC_TLS_VARIABLES}
        ServiceTls.from_files(SERVICE_OF[name], str(host["GRPC_TLS_CA_CERT"]),
                              str(host["GRPC_TLS_CERT"]), str(host["GRPC_TLS_KEY"]))


def networks_of(service: dict) -> set[str]:
    networks = service.get("networks", [])
    return set(networks) if isinstance(networks, list) else set(networks or {})


def test_compose_publishes_no_grpc_port_and_keeps_grpc_servers_on_the_internal_network(compose):
    services = compose["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx"}, "only the entry publishes a port"
    for name, service in services.items():
        assert "network_mode" not in service or service["network_mode"] == "none", name
        assert not any(str(port).split(":")[-1].startswith("5005")
                       for port in service.get("ports", [])), name
    networks = compose["networks"]
    assert networks["backend"]["internal"] is True
    backend = {name for name, service in services.items() if "backend" in networks_of(service)}
    assert backend == {p.name for p in PROCESSES} | {"migrate", "postgres", "rabbitmq", "nginx"}
    for server in GRPC_SERVES:
        peers = {name for name, service in services.items()
                 if name != server and networks_of(service) & networks_of(services[server])}
        outside = peers - backend
        # scep-proxy-grpc probes the admins' CAs; custom-ca stands for one of them.
        assert outside <= ({"custom-ca"} if server == "scep-proxy-grpc" else set()), \
            f"{server} reachable from {sorted(outside)}"
        assert not any(services[peer].get("ports") for peer in outside)
    edge_of_backend = {name for name in backend if networks_of(services[name]) - {"backend"}}
    assert edge_of_backend == {"nginx", "mdm-endpoint-push", "scep-proxy", "scep-proxy-grpc"}, \
        "only the entry and the processes that must reach outside (APNs, the CAs) leave backend"


def test_service_pki_stays_out_of_git_and_images():
    assert ".service-pki/" in (ROOT / ".gitignore").read_text().split()
    assert ".service-pki" in (ROOT / ".dockerignore").read_text().split()
