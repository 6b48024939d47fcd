"""Fixtures shared by every test: real servers on free ports in temp dirs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.helpers import free_port, wait_port

BIN = Path(sys.executable).parent
BOUND = re.compile(r"(?:starting; |listening on )http://[^:/]+:(\d+)")
"""How a service logs the HTTP port it bound (medbay.common.runtime, the gateway)."""


class NatsServer:
    """A real nats-server. Secured, it runs the authorization config `medbay auth init`
    generates, with a user per Medbay identity, exactly as `medbay up` does."""

    def __init__(self, root: Path, *, secured: bool = False) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.secured = secured
        self.credentials = root / "nats-auth"
        self.passwords: dict[str, str] = {}
        self.tls: dict[str, str] | None = None
        """Secured only: the server's cert_file and key_file; clients then use tls://."""

    def start(self) -> None:
        if self.secured:
            from medbay.cli.auth import init

            self.passwords = init(self.credentials)
            config = self.credentials / "server.conf"
            tls = ""
            if self.tls is not None:
                tls = "tls {\n" + "".join(f'  {k}: "{v}"\n' for k, v in self.tls.items()) + "}\n"
                self.url = f"tls://127.0.0.1:{self.port}"
            config.write_text(
                f"listen: 127.0.0.1:{self.port}\n"
                f'jetstream {{ store_dir: "{self.root / "js"}" }}\n'
                f"{tls}include auth.conf\n"
            )
            argv = [str(BIN / "nats-server"), "-c", str(config)]
        else:
            argv = [str(BIN / "nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
            argv += ["-sd", str(self.root / "js")]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "nats.log", "ab"),  # noqa: SIM115
        )
        wait_port(self.port)

    def env(self, identity: str) -> dict[str, str]:
        """A service's environment for connecting as ``identity`` (empty if not secured)."""
        if not self.secured:
            return {}
        return {
            "MEDBAY_NATS_USER": identity,
            "MEDBAY_NATS_PASSWORD_FILE": str(self.credentials / f"{identity}.password"),
        }

    def client(self, identity: str) -> dict[str, Any]:
        """``nats.connect`` arguments for connecting as ``identity``."""
        if not self.secured:
            return {}
        from medbay.common.access import inbox_prefix

        return {
            "user": identity,
            "password": self.passwords[identity],
            "inbox_prefix": inbox_prefix(identity),
        }

    def violations(self) -> list[str]:
        """The permission violations the server logged."""
        log = (self.root / "nats.log").read_text(errors="replace")
        return [line for line in log.splitlines() if "Violation" in line]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream, on a free port, storing in a temp dir."""
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """The same, running Medbay's generated authorization config: a user per identity.

    A test module runs its services secured by overriding ``nats_server`` with it."""
    server = NatsServer(tmp_path, secured=True)
    server.start()
    yield server
    server.stop()


def _binary(name: str, *candidates: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for c in candidates:
        for path in sorted(Path("/").glob(c.lstrip("/")), reverse=True):
            if os.access(path, os.X_OK):
                return str(path)
    return None


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free port."""
    exe = _binary("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_port(port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A private PostgreSQL cluster on a free port (initdb in a temp dir)."""
    initdb = _binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
    if initdb is None:
        pytest.fail("PostgreSQL server binaries are not installed (make test installs them)")
    bindir = Path(initdb).parent
    root = tmp_path
    user: int | None = None
    group: int | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        pw = pwd.getpwnam("postgres")
        user, group = pw.pw_uid, pw.pw_gid
        # A directory of its own, for user postgres: not under pytest's temp root, which
        # every pytest run that starts on this machine makes 0700 again.
        root = Path(tempfile.mkdtemp(prefix="medbay-pg-"))
        os.chown(root, user, group)
    data = root / "pg"
    port = free_port()
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            stdout=subprocess.DEVNULL,
            user=user,
            group=group,
        )
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
        proc = subprocess.Popen(
            [*server, "-h", "127.0.0.1", "-k", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            group=group,
        )
        try:
            wait_port(port, 120)  # a busy machine starts PostgreSQL slowly
            time.sleep(0.3)
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        if root != tmp_path:
            shutil.rmtree(root, ignore_errors=True)


class ServiceProcess:
    """A Medbay service run as a real OS process, logging to a file.

    It binds its HTTP port itself (``MEDBAY_HTTP_PORT=0``) and ``port`` reads it from
    the log: a free port picked here could be taken by another test's server before
    the service binds it."""

    def __init__(
        self, name: str, nats_url: str, root: Path, *args: str, replica: str = "", **env: str
    ) -> None:
        self.name = name
        self.log_path = root / f"{name}{replica and '-' + replica}.log"
        self.argv = [sys.executable, "-m", f"medbay.{name}.main", *args]
        self.env = {
            **os.environ,
            "MEDBAY_NATS_URL": nats_url,
            "MEDBAY_HTTP_PORT": "0",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_start = 0

    def start(self, wait_healthy: bool = True) -> ServiceProcess:
        self._port = int(self.env["MEDBAY_HTTP_PORT"]) or None
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        if wait_healthy:
            self.wait_healthy()
        return self

    @property
    def port(self) -> int:
        """The HTTP port this run of the service bound, as its log says."""
        deadline = time.monotonic() + 120
        while self._port is None:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                found = BOUND.search(log.read().decode(errors="replace"))
            if found:
                self._port = int(found.group(1))
            elif self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.logs()[-2000:]}")
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} logged no HTTP port: {self.logs()[-2000:]}")
            else:
                time.sleep(0.05)
        return self._port

    def wait_healthy(self, timeout: float = 120.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.logs()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy: {self.logs()[-2000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class StartService(Protocol):
    """What the ``services`` fixture yields: starts a service, returns its process."""

    def __call__(
        self, name: str, *args: str, wait_healthy: bool = True, **env: str
    ) -> ServiceProcess: ...


@pytest.fixture
def services(nats_server: NatsServer, tmp_path: Path) -> Iterator[StartService]:
    """Start Medbay services as processes: ``services("detector", *args, **env)``."""
    started: list[ServiceProcess] = []

    def start(name: str, *args: str, wait_healthy: bool = True, **env: str) -> ServiceProcess:
        env = {**nats_server.env(name), **env}
        proc = ServiceProcess(name, nats_server.url, tmp_path, *args, **env)
        started.append(proc.start(wait_healthy))
        return proc

    yield start
    for proc in started:
        proc.stop()


class SecuredCluster:
    """A local 3-node NATS cluster running Medbay's generated authorization config, with
    the same ``env``/``client`` helpers as ``NatsServer``."""

    def __init__(self, root: Path) -> None:
        from medbay.cli.auth import AUTH_CONF, init
        from medbay.cli.cluster import LocalCluster

        self.credentials = root / "nats-auth"
        self.passwords = init(self.credentials)
        self.cluster = LocalCluster(
            root / "cluster", str(BIN / "nats-server"), include_auth=self.credentials / AUTH_CONF
        )
        self.url = self.cluster.url

    def env(self, identity: str) -> dict[str, str]:
        return {
            "MEDBAY_NATS_URL": self.url,
            "MEDBAY_NATS_REPLICAS": "3",
            "MEDBAY_NATS_USER": identity,
            "MEDBAY_NATS_PASSWORD_FILE": str(self.credentials / f"{identity}.password"),
        }

    def client(self, identity: str) -> dict[str, Any]:
        from medbay.common.access import inbox_prefix

        return {
            "servers": self.cluster.urls,
            "user": identity,
            "password": self.passwords[identity],
            "inbox_prefix": inbox_prefix(identity),
        }


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[SecuredCluster]:
    """Three real nats-servers clustered with JetStream (streams and buckets kept in 3
    copies), secured as ``medbay up`` secures its server; nodes can be killed and
    restarted through ``.cluster``."""
    secured = SecuredCluster(tmp_path)
    secured.cluster.start()
    yield secured
    secured.cluster.stop()


class StartReplica(Protocol):
    """What ``cluster_services`` yields: starts one replica of a service on the cluster."""

    def __call__(
        self, name: str, *args: str, replica: str = "", wait_healthy: bool = True, **env: str
    ) -> ServiceProcess: ...


@pytest.fixture
def cluster_services(nats_cluster: SecuredCluster, tmp_path: Path) -> Iterator[StartReplica]:
    """Start services (several replicas of one, each with its own ``replica`` name and
    log) on ``nats_cluster``: ``cluster_services("detector", replica="a")``."""
    started: list[ServiceProcess] = []

    def start(
        name: str, *args: str, replica: str = "", wait_healthy: bool = True, **env: str
    ) -> ServiceProcess:
        env = {**nats_cluster.env(name), **env}
        proc = ServiceProcess(name, nats_cluster.url, tmp_path, *args, replica=replica, **env)
        started.append(proc.start(wait_healthy))
        return proc

    yield start
    for proc in started:
        proc.stop()


SLOW = {
    "tests/test_dashboard.py",
    "tests/test_bench_security.py",
    "tests/test_security.py",
    "tests/test_remediation_end_to_end.py",
    "tests/test_end_to_end.py",
    "tests/test_traces_end_to_end.py",
    "tests/test_lab.py",
    "tests/test_cli.py::test_up_runs_everything_and_ctrl_c_stops_it",
    "tests/test_failover.py",
    "tests/test_cluster.py::test_services_keep_three_copies_and_go_on_when_a_node_dies",
}
"""Modules and tests marked ``slow``: whole systems or a browser; `make test-fast` skips them."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test = item.nodeid.split("[")[0]
        if test in SLOW or test.split("::")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
