"""`make run`: the four services as local processes under supervisord, in the foreground.

Loads `.env` (the environment wins), checks the configuration, creates the database if missing,
applies migrations, then hands over to supervisord, which restarts a process that dies (with
backoff when it keeps dying at start) and logs each restart. Ctrl-C stops everything.

Metrics: each HTTP service gets a PROMETHEUS_MULTIPROC_DIR of its own under the run directory, so
its `/metrics` sums its gunicorn workers; the other processes serve `/metrics` on their
*_METRICS_PORT (README "Configuration"), which do not collide: each process has its own.

Internal gRPC (mutual TLS, mdmscep_common.service_tls): the launcher issues a service CA and one
certificate per service into <run dir>/service-pki (mdmscep_common.service_pki, the layout of
`mdmscep-service-pki`), and gives each program only its own service's certificate and key; the
CA's private key is never written, so nothing else can be issued from the run directory. gRPC
servers listen on GRPC_BIND_ADDRESS (127.0.0.1 unless set).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# (program name, command): one process per role; HTTP roles run gunicorn with gthread workers.
PROGRAMS = [
    ("admin-config", "admin-config serve"),
    ("admin-config-worker", "admin-config worker"),
    ("scep-proxy-http", "scep-proxy http"),
    ("scep-proxy-grpc", "scep-proxy grpc"),
    ("mdm-endpoint-http", "mdm-endpoint http"),
    ("mdm-endpoint-grpc", "mdm-endpoint grpc"),
    ("mdm-endpoint-push", "mdm-endpoint push"),
    ("profile-processor", "profile-processor"),
]
# gunicorn services: one multiprocess metrics directory each (a shared one would mix services).
HTTP_PROGRAMS = ("admin-config", "scep-proxy-http", "mdm-endpoint-http")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Each program's service identity on internal gRPC: the certificate it gets.
PROGRAM_SERVICES = {
    "admin-config": "admin-config",
    "admin-config-worker": "admin-config",
    "scep-proxy-http": "scep-proxy",
    "scep-proxy-grpc": "scep-proxy",
    "mdm-endpoint-http": "mdm-endpoint",
    "mdm-endpoint-grpc": "mdm-endpoint",
    "mdm-endpoint-push": "mdm-endpoint",
    "profile-processor": "profile-processor",
}
SERVICE_PKI_DIR = "service-pki"
GRPC_TLS_VARIABLES = ("GRPC_TLS_CA_CERT", "GRPC_TLS_CERT", "GRPC_TLS_KEY")


def program_environment(name: str, run_dir: Path, database_url: str) -> str:
    """supervisord `environment=` line of a program: its own service's certificate and key (the
    service CA is shared) and, for the HTTP programs, their metrics directory."""
    from mdmscep_common.service_database import service_dsn

    pki = run_dir / SERVICE_PKI_DIR
    service = PROGRAM_SERVICES[name]
    variables = {"GRPC_TLS_CA_CERT": pki / "ca.crt",
                 "GRPC_TLS_CERT": pki / service / "tls.crt",
                 "GRPC_TLS_KEY": pki / service / "tls.key"}
    if name in HTTP_PROGRAMS:
        variables[MULTIPROC_ENV] = run_dir / "metrics" / name
    # Each program connects as its service's own role (mdmscep_common.service_database), never
    # as the owner of the database: its SQL reaches its own schema only.
    variables["DATABASE_URL"] = service_dsn(database_url, service, dict(os.environ))
    return "environment=" + ",".join(f'{k}="{_supervisor_value(v)}"'
                                     for k, v in variables.items()) + "\n"


def _supervisor_value(value) -> str:
    """supervisord expands %(name)s in its configuration: a literal % is written %%."""
    text = str(value)
    if '"' in text or "\n" in text:
        raise SystemExit("launcher: a configured value (a database URL?) holds a quote or a "
                         "newline, which supervisord cannot pass on")
    return text.replace("%", "%%")


def supervisord_conf(run_dir: Path, database_url: str) -> str:
    sections = [f"""[supervisord]
nodaemon=true
; In the foreground supervisord logs to its stdout already; its file stays beside the run.
logfile={run_dir}/supervisord.log
logfile_maxbytes=10MB
loglevel=info
pidfile={run_dir}/supervisord.pid
childlogdir={run_dir}

[unix_http_server]
file={run_dir}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run_dir}/supervisor.sock
"""]
    for name, command in PROGRAMS:
        program, *args = command.split()
        sections.append(f"""[program:{name}]
command={BIN / program} {' '.join(args)}
directory={ROOT}
{program_environment(name, run_dir, database_url)}autostart=true
autorestart=true
startsecs=3
startretries=100
stopsignal=TERM
stopwaitsecs=30
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
""")
    return "\n".join(sections)


def main() -> None:
    from dotenv import load_dotenv

    load_dotenv(ROOT / ".env", override=False)

    from admin_config.settings import AdminConfigSettings
    from mdm_endpoint.settings import MdmEndpointSettings
    from mdmscep_common.db import ensure_database
    from mdmscep_common.logs import configure_logging
    from mdmscep_common.migrate import apply_migrations
    from mdmscep_common.service_pki import write_service_pki
    from mdmscep_common.settings import CommonSettings, load_or_exit
    from profile_processor.settings import ProfileProcessorSettings
    from scep_proxy.settings import ScepProxySettings

    # Every service it starts checks its own configuration here first: a mistake stops `make
    # run` at once instead of a program restarting forever under supervisord.
    checked = [load_or_exit(service_settings.from_env)
               for service_settings in (AdminConfigSettings, MdmEndpointSettings,
                                        ProfileProcessorSettings, ScepProxySettings)]
    settings = load_or_exit(CommonSettings.from_env)
    configured = [name for name in GRPC_TLS_VARIABLES if os.environ.get(name)]
    if configured:
        # One certificate for every program would give them all one identity, and the services
        # would refuse each other's calls (mdmscep_common.grpc_callers).
        print(f"configuration error: {', '.join(configured)} set: `make run` issues each service "
              "its own internal gRPC certificate; unset GRPC_TLS_CA_CERT, GRPC_TLS_CERT and "
              "GRPC_TLS_KEY (deploy/ sets them per service)", file=sys.stderr)
        raise SystemExit(78)
    configure_logging("launcher", [value for service_settings in checked
                                   for value in service_settings.secret_values()])
    ensure_database(settings.database_url)
    applied = apply_migrations(settings.database_url, dict(os.environ))
    print(f"launcher: {len(applied)} migration(s) applied; starting services", flush=True)

    run_dir = Path(os.environ.get("MDMSCEP_RUN_DIR") or tempfile.mkdtemp(prefix="mdmscep-run-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    # Only the HTTP programs use multiprocess metrics, each in its own directory (set above);
    # a directory inherited by every process would mix their metrics.
    os.environ.pop(MULTIPROC_ENV, None)
    for name in HTTP_PROGRAMS:
        (run_dir / "metrics" / name).mkdir(parents=True, exist_ok=True)
    # A new service CA each start (its key is never written, so an old one cannot issue more).
    write_service_pki(run_dir / SERVICE_PKI_DIR, force=True)
    conf = run_dir / "supervisord.conf"
    conf.write_text(supervisord_conf(run_dir, settings.database_url))
    print(f"launcher: supervisord config {conf} "
          f"(status: {BIN / 'supervisorctl'} -c {conf} status)", flush=True)
    supervisord = str(BIN / "supervisord")
    os.execv(supervisord, [supervisord, "-c", str(conf)])  # noqa: S606 - hand over the pid


if __name__ == "__main__":
    main()
