"""A PostgreSQL cluster and a RabbitMQ node of a test's own, so the test may restart them for real
without touching the machine's shared servers (other people's test runs use those).

PostgreSQL: `initdb` + `pg_ctl` from /usr/lib/postgresql/<version>/bin in a temporary directory,
on a free loopback port, trust authentication. PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` user (the directory is handed to it).

RabbitMQ: a second node (`RABBITMQ_NODENAME=<name>@localhost`) with its own ports, data and log
directories, no plugins, and an Erlang cookie in its own HOME; it registers with the machine's epmd
like the shared node does. Controlled with `rabbitmqctl -n <name>@localhost`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port, wait_for_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class PrivateServiceError(RuntimeError):
    pass


def _run(args: list[str], timeout: float = 120, env: dict[str, str] | None = None,
         user: str | None = None) -> subprocess.CompletedProcess:
    if user is not None:
        args = ["runuser", "-u", user, "--", *args]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise PrivateServiceError(f"{' '.join(args)} exited {done.returncode}:\n"
                                  f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


# --- PostgreSQL -----------------------------------------------------------------------------

def postgres_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise PrivateServiceError("no /usr/lib/postgresql/*/bin/initdb on this machine")
    return Path(found[-1]).parent


@dataclass
class PrivatePostgres:
    root: Path
    port: int
    bin_dir: Path
    user: str | None  # the OS user the server runs as (None: the current one)
    restarts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str, timeout: float = 120) -> None:
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], timeout=timeout,
             user=self.user)

    def start(self) -> None:
        self._ctl("-l", str(self.log_path), "-w", "-t", "60", "start")
        wait_for_port(self.port, timeout=30)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> tuple[float, float]:
        """A real restart: every client connection is cut; the server stays down `down_for`
        seconds. Returns (stopped_at, up_at) as time.monotonic() values."""
        self.stop(mode)
        stopped = time.monotonic()
        time.sleep(down_for)
        self.start()
        self.restarts += 1
        return stopped, time.monotonic()

    def running(self) -> bool:
        try:
            self._ctl("status", timeout=10)
            return True
        except PrivateServiceError:
            return False

    def close(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_private_postgres(prefix: str = "mdmscep-pg-") -> PrivatePostgres:
    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chmod(root, 0o700)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()
    pg = PrivatePostgres(root, port, bin_dir, user)
    try:
        _run([str(bin_dir / "initdb"), "-D", str(pg.data_dir), "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--no-sync"], user=user)
        conf = pg.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{root}'\nmax_connections = 300\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        if user:
            # The log file is written by the server's user.
            pg.log_path.touch()
            entry = pwd.getpwnam(user)
            os.chown(pg.log_path, entry.pw_uid, entry.pw_gid)
        pg.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return pg


# --- RabbitMQ -------------------------------------------------------------------------------

@dataclass
class PrivateRabbit:
    root: Path
    nodename: str
    port: int
    dist_port: int
    env: dict[str, str] = field(repr=False)
    restarts: int = 0

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str, timeout: float = 120) -> str:
        return _run([str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.nodename, *args],
                    timeout=timeout, env=self.env).stdout

    def start(self) -> None:
        pid_file = self.env["RABBITMQ_PID_FILE"]
        Path(pid_file).unlink(missing_ok=True)
        _run([str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"], env=self.env, timeout=60)
        # `wait` follows the pid file until the node runs the rabbit application.
        self.ctl("wait", pid_file, "--timeout", "120", timeout=150)
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        self.ctl("stop", timeout=120)

    def restart(self, down_for: float = 0.0) -> tuple[float, float]:
        """A real restart of the node (not only the app): every connection is cut and the
        queues are recovered from disk. Returns (stopped_at, up_at) as time.monotonic()."""
        self.stop()
        stopped = time.monotonic()
        time.sleep(down_for)
        self.start()
        self.restarts += 1
        return stopped, time.monotonic()

    def queues(self, vhost: str = "/") -> dict[str, int]:
        """name → messages (ready + unacknowledged) of every queue in the vhost."""
        out = self.ctl("list_queues", "-p", vhost, "name", "messages", "--no-table-headers")
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
        return counts

    def close(self) -> None:
        try:
            self.stop()
        except (PrivateServiceError, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_private_rabbitmq(nodename: str = "mdmscepfault") -> PrivateRabbit:
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise PrivateServiceError(f"RabbitMQ is not installed in {RABBITMQ_BIN}")
    root = Path(tempfile.mkdtemp(prefix="mdmscep-rabbit-"))
    port, dist_port = free_port(), free_port()
    node = f"{nodename}{port}@localhost"
    for sub in ("home", "mnesia", "log"):
        (root / sub).mkdir()
    (root / "enabled_plugins").write_text("[].\n")
    (root / "rabbitmq-env.conf").write_text("")
    (root / "rabbitmq.conf").write_text(
        f"listeners.tcp.local = 127.0.0.1:{port}\n"
        # Small machine, many test runs: never block publishers for disk or memory alarms.
        "disk_free_limit.absolute = 50MB\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root / "home"),  # the node's and rabbitmqctl's Erlang cookie live here
        "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
        "RABBITMQ_PID_FILE": str(root / "rabbit.pid"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    rabbit = PrivateRabbit(root, node, port, dist_port, env)
    try:
        rabbit.start()
    except BaseException:
        try:
            rabbit.stop()
        except (PrivateServiceError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(root, ignore_errors=True)
        raise
    return rabbit


class PortWatch:
    """Watches a loopback TCP port from a thread, to time an outage as clients see it: when the
    port stopped accepting connections and when it accepted again."""

    def __init__(self, port: int, interval: float = 0.05):
        import threading

        self.port = port
        self.interval = interval
        self.down_at: float | None = None
        self.up_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _accepts(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            accepts = self._accepts()
            now = time.monotonic()
            if not accepts and self.down_at is None:
                self.down_at = now
            elif accepts and self.down_at is not None and self.up_at is None:
                self.up_at = now
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> PortWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join(30)
        self._stop.set()
