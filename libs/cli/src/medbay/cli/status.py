"""``medbay status``: streams, consumers, pending counts and service health."""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request

from medbay.cli import upfile
from medbay.cli.services import SERVICES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="streams, consumers and service health")
    p.add_argument("--host", default="127.0.0.1", help="where the services' HTTP ports are")
    p.set_defaults(func=run)


def service_health(host: str, port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as resp:
            body = json.loads(resp.read())
            return f"ok (up {body.get('uptime_seconds', '?')} s)"
    except urllib.error.HTTPError as exc:
        try:
            problems = json.loads(exc.read()).get("problems", {})
        except ValueError:
            problems = {}
        return "unhealthy: " + (", ".join(f"{k}: {v}" for k, v in problems.items()) or str(exc))
    except OSError:
        return "not running"


async def status(args: argparse.Namespace) -> int:
    from nats.js.errors import NotFoundError

    from medbay.cli.nats_url import connect, target
    from medbay.common.settings import DEFAULT_HTTP_PORTS
    from medbay.common.streams import ALL_STREAMS

    where = target()
    nc = await connect(announce=False)  # the header says it
    js = nc.jetstream()
    version = nc.connected_server_version
    print(
        f"NATS {where.url}  ({where.source}; "
        f"nats-server {version.major}.{version.minor}.{version.patch})"
    )
    print(f"\n{'stream':<11} {'owner':<10} {'messages':>10} {'bytes':>12} {'last seq':>10}")
    try:
        for spec in ALL_STREAMS:
            try:
                info = await js.stream_info(spec.name)
            except NotFoundError:
                print(f"{spec.name:<11} {spec.owner:<10}  not declared yet (its owner declares it)")
                continue
            st = info.state
            print(
                f"{spec.name:<11} {spec.owner:<10} {st.messages:>10} {st.bytes:>12} "
                f"{st.last_seq:>10}"
            )
        print(f"\n{'consumer':<24} {'pending':>9} {'unacked':>9} {'redelivered':>12}")
        for spec in ALL_STREAMS:
            try:
                consumers = await js.consumers_info(spec.name)
            except NotFoundError:
                continue
            for c in consumers:
                if not c.config.durable_name:
                    continue
                name = f"{spec.name}/{c.name}"
                print(
                    f"{name:<24} {c.num_pending or 0:>9} {c.num_ack_pending or 0:>9} "
                    f"{c.num_redelivered or 0:>12}"
                )
    finally:
        await nc.close()
    up = upfile.read()  # a `medbay up` here may have chosen other ports
    ports = {**DEFAULT_HTTP_PORTS, **(up.http_ports if up is not None else {})}
    print(f"\n{'service':<11} health")
    for name in SERVICES:
        print(f"{name:<11} {service_health(args.host, ports[name])}")
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(status(args))
