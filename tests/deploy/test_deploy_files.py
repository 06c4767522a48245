"""The deployment files (Dockerfiles, docker-compose.yml, nginx, Kubernetes) say what issue 7 asks:
every process of the stack runs with its command, hardened, probed and routed the same way
everywhere. Checked by parsing the files: no Docker engine or cluster is needed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.deploy.deployfiles import (
    COMPOSE_FILE,
    DOCKER_DIR,
    K8S_BASE,
    K8S_OVERLAY,
    MIGRATE_COMMAND,
    NGINX_CONF,
    PROCESSES,
    ROOT,
    ROUTES,
    SERVICE_IMAGES,
    console_scripts,
    dockerfiles,
    load_module,
    nginx_directives,
    nginx_routes,
    parse_dockerfile,
    settings_variables,
)

try:
    import yaml
except ImportError:  # PyYAML is a dev pin still to be added (deploy/README.md)
    yaml = None

needs_yaml = pytest.mark.skipif(yaml is None, reason="PyYAML is not installed (dev pin PyYAML==6.0.3)")
BY_NAME = {p.name: p for p in PROCESSES}


# --- Dockerfiles ------------------------------------------------------------------------------

def test_every_image_has_its_dockerfile():
    names = {path.name.removesuffix(".Dockerfile") for path in dockerfiles()}
    assert {*SERVICE_IMAGES, "migrate", "scepserver"} <= names
    assert not (DOCKER_DIR / "Dockerfile").exists(), "the one-image sketch is replaced"


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_pins_base_runs_as_non_root_and_has_healthcheck(path):
    dockerfile = parse_dockerfile(path)
    stages = set()
    for args in dockerfile.all("FROM"):
        image, *rest = args.split()
        if image in stages:
            continue
        assert ":" in image.split("/")[-1] or "@sha256:" in image, f"{image} has no tag"
        tag = image.split("@")[0].rsplit(":", 1)[1]
        assert re.search(r"\d+\.\d+", tag) and "latest" not in tag, f"{image}: pin a version"
        if rest and rest[0].upper() == "AS":
            stages.add(rest[1])
    assert "imagetools inspect" in dockerfile.comments and "@sha256:" in dockerfile.comments, \
        "document how to pin the base by digest"
    users = dockerfile.final("USER")
    assert users, "the final stage sets USER"
    assert users[-1].split(":")[0] not in ("0", "root"), "runs as a non-root user"
    healthchecks = dockerfile.final("HEALTHCHECK")
    assert healthchecks, "HEALTHCHECK (or an explicit HEALTHCHECK NONE for jobs and test tools)"
    if path.stem.split(".")[0] in (*SERVICE_IMAGES, "scepserver"):
        assert healthchecks[-1].startswith("--") or healthchecks[-1].startswith("CMD"), \
            "long-running images check their health"


@pytest.mark.parametrize("image", [*SERVICE_IMAGES, "migrate"])
def test_service_image_is_multi_stage_with_only_its_package(image):
    dockerfile = parse_dockerfile(DOCKER_DIR / f"{image}.Dockerfile")
    assert len(dockerfile.all("FROM")) >= 2, "multi-stage"
    runs = " ".join(dockerfile.all("RUN"))
    assert "--no-deps -r requirements/runtime.txt" in runs, "third-party packages exactly as pinned"
    assert "pip check" in runs
    # The migration image carries every service's package, for its migrations folder.
    packages = ({"common", SERVICE_IMAGES[image]} if image in SERVICE_IMAGES
                else {"common", *SERVICE_IMAGES.values()})
    copied = {args.split()[0].removeprefix("services/") for args in dockerfile.all("COPY")
              if args.startswith("services/")}
    assert copied == packages
    installed = set(re.findall(r"\./services/(\w+)", runs))
    assert installed == packages
    assert re.search(r"pip install [^&]*--no-deps /wheels/", runs), "our packages with --no-deps"


@pytest.mark.parametrize("image", [*SERVICE_IMAGES, "migrate"])
def test_service_image_command_is_its_console_script(image):
    dockerfile = parse_dockerfile(DOCKER_DIR / f"{image}.Dockerfile")
    command = json.loads(dockerfile.final("CMD")[-1])
    scripts = console_scripts("common") | console_scripts(SERVICE_IMAGES.get(image, "common"))
    assert command[0] in scripts
    expected = [p.command for p in PROCESSES if p.image == image] or [MIGRATE_COMMAND]
    assert command in expected, "the default command is one of the image's processes"


def test_health_check_script_knows_every_process():
    healthcheck = load_module(DOCKER_DIR / "healthcheck.py", "healthcheck")
    for process in PROCESSES:
        role = process.name if process.kind != "http" or process.name == "admin-config" \
            else f"{process.name}-http"
        kind, variable, default = healthcheck.ROLES[role]
        assert kind == process.kind.replace("push", "deps")
        assert default == (process.port or 0)
        assert not variable or variable in settings_variables()


def test_scepserver_image_is_debian_scep_with_initialising_entrypoint():
    dockerfile = parse_dockerfile(DOCKER_DIR / "scepserver.Dockerfile")
    assert dockerfile.all("FROM")[-1].startswith("debian:")
    assert re.search(r"apt-get install [^&]*\"?scep=", " ".join(dockerfile.all("RUN")))
    assert "scepserver-entrypoint" in dockerfile.final("ENTRYPOINT")[-1]
    script = (DOCKER_DIR / "scepserver-entrypoint.sh").read_text()
    assert "ca -init" in script and 'if [ ! -s "$depot/ca.pem" ]' in script
    assert "-allowrenew 0" in script
    assert "SCEP_CHALLENGE_PASSWORD" in script and "-challenge" not in script.split("exec")[-1], \
        "the challenge comes from the environment, never the command line"


def test_dockerignore_keeps_local_state_out_of_images():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", ".service-pki", "**/*.egg-info", "**/__pycache__"} <= set(ignored)


# --- docker-compose.yml ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@needs_yaml
def test_compose_runs_every_process_with_its_command(compose):
    services = compose["services"]
    for process in PROCESSES:
        service = services[process.name]
        assert service["command"] == process.command
        assert service["build"]["dockerfile"] == f"deploy/docker/{process.image}.Dockerfile"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "CMD" in service["healthcheck"]["test"]
    assert services["migrate"]["command"] == MIGRATE_COMMAND


@needs_yaml
def test_compose_starts_what_make_run_starts(compose):
    launcher = load_module(ROOT / "deploy" / "local" / "launcher.py", "launcher")
    commands = [service.get("command") for service in compose["services"].values()]
    for _name, command in launcher.PROGRAMS:
        assert command.split() in commands


@needs_yaml
def test_compose_shares_one_environment_and_adds_each_service_its_own(compose):
    """The settings are shared (x-env); each process adds its secrets (tests/security/
    test_deploy_isolation.py checks which) and, with gRPC, its certificate's paths."""
    env = compose["x-env"]
    assert not set(env) & {"SERVER_PRIVATE_KEY", "ADMIN_API_TOKEN", "ENROLL_SECRET",
                           "IDENTITY_SCEP_CHALLENGE"}, "secrets are per service"
    for process in PROCESSES:
        environment = compose["services"][process.name]["environment"]
        # DATABASE_URL is the one shared value a process replaces: with its own role's URL.
        shared = {k: v for k, v in env.items() if k != "DATABASE_URL"}
        assert environment.items() >= shared.items(), process.name
        assert environment["DATABASE_URL"] in compose["x-service-databases"].values()
        if "SERVER_PRIVATE_KEY" in environment:
            assert environment["SERVER_PRIVATE_KEY"].startswith("${SERVER_PRIVATE_KEY:?"), \
                "compose refuses to start without it"
        assert set(environment) <= settings_variables(), "only variables the services read"
    assert set(compose["services"]["migrate"]["environment"]) <= settings_variables()


@needs_yaml
def test_compose_scep_proxy_can_scale(compose):
    proxy = compose["services"]["scep-proxy"]
    for key in ("ports", "container_name", "hostname"):
        assert key not in proxy, f"scep-proxy with {key} cannot run as several replicas"


@needs_yaml
def test_compose_infrastructure_is_pinned_and_checked(compose):
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "nginx"):
        image = services[name]["image"]
        assert re.search(r":\d+\.\d+", image), f"{name}: pin a version tag"
        assert services[name]["healthcheck"]["test"]
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file(), name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists() if source.startswith(".") else source in compose["volumes"]
        for network in service.get("networks", []):
            assert network in compose["networks"], f"{name} joins unknown network {network}"
        for secret in service.get("secrets", []):
            assert secret["source"] in compose["secrets"], f"{name} mounts unknown {secret}"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./.service-pki/"), "made by mdmscep-service-pki"


@needs_yaml
def test_compose_has_scepservers_and_demo_hosts_with_their_fake_apns(compose):
    services = compose["services"]
    for name in ("custom-ca", "identity-ca"):
        assert services[name]["build"]["dockerfile"] == "deploy/docker/scepserver.Dockerfile"
        assert services[name]["environment"]["SCEP_CHALLENGE_PASSWORD"]
    assert services["demo-pki"]["command"][:4] == ["python", "-m", "hostsim", "pki"]
    demo = services["demo"]["command"]
    assert demo[:4] == ["python", "-m", "hostsim", "run"]
    assert "--hosts" in demo and "--apns-port" in demo  # the hosts run their own fake APNs
    assert services["nginx"]["volumes"] == ["./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro"]


# --- nginx -------------------------------------------------------------------------------------

def test_nginx_routes_the_three_prefixes_to_every_replica():
    text = NGINX_CONF.read_text()
    assert nginx_routes(text) == ROUTES
    directives = {name: args for _blocks, name, args in nginx_directives(text)}
    assert directives["resolver"][0] == "127.0.0.11", "Docker's DNS finds scaled replicas"
    assert directives["client_max_body_size"] == ["2m"]
    for _blocks, name, args in nginx_directives(text):
        if name == "proxy_pass":
            assert re.fullmatch(r"http://\$\w+", args[0]), \
                "a variable (resolved per request) and no URI (the path is passed unchanged)"
    assert int(directives["proxy_read_timeout"][0].rstrip("s")) > 30, "> SCEP_UPSTREAM_TIMEOUT"
    assert directives["proxy_connect_timeout"] and directives["proxy_send_timeout"]


@needs_yaml
def test_nginx_backends_are_compose_services(compose):
    for prefix, (host, port) in nginx_routes(NGINX_CONF.read_text()).items():
        assert host in compose["services"], prefix
        assert BY_NAME[host].port == port


# --- Kubernetes --------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[K8S_BASE, K8S_OVERLAY], ids=["base", "overlay"])
def rendered(request):
    from tests.deploy.kustomize_lite import build
    return build(request.param)


def objects_of(rendered, kind):
    return {obj["metadata"]["name"]: obj for obj in rendered if obj["kind"] == kind}


@needs_yaml
def test_kustomizations_list_every_manifest():
    for directory in (K8S_BASE, K8S_OVERLAY):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for resource in kustomization["resources"]:
            assert (directory / resource).exists(), resource
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert files <= set(kustomization["resources"]), "a manifest not in kustomization.yaml"
    for path in (ROOT / "deploy" / "k8s").rglob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text())), path


@needs_yaml
def test_every_process_has_a_deployment_with_its_command(rendered):
    deployments = objects_of(rendered, "Deployment")
    assert set(deployments) == set(BY_NAME)
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == BY_NAME[name].command
        image = container["image"].split("@")[0].rsplit(":", 1)[0]
        assert image.endswith(f"mdmscep/{BY_NAME[name].image}")
    (job,) = objects_of(rendered, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == MIGRATE_COMMAND


@needs_yaml
def test_every_container_is_probed_sized_and_hardened(rendered):
    workloads = [*objects_of(rendered, "Deployment").values(), *objects_of(rendered, "Job").values()]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False, "service links collide with *_PORT settings"
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["seccompProfile"]["type"] == "RuntimeDefault"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound])
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes
                       for m in container["volumeMounts"])
            if workload["kind"] == "Deployment":
                check_probes(BY_NAME[workload["metadata"]["name"]], container)


def check_probes(process, container):
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for probe_name in ("readinessProbe", "livenessProbe"):
        probe = container[probe_name]
        if process.kind == "http":
            assert probe["httpGet"]["path"] == "/healthz"
            assert ports[probe["httpGet"]["port"]] == process.port
        elif process.kind == "grpc":
            # Kubernetes' grpc probe speaks no TLS: healthcheck.py asks over mutual TLS.
            assert probe["exec"]["command"] == ["python", "/opt/mdmscep/healthcheck.py", process.name]
            assert ports["grpc"] == process.port
        else:
            assert probe["exec"]["command"][-1] == process.name
            assert set(ports) <= {"metrics"}  # a worker serves only Prometheus metrics


@needs_yaml
def test_scep_proxy_and_profile_processor_autoscale(rendered):
    hpas = objects_of(rendered, "HorizontalPodAutoscaler")
    deployments = objects_of(rendered, "Deployment")
    assert set(hpas) == {"scep-proxy", "profile-processor"}
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployments[name]["spec"], "the autoscaler owns the count"


@needs_yaml
def test_every_deployment_has_a_disruption_budget(rendered):
    budgets = objects_of(rendered, "PodDisruptionBudget")
    for name, deployment in objects_of(rendered, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()


@needs_yaml
def test_services_and_grpc_addresses_reach_their_pods(rendered):
    deployments = objects_of(rendered, "Deployment")
    services = objects_of(rendered, "Service")
    for process in PROCESSES:
        if process.port is None:
            assert process.name not in services
            continue
        service = services[process.name]
        pod = deployments[process.name]["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        (port,) = service["spec"]["ports"]
        assert port["port"] == process.port
        assert port["targetPort"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    config = objects_of(rendered, "ConfigMap")["mdmscep-config"]["data"]
    for variable in ("PROCESSOR_GRPC_ADDR", "MDM_GRPC_ADDR", "SCEP_PROXY_GRPC_ADDR"):
        host, port = config[variable].split(":")
        assert services[host]["spec"]["ports"][0]["port"] == int(port)


@needs_yaml
def test_configuration_uses_known_variables_and_marked_example_secrets(rendered):
    config = objects_of(rendered, "ConfigMap")["mdmscep-config"]["data"]
    assert set(config) <= settings_variables()
    secrets = objects_of(rendered, "Secret")
    assert secrets, "one Secret per service (secrets.yaml)"
    for secret in secrets.values():
        data = secret["stringData"]
        variables = {key for key in data if key.isupper()}
        assert variables <= settings_variables()
        assert set(data) - variables <= {"ca.crt", "tls.crt", "tls.key"}, "the gRPC TLS files"
        if "SERVER_PRIVATE_KEY" in data:
            assert len(data["SERVER_PRIVATE_KEY"]) >= 32
        assert all("EXAMPLE-ONLY" in value for value in data.values())
        assert not set(config) & variables
    for deployment in objects_of(rendered, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert {v["name"] for v in container.get("env", [])} <= settings_variables() | {
                "PROMETHEUS_MULTIPROC_DIR"}


@needs_yaml
def test_ingress_routes_like_nginx(rendered):
    (ingress,) = objects_of(rendered, "Ingress").values()
    services = objects_of(rendered, "Service")
    routes = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
            backend = path["backend"]["service"]
            (port,) = [p["port"] for p in services[backend["name"]]["spec"]["ports"]
                       if p["name"] == backend["port"]["name"]]
            routes[path["path"]] = (backend["name"], port)
    assert routes == ROUTES == nginx_routes(NGINX_CONF.read_text())
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "2m"


@needs_yaml
def test_example_overlay_sets_images_replicas_and_host():
    from tests.deploy.kustomize_lite import build
    rendered = build(K8S_OVERLAY)
    for workload in [*objects_of(rendered, "Deployment").values(), *objects_of(rendered, "Job").values()]:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert container["image"].startswith("registry.example.com/mdmscep/")
    (ingress,) = objects_of(rendered, "Ingress").values()
    host = ingress["spec"]["rules"][0]["host"]
    assert ingress["spec"]["tls"][0]["hosts"] == [host]
    config = objects_of(rendered, "ConfigMap")["mdmscep-config"]["data"]
    assert config["MDM_PUBLIC_URL"] == config["SCEP_PROXY_PUBLIC_URL"] == f"https://{host}"
    assert all(obj["metadata"].get("namespace") == "mdmscep"
               for obj in rendered if obj["kind"] != "Namespace")


def kubectl_kustomize_version() -> tuple[int, ...] | None:
    if shutil.which("kubectl") is None:
        return None
    out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True,
                         timeout=30).stdout
    found = re.search(r"Kustomize Version: v(\d+)\.(\d+)", out)
    return tuple(map(int, found.groups())) if found else None


@needs_yaml
@pytest.mark.skipif((kubectl_kustomize_version() or (0,)) < (4,), reason="needs kubectl with kustomize v4+")
@pytest.mark.parametrize("directory", [K8S_BASE, K8S_OVERLAY], ids=["base", "overlay"])
def test_kubectl_kustomize_renders_the_same(directory):
    from tests.deploy.kustomize_lite import build
    out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True,
                         check=True, timeout=60).stdout

    def key(obj):
        return obj["kind"], obj["metadata"]["name"]
    ours = {key(obj): obj for obj in build(directory)}
    theirs = {key(obj): obj for obj in yaml.safe_load_all(out) if obj}
    assert ours == theirs
