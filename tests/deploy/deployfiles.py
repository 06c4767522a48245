"""What the deployment files should agree on, and small parsers for them (Dockerfile, nginx.conf).

The process table is the one list every deployment form (launcher, compose, Kubernetes) must run.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "deploy" / "docker"
COMPOSE_FILE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
K8S_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "example"


@dataclass(frozen=True)
class Process:
    name: str           # compose service and Kubernetes Deployment
    command: list[str]
    kind: str           # http | grpc | push (a worker: no port but its metrics)
    port: int | None
    image: str          # deploy/docker/<image>.Dockerfile


PROCESSES = [
    Process("admin-config", ["admin-config", "serve"], "http", 8080, "admin-config"),
    Process("admin-config-worker", ["admin-config", "worker"], "push", None, "admin-config"),
    Process("mdm-endpoint", ["mdm-endpoint", "http"], "http", 8081, "mdm-endpoint"),
    Process("mdm-endpoint-grpc", ["mdm-endpoint", "grpc"], "grpc", 50052, "mdm-endpoint"),
    Process("mdm-endpoint-push", ["mdm-endpoint", "push"], "push", None, "mdm-endpoint"),
    Process("scep-proxy", ["scep-proxy", "http"], "http", 8082, "scep-proxy"),
    Process("scep-proxy-grpc", ["scep-proxy", "grpc"], "grpc", 50053, "scep-proxy"),
    Process("profile-processor", ["profile-processor"], "grpc", 50051, "profile-processor"),
]
MIGRATE_COMMAND = ["mdmscep-migrate"]

# Service images: Dockerfile name → the package directory it installs besides services/common.
SERVICE_IMAGES = {"admin-config": "admin_config", "mdm-endpoint": "mdm_endpoint",
                  "scep-proxy": "scep_proxy", "profile-processor": "profile_processor"}

# The entry's routing, in nginx (compose) and the Ingress (Kubernetes): prefix → (service, port).
ROUTES = {
    "/mdm/scep/proxy/": ("scep-proxy", 8082),
    "/mdm/": ("mdm-endpoint", 8081),
    "/api/": ("admin-config", 8080),
}


# --- Secrets and internal gRPC ------------------------------------------------------------------

# Process → the service it belongs to: its Secret (mdmscep-<service>) and its gRPC certificate's
# name (CN and SAN DNS, mdmscep_common.service_tls.SERVICES).
SERVICE_OF = {
    "admin-config": "admin-config",
    "admin-config-worker": "admin-config",
    "mdm-endpoint": "mdm-endpoint",
    "mdm-endpoint-grpc": "mdm-endpoint",
    "mdm-endpoint-push": "mdm-endpoint",
    "scep-proxy": "scep-proxy",
    "scep-proxy-grpc": "scep-proxy",
    "profile-processor": "profile-processor",
}
SERVICES = ("admin-config", "profile-processor", "mdm-endpoint", "scep-proxy")

# gRPC server process → the gRPC services it serves, and the processes that call it.
GRPC_SERVES = {
    "profile-processor": {"mdmscep.v1.ProfileAuthority", "mdmscep.v1.DeliveryDirectory"},
    "mdm-endpoint-grpc": {"mdmscep.v1.Commander", "mdmscep.v1.HostRegistry"},
    "scep-proxy-grpc": {"mdmscep.v1.ScepGateway"},
}
GRPC_CALLERS = {
    "profile-processor": {"scep-proxy", "admin-config"},
    "mdm-endpoint-grpc": {"profile-processor", "admin-config"},
    "scep-proxy-grpc": {"admin-config"},
}
# Every process that serves or calls gRPC: it needs its service's certificate.
GRPC_PROCESSES = set(GRPC_CALLERS) | set().union(*GRPC_CALLERS.values())
GRPC_TLS_VARIABLES = {"GRPC_TLS_CA_CERT": "ca.crt", "GRPC_TLS_CERT": "tls.crt",
                      "GRPC_TLS_KEY": "tls.key"}

# The secrets a process may hold (README "Configuration"); every one of them, in any variable.
SECRET_VARIABLES = {"DATABASE_URL", "AMQP_URL", "SERVER_PRIVATE_KEY", "ADMIN_API_TOKEN",
                    "ENROLL_SECRET", "IDENTITY_SCEP_CHALLENGE", "ADMIN_CONFIG_DATABASE_URL",
                    "MDM_ENDPOINT_DATABASE_URL", "PROFILE_PROCESSOR_DATABASE_URL",
                    "SCEP_PROXY_DATABASE_URL"}
CONNECTIONS = {"DATABASE_URL", "AMQP_URL"}
PROCESS_SECRETS = {
    "admin-config": CONNECTIONS | {"SERVER_PRIVATE_KEY", "ADMIN_API_TOKEN"},
    "admin-config-worker": CONNECTIONS,
    "mdm-endpoint": CONNECTIONS | {"SERVER_PRIVATE_KEY", "ENROLL_SECRET", "IDENTITY_SCEP_CHALLENGE"},
    "mdm-endpoint-grpc": CONNECTIONS | {"SERVER_PRIVATE_KEY"},
    "mdm-endpoint-push": CONNECTIONS,
    "scep-proxy": CONNECTIONS,
    "scep-proxy-grpc": CONNECTIONS,
    "profile-processor": CONNECTIONS | {"SERVER_PRIVATE_KEY"},
}
# The owner's URL, and each service's, whose role and password the migration step sets.
MIGRATE_SECRETS = {"DATABASE_URL", "ADMIN_CONFIG_DATABASE_URL", "MDM_ENDPOINT_DATABASE_URL",
                   "PROFILE_PROCESSOR_DATABASE_URL", "SCEP_PROXY_DATABASE_URL"}
# What the SCEP proxy, which every host reaches, must never hold.
NOT_FOR_SCEP_PROXY = {"SERVER_PRIVATE_KEY", "ADMIN_API_TOKEN", "ENROLL_SECRET"}


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def console_scripts(package_dir: str) -> set[str]:
    pyproject = tomllib.loads((ROOT / "services" / package_dir / "pyproject.toml").read_text())
    return set(pyproject["project"].get("scripts", {}))


def settings_variables() -> set[str]:
    """Environment variable names the services read (the common core and each service's own)."""
    text = "".join(path.read_text() for path in [
        ROOT / "services" / "common" / "mdmscep_common" / "settings.py",
        *(ROOT / "services").glob("*/*/settings.py")])
    from mdmscep_common.service_database import SCHEMAS, service_url_variable

    # Each service's own database URL, read by the migration step (service_database.py).
    return (set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', text))
            | {service_url_variable(service) for service in SCHEMAS})


# --- Dockerfile -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: list[Instruction]
    comments: str

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def final_stage(self) -> list[Instruction]:
        starts = [n for n, i in enumerate(self.instructions) if i.keyword == "FROM"]
        return self.instructions[starts[-1]:]

    def final(self, keyword: str) -> list[str]:
        return [i.args for i in self.final_stage() if i.keyword == keyword]


def parse_dockerfile(path: Path) -> Dockerfile:
    instructions: list[Instruction] = []
    comments: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line)
            continue
        if not line and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        keyword, _, args = logical.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
    return Dockerfile(path, instructions, "\n".join(comments))


def dockerfiles() -> list[Path]:
    return sorted(DOCKER_DIR.glob("*.Dockerfile"))


# --- nginx.conf -------------------------------------------------------------------------------

def nginx_directives(text: str) -> list[tuple[list[str], str, list[str]]]:
    """Flatten nginx.conf into (enclosing blocks, directive, arguments), quotes kept simple."""
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};]+", re.sub(r"#[^\n]*", "", text))
    stack: list[str] = []
    current: list[str] = []
    out: list[tuple[list[str], str, list[str]]] = []
    for token in tokens:
        if token == "{":
            stack.append(" ".join(current))
            current = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            if current:
                out.append((list(stack), current[0], current[1:]))
            current = []
        else:
            current.append(token)
    return out


def nginx_routes(text: str) -> dict[str, tuple[str, int]]:
    """location prefix → (host, port) its proxy_pass goes to, following `set $var host:port`."""
    routes: dict[str, tuple[str, int]] = {}
    variables: dict[tuple[str, str], str] = {}
    for blocks, directive, args in nginx_directives(text):
        location = next((b for b in reversed(blocks) if b.startswith("location")), None)
        if directive == "set" and location:
            variables[(location, args[0])] = args[1]
        if directive == "proxy_pass" and location:
            target = args[0].removeprefix("http://")
            for (loc, name), value in variables.items():
                if loc == location:
                    target = target.replace(name, value)
            host, _, port = target.partition(":")
            routes[location.split()[-1]] = (host, int(port))
    return routes
