"""The lab's sandbox: real things to break, and the whole of Medbay watching them.

Everything lives under one temporary directory and on free ports of 127.0.0.1:

- a secured nats-server (JetStream; one user per service, as ``medbay up`` runs it);
- the services: two collectors (host ``lab``, which checks everything below, and
  host ``lab-edge``, a second machine that only reports its metrics), the
  detector, the planner, the approver (no Telegram) and the executor, live;
- the targets: three HTTP services (``lab.target``: ``lab-web``, ``lab-worker``,
  ``lab-flaky``) started from the same command the executor restarts them with,
  a redis-server with a 32 MiB memory limit, a PostgreSQL cluster (initdb), a
  log directory and a scratch directory, each with a byte budget.

The configs written here are what a user would write to watch and heal these
things; ``LabConfig`` holds what the lab varies (interval, learning). They are
kept under ``<root>/config`` for reading after a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from medbay.cli.auth import password_file
from medbay.cli.up import nats_server_binary, nats_server_config, service_env

MiB = 1024 * 1024
LAB_HOST = "lab"
EDGE_HOST = "lab-edge"
WEB, WORKER, FLAKY = "lab-web", "lab-worker", "lab-flaky"
REDIS, POSTGRES = "lab-redis", "lab-postgres"
LOGS, SCRATCH = "app-logs", "scratch"
ONCALL = "oncall"
SERVICE_TARGETS = (WEB, WORKER, FLAKY)
DIRECTORY_BUDGET = 24 * MiB
REDIS_MAXMEMORY = 32 * MiB
SLOW_QUERY_SECONDS = 3.0
"""PostgreSQL queries running longer than this are cancelled (the lab's db rule)."""
SERVICES = ("detector", "planner", "approver", "executor")


PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_the_lab() -> None:
    """In a child, before it runs its program: be killed if the lab's thread that
    started it ends, even if the lab is killed with no chance to stop it (SIGKILL).
    The lab's spawning threads live as long as it does (the main thread and
    asyncio's worker threads)."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class SandboxError(RuntimeError):
    """The sandbox could not be built; the message says what is missing."""


@dataclass(frozen=True)
class LabConfig:
    interval_seconds: float = 1.0
    train: bool = False
    """A sandbox to train a planner in (``--train``): each files target may take both
    rotate_logs and cleanup_disk, so a disk fault has a fix and a non-fix to try,
    and the planner's models are labelled lab-trained."""
    learn: bool = False
    """With ``train``: the planner trains once it has ``min_outcomes`` outcomes
    (instead of the shipped 50) and again every 10; without, it keeps the model it
    has (a model under comparison does not change)."""
    rule_explore_rate: float = 0.0
    """With ``train``: the planner's ``rule_explore_rate`` (model plans explore at
    the most the service allows, 0.2, while learning; not at all otherwise)."""
    min_outcomes: int = 20
    busy: bool = False
    """The quiet soak: keep the machine busy (``load``), scrape at the shipped
    interval (5 s) and apply every shipped detector rule besides the lab's own."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SandboxError(f"{proc.args!r} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SandboxError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def find_binary(name: str, *patterns: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in patterns:
        for path in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            if os.access(path, os.X_OK):
                return str(path)
    raise SandboxError(
        f"{name} is not installed; the lab runs a real one (`make system-deps` installs it)"
    )


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """YAML is a superset of JSON: configs are written as JSON, read as YAML."""
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


@dataclass
class Sandbox:
    root: Path
    config: LabConfig = field(default_factory=LabConfig)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    nats_url: str = ""
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    """Part of its services' process names, so that another sandbox's ``lab-worker``
    on this machine (another lab run) is never taken for this one's."""

    # --- paths -----------------------------------------------------------------

    @property
    def credentials(self) -> Path:
        return self.root / "nats"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def scratch_dir(self) -> Path:
        return self.root / "scratch"

    @property
    def crash_flag(self) -> Path:
        return self.root / "crash-loop.flag"

    def log_of(self, name: str) -> Path:
        return self.root / "run" / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def process_name(self, target: str) -> str:
        """The name a target service's process goes by (at most 15 bytes, as the
        kernel keeps it): ``lab-worker-1a2b``."""
        return f"{target}-{self.tag}"

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.ports[target]}/"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[REDIS]}/0"

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[POSTGRES]}/postgres"

    def cli_password(self) -> str:
        return password_file(self.credentials, "cli").read_text().strip()

    # --- building --------------------------------------------------------------

    def start(self) -> None:
        for folder in (self.root / "run", self.root / "config", self.logs_dir, self.scratch_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._start_nats()
        self._start_redis()
        self._start_postgres()
        for name in SERVICE_TARGETS:
            self.ports[name] = free_port()
            self.start_target(name)
        for name in SERVICE_TARGETS:
            wait_port(self.ports[name], 30)
        self._start_services()
        if self.config.busy:
            argv = [sys.executable, "-m", "medbay.cli.lab.load", "--redis", self.redis_url]
            argv += ["--dsn", self.postgres_dsn, "--marker", str(self.logs_dir)]
            for name in SERVICE_TARGETS:
                argv += ["--url", self.url(name)]
            self._spawn("load", argv)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, **options: Any
    ) -> subprocess.Popen[bytes]:
        with open(self.log_of(name), "ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_the_lab,  # prctl only: safe beside threads
                **options,
            )
        self.procs[name] = proc
        return proc

    def _start_nats(self) -> None:
        port = free_port()
        conf = nats_server_config(self.root, port)
        proc = self._spawn("nats", [nats_server_binary(), "-c", str(conf)])
        wait_port(port, 30, proc)
        self.nats_url = f"nats://127.0.0.1:{port}"

    def _start_redis(self) -> None:
        exe = find_binary("redis-server")
        port = self.ports[REDIS] = free_port()
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.root / "run")]
        argv += ["--maxmemory", str(REDIS_MAXMEMORY), "--maxmemory-policy", "noeviction"]
        wait_port(port, 30, self._spawn(REDIS, argv))

    def _start_postgres(self) -> None:
        initdb = find_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
        bindir = Path(initdb).parent
        data = self.root / "pg"
        port = self.ports[POSTGRES] = free_port()
        user: int | None = None
        group: int | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            import pwd

            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise SandboxError(
                    "running as root needs a `postgres` user for PostgreSQL"
                ) from None
            user, group = account.pw_uid, account.pw_gid
            self.root.chmod(0o755)
            for parent in self.root.parents:  # let postgres reach the sandbox
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
            (self.root / "run").chmod(0o777)
            data.mkdir(mode=0o700)
            os.chown(data, user, group)
        done = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            capture_output=True,
            user=user,
            group=group,
            check=False,
        )
        if done.returncode != 0:
            raise SandboxError(f"initdb failed: {done.stderr.decode(errors='replace')[-500:]}")
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
        argv += ["-k", str(self.root / "run")]
        proc = self._spawn(POSTGRES, argv, user=user, group=group)
        wait_port(port, 120, proc)  # a busy machine starts PostgreSQL slowly

    def target_command(self, name: str) -> list[str]:
        argv = [sys.executable, "-m", "medbay.cli.lab.target", "--name", self.process_name(name)]
        argv += ["--port", str(self.ports[name]), "--log", str(self.logs_dir / "app.log")]
        if name == FLAKY:
            argv += ["--crash-flag", str(self.crash_flag), "--crash-after", "5"]
        return argv

    def start_target(self, name: str) -> None:
        """Start (or start again) a target service, as the executor would."""
        proc = self._spawn(name, self.target_command(name))
        temporary = self.pidfile(name).with_suffix(".tmp")
        temporary.write_text(f"{proc.pid}\n")
        temporary.replace(self.pidfile(name))

    def target_pid(self, name: str) -> int | None:
        """The PID of the target's running process (the executor may have restarted it)."""
        try:
            pid = int(self.pidfile(name).read_text().strip())
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return pid

    def _service_env(self, identity: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MEDBAY_", "OTEL_"))}
        base.update(
            MEDBAY_NATS_URL=self.nats_url,
            MEDBAY_HTTP_PORT=str(free_port()),
            MEDBAY_LOG_FORMAT="text",
            PYTHONUNBUFFERED="1",
        )
        return service_env(base, identity, self.credentials)

    def _start_services(self) -> None:
        configs = self.root / "config"
        main = write_config(configs / "collector.yaml", self.collector_config())
        # the second machine shares this one's processes: only the first reports them
        edge_config = {"host": EDGE_HOST, **self._timing(), "top_processes": 0}
        edge = write_config(configs / "collector-edge.yaml", edge_config)
        written = {
            "detector": write_config(configs / "detector.yaml", self.detector_config()),
            "planner": write_config(configs / "planner.yaml", self.planner_config()),
            "executor": write_config(configs / "executor.yaml", self.executor_config()),
            "approver": None,
        }
        for name, path in written.items():
            argv = [sys.executable, "-m", f"medbay.{name}.main"]
            argv += ["--config", str(path)] if path else []
            self._spawn(name, argv, self._service_env(name))
        self.start_collector("collector", main)
        self.start_collector("collector-edge", edge)

    def start_collector(self, name: str, config: Path | None = None) -> None:
        path = config or self.root / "config" / f"{name}.yaml"
        argv = [sys.executable, "-m", "medbay.collector.main", "--config", str(path)]
        self._spawn(name, argv, self._service_env("collector"))

    # --- what the user would configure ---------------------------------------------

    def _timing(self) -> dict[str, Any]:
        return {"interval_seconds": self.config.interval_seconds, "top_processes": 10}

    def collector_config(self) -> dict[str, Any]:
        checks: list[dict[str, Any]] = [
            {"name": name, "check": "http", "url": self.url(name), "timeout_seconds": 2}
            for name in SERVICE_TARGETS
        ]
        checks += [
            {"name": REDIS, "check": "redis", "url": self.redis_url},
            {"name": POSTGRES, "check": "postgres", "dsn": self.postgres_dsn},
        ]
        return {
            "host": LAB_HOST,
            **self._timing(),
            "services": checks,
            "directories": [
                {"name": LOGS, "path": str(self.logs_dir), "budget_bytes": DIRECTORY_BUDGET},
                {"name": SCRATCH, "path": str(self.scratch_dir), "budget_bytes": DIRECTORY_BUDGET},
            ],
        }

    def detector_config(self) -> dict[str, Any]:
        """Rules for the sandbox's own things, tight as a user watching a critical
        service would set them; nothing about the machine the lab runs on."""
        rules: list[dict[str, Any]] = [
            {
                "metric": "service_up",
                "kind": "service_down",
                "critical": 0.5,
                "direction": "below",
                "for_samples": 2,
                "resource_label": "service",
            },
            {
                "metric": "postgres_longest_query_seconds",
                "kind": "db_latency",
                "warning": SLOW_QUERY_SECONDS,
                "for_samples": 2,
                "resource_label": "service",
            },
            {
                "metric": "redis_memory_percent",
                "kind": "memory",
                "warning": 90,
                "critical": 98,
                "resource_label": "service",
            },
            {
                "metric": "directory_budget_percent",
                "kind": "disk",
                "warning": 90,
                "critical": 100,
                "resource_label": "directory",
            },
        ]
        for name in SERVICE_TARGETS:
            for metric, level in (
                # Half a core: the lab's targets idle near 0 %, and a spinner on a machine
                # busy with other work (a CI runner, a test suite) may get no more.
                ("process_cpu_percent", 50.0),
                ("process_memory_percent", memory_limit()),
            ):
                rules.append(
                    {
                        "metric": metric,
                        "kind": "runaway_process",
                        "warning": level,
                        "for_samples": 3,
                        "clear_samples": 2,
                        "labels": {"name": self.process_name(name)},
                        "resource_label": "name",
                        "absent_clears": True,
                    }
                )
        anomaly: list[dict[str, Any]] = []
        if self.config.busy:
            from medbay.detector.config import DetectorConfig

            shipped = DetectorConfig().model_dump(mode="json")
            rules += shipped["thresholds"]  # after the lab's: the first matching rule applies
            anomaly = shipped["anomaly"]
        return {
            "thresholds": rules,
            "anomaly": anomaly,
            "silence": {
                "min_seconds": 6 * self.config.interval_seconds + 2,
                "check_seconds": self.config.interval_seconds,
            },
        }

    def planner_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"catalog_refresh_seconds": 1}
        if self.config.train:
            config.update(trained_on="lab", rule_explore_rate=self.config.rule_explore_rate)
            if self.config.learn:
                config.update(
                    min_outcomes=self.config.min_outcomes, retrain_every=10, explore_rate=0.2
                )
            else:
                frozen = 1_000_000
                config.update(
                    min_outcomes=frozen,
                    max_training_outcomes=frozen,
                    retrain_every=frozen,
                    explore_rate=0.0,
                )
        return config

    def restart_planner(self, config: LabConfig) -> None:
        """Start the planner again with ``config``'s settings (it keeps its model)."""
        self.config = config
        proc = self.procs["planner"]
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        path = write_config(self.root / "config" / "planner.yaml", self.planner_config())
        argv = [sys.executable, "-m", "medbay.planner.main", "--config", str(path)]
        self._spawn("planner", argv, self._service_env("planner"))

    def executor_config(self) -> dict[str, Any]:
        services = {
            name: {
                "kind": "process",
                "command": self.target_command(name),
                "pidfile": str(self.pidfile(name)),
                "log_file": str(self.log_of(name)),
                "stop_timeout": 2,
                "start_check_seconds": 0.5,
                "covers": [self.process_name(name)],
            }
            for name in SERVICE_TARGETS
        }
        return {
            "mode": "live",
            "escalate_to": ONCALL,
            "verify_window_seconds": 30,
            "targets": {
                **services,
                REDIS: {"kind": "redis", "url": self.redis_url},
                POSTGRES: {
                    "kind": "postgres",
                    "dsn": self.postgres_dsn,
                    "max_query_seconds": SLOW_QUERY_SECONDS,
                },
                LOGS: {
                    "kind": "files",
                    "directories": [str(self.logs_dir)],
                    "globs": ["*.log"],
                    "keep": 2,
                },
                SCRATCH: {
                    "kind": "files",
                    "directories": [str(self.scratch_dir)],
                    "globs": ["*.tmp"],
                    "older_than_days": 7,
                },
                ONCALL: {"kind": "notifier", "via": "log"},
            },
            "safety": {
                "allow": {
                    "restart_service": list(SERVICE_TARGETS),
                    "clear_cache": [REDIS],
                    "optimize_query": [POSTGRES],
                    "rotate_logs": [LOGS, SCRATCH] if self.config.train else [LOGS],
                    "cleanup_disk": [SCRATCH, LOGS] if self.config.train else [SCRATCH],
                    "alert_human": [ONCALL],
                },
                "cooldown_seconds": 5,
                "flap": {"max_actions": 3, "window_seconds": 60},
                "rate_limit": {"max_actions": 30, "per_seconds": 60},
            },
        }

    # --- tearing down --------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything the lab started, and every process the executor started for it."""
        order = ["load", "collector", "collector-edge", *reversed(SERVICES), REDIS, POSTGRES]
        order.append("nats")
        for name in [*SERVICE_TARGETS, *order]:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        marker = str(self.logs_dir)
        for leftover in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(leftover.info["cmdline"] or ()):
                    leftover.send_signal(signal.SIGCONT)
                    leftover.kill()


def memory_limit() -> float:
    """The lab's runaway-memory limit, as a share of this machine's RAM: 200 MiB."""
    return round(200 * MiB / psutil.virtual_memory().total * 100, 3)
