"""The ordinary work of a busy machine, for the quiet soak: ``python -m medbay.cli.lab.load``.

One process per core but one, each computing in bursts (about 70 % of a core on
average, some bursts a few seconds long at 100 %), and steady traffic to the
sandbox's services: HTTP requests, short-lived Redis keys, PostgreSQL queries.
A loaded host, not a broken one: nothing here should raise an issue.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
import urllib.request

from medbay.cli.lab.target import set_process_name


def compute(seed: int) -> None:
    set_process_name("lab-load")
    rng = random.Random(seed)
    while True:
        busy = rng.uniform(0.2, 4.0)
        end = time.monotonic() + busy
        x = 0
        while time.monotonic() < end:
            x += 1
        time.sleep(busy * rng.uniform(0.2, 0.7))


def traffic(urls: list[str], redis_url: str, dsn: str) -> None:
    import psycopg
    import redis

    set_process_name("lab-traffic")
    cache = redis.Redis.from_url(redis_url)
    db = psycopg.connect(dsn, autocommit=True)
    payload = os.urandom(2048)
    n = 0
    while True:
        n += 1
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    answer.read()
            except OSError:
                pass  # the checks, not the traffic, judge whether a service is up
        cache.set(f"page:{n % 500}", payload, ex=30)
        cache.get(f"page:{(n * 7) % 500}")
        db.execute("SELECT count(*) FROM pg_stat_activity")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", action="append", default=[])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--marker", help="the sandbox it belongs to (for cleaning up)")
    args = parser.parse_args()
    set_process_name("lab-load")
    workers = [
        multiprocessing.Process(target=compute, args=(i,), daemon=True)
        for i in range(max(1, (os.cpu_count() or 2) - 1))
    ]
    workers.append(
        multiprocessing.Process(target=traffic, args=(args.url, args.redis, args.dsn), daemon=True)
    )
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
