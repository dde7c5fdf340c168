"""Cost of /metrics: task throughput of a real worker with and without aggressive scraping.

    python -m benchmarks.worker_metrics            # 2,000 trivial tasks per phase
    python -m benchmarks.worker_metrics --small    # 200 tasks per phase

Starts `alphaswarm-orch worker --queues default --concurrency 2` (with the test stub tasks)
on Redis (--redis, default redis://127.0.0.1:6379/14, flushed; results in the next db). The
baseline phase sends N trivial tasks and times them until all have run, with nobody scraping;
the scraped phase repeats it while another process GETs /metrics every 50 ms (300x
Prometheus's usual 15 s interval). Also reports how long a scrape takes, idle and busy.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis

from tests.support.ops import kill_tree, sender, worker_env
from tests.support.workers import WorkerProcess

SCRAPE_EVERY_SECONDS = 0.05


def scrape_ms(port: int) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def run_tasks(env: dict[str, str], client: redis.Redis, total: int) -> float:
    """Seconds from the first send until `total` trivial tasks have run."""
    prefix = f"bench:{uuid.uuid4().hex}"
    app = sender(env)
    started = time.perf_counter()
    for _ in range(total):
        app.send_task("tests.stub.ok", args=[prefix], queue="default")
    deadline = time.monotonic() + 600
    while int(client.get(f"{prefix}:ok") or 0) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{total} tasks did not finish in 600 s")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def scrape_until(port: int, stop: Any, results: Any) -> None:
    latencies: list[float] = []
    while not stop.is_set():
        latencies.append(scrape_ms(port))
        stop.wait(SCRAPE_EVERY_SECONDS)
    results.put(latencies)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--small", action="store_true", help="200 tasks per phase")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    total = 200 if args.small else args.tasks

    broker = args.redis
    db = int(broker.rsplit("/", 1)[1])
    backend = f"{broker.rsplit('/', 1)[0]}/{db + 1}"
    for url in (broker, backend):
        redis.Redis.from_url(url).flushdb()
    client = redis.Redis.from_url(broker)
    storage = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    env = worker_env(broker, backend, storage)
    port = int(env["ALPHASWARM_METRICS_PORT"])
    worker = WorkerProcess.start("default", f"bench-{uuid.uuid4().hex[:6]}", env, "-c", "2")
    try:
        idle = [scrape_ms(port) for _ in range(50)]
        run_tasks(env, client, min(total, 100))  # warm-up: pool children import the tasks
        baseline = run_tasks(env, client, total)

        # The scraper is another process, so that only the worker pays for the scrapes.
        stop = multiprocessing.Event()
        results = multiprocessing.Queue()
        scraper = multiprocessing.Process(target=scrape_until, args=(port, stop, results))
        scraper.start()
        scraped = run_tasks(env, client, total)
        stop.set()
        busy = results.get(timeout=60)
        scraper.join(60)
    finally:
        kill_tree(worker.process.pid)
        worker.stop()
        for url in (broker, backend):
            redis.Redis.from_url(url).flushdb()

    print(
        f"{total} trivial tasks, 1 worker, concurrency 2, scrape every "
        f"{SCRAPE_EVERY_SECONDS * 1000:.0f} ms in the scraped phase ({len(busy)} scrapes)"
    )
    print(f"{'':28} {'baseline (no scrape)':>22} {'scraped':>12} {'ratio':>8}")
    b_rate, s_rate = total / baseline, total / scraped
    print(f"{'throughput (tasks/s)':28} {b_rate:>22.1f} {s_rate:>12.1f} {s_rate / b_rate:>8.2f}")
    print(f"{'wall time (s)':28} {baseline:>22.2f} {scraped:>12.2f} {scraped / baseline:>8.2f}")
    print()
    print(f"{'scrape latency (ms)':28} {'p50':>10} {'p95':>10} {'max':>10}")
    for label, values in (("idle worker", idle), ("while tasks run", busy)):
        print(
            f"{label:28} {statistics.median(values):>10.1f} {percentile(values, 0.95):>10.1f} "
            f"{max(values):>10.1f}"
        )


if __name__ == "__main__":
    main()
