#!/usr/bin/env python3
"""What webhooks cost a push (issue 19): manifest pushes to a Wharf whose registry-wide webhook
points at a receiver that is down, against the same pushes to a Wharf with no webhook, measured one
at a time in interleaved rounds. Events go to an outbox in the push's own transaction and are
delivered in the background, so the ratio should stay near 1.

    python3 bench/webhooks.py --wharf .build/release/wharf [--pushes 300] [--rounds 3] [--workers 8]
"""

import argparse
import concurrent.futures
import json
import socket
import statistics
import tempfile
import time

import requests

from metrics import PASSWORD, push_small_image, start


def dead_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: nothing listens there


def push_many(url, prefix, count, workers):
    def push_range(indices):
        session = requests.Session()
        session.auth = ("admin", PASSWORD)
        for index in indices:
            push_small_image(session, url, f"bench/{prefix}", f"t{index}")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(push_range, [range(worker, count, workers) for worker in range(workers)]))
    return count / (time.monotonic() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wharf", default=".build/release/wharf")
    parser.add_argument("--pushes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wharf-bench-webhooks-") as scratch:
        servers = {}
        try:
            for name in ("none", "dead"):
                servers[name] = start(options.wharf, f"{scratch}/{name}", {})
            hook = requests.post(f"{servers['dead'][1]}/api/v1/webhooks", auth=("admin", PASSWORD), timeout=30,
                                 json={"url": f"http://127.0.0.1:{dead_port()}/hook", "events": ["push", "tag", "delete"]})
            assert hook.status_code == 201, hook.text
            results = {"none": [], "dead": []}
            for name in ("none", "dead"):  # warm-up, discarded: the first pushes of a process run slower
                push_many(servers[name][1], "warm-up", max(50, options.pushes // 4), options.workers)
            for round_index in range(options.rounds):
                for name in (("none", "dead") if round_index % 2 == 0 else ("dead", "none")):
                    results[name].append(round(push_many(servers[name][1], f"r{round_index}", options.pushes, options.workers), 1))
            pending = requests.get(f"{servers['dead'][1]}/api/v1/webhooks/{hook.json()['id']}/deliveries?limit=1000",
                                   auth=("admin", PASSWORD), timeout=30).json()
            none, dead = statistics.median(results["none"]), statistics.median(results["dead"])
            print(json.dumps({"pushes_per_second": results, "no_webhook_median": none, "dead_receiver_median": dead,
                              "ratio": round(dead / none, 3), "deliveries_waiting": sum(d["status"] == "PENDING" for d in pending)}, indent=2))
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=60)


if __name__ == "__main__":
    main()
