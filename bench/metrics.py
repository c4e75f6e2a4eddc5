#!/usr/bin/env python3
"""What metrics cost (issue 19), two figures:

1. Manifest GET throughput with metrics on against the same run with metrics off
   (`WHARF_METRICS_ENABLED=false`): two Wharfs with the same image, measured one at a time in
   interleaved rounds with ApacheBench (`ab`, Debian's apache2-utils). The target is a ratio of at
   least 0.95.
2. How long a `/metrics` scrape takes on a registry of `--repositories` repositories (default
   10,000) spread over 100 namespaces, once the sampler has read them: the target is under 50 ms.

    python3 bench/metrics.py --wharf .build/release/wharf [--seconds 10] [--rounds 3] [--connections 32] [--repositories 10000]
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import socket
import statistics
import subprocess
import tempfile
import time

import requests

PASSWORD = "bench-admin-password"
TOKEN = "bench-metrics-token-0123456789"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(binary, data, extra_env):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data", data],
                               env={**os.environ, "WHARF_ADMIN_PASSWORD": PASSWORD, **extra_env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if requests.get(url + "/v2/", timeout=1).status_code == 401:
                return process, url
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"wharf at {url} did not start")


def push_small_image(session, url, repository, tag):
    """A config blob and a manifest of it: the smallest image, enough for manifest GETs and the catalog."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    response = session.post(f"{url}/v2/{repository}/blobs/uploads/?digest={digest}", data=config, timeout=60)
    assert response.status_code == 201, response.text
    manifest = json.dumps({"schemaVersion": 2, "mediaType": ACCEPT,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
                           "layers": []}).encode()
    response = session.put(f"{url}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": ACCEPT}, timeout=60)
    assert response.status_code == 201, response.text


def ab(url, token, seconds, connections):
    result = subprocess.run(["ab", "-q", "-t", str(seconds), "-n", "10000000", "-c", str(connections),
                             "-H", f"Authorization: Bearer {token}", "-H", f"Accept: {ACCEPT}", url],
                            capture_output=True, text=True)
    out = result.stdout
    if result.returncode != 0 or int(re.search(r"Failed requests:\s+(\d+)", out).group(1)) or re.search(r"Non-2xx responses:\s+(\d+)", out):
        raise SystemExit(f"ab failed ({result.returncode}):\n{out[-2000:]}\n{result.stderr[-2000:]}")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))


def pull_token(url):
    return requests.get(f"{url}/auth/token", auth=("admin", PASSWORD), timeout=30,
                        params={"service": "wharf", "scope": "repository:bench/app:pull"}).json()["token"]


def throughput(options, scratch):
    servers = {}
    try:
        for name, env in (("on", {}), ("off", {"WHARF_METRICS_ENABLED": "false"})):
            process, url = start(options.wharf, f"{scratch}/{name}", env)
            servers[name] = (process, url)
            session = requests.Session()
            session.auth = ("admin", PASSWORD)
            push_small_image(session, url, "bench/app", "v1")
        tokens = {name: pull_token(url) for name, (_, url) in servers.items()}
        results = {"on": [], "off": []}
        for name in ("off", "on"):  # warm-up, discarded: the first seconds of a process run slower
            ab(f"{servers[name][1]}/v2/bench/app/manifests/v1", tokens[name], max(2, options.seconds // 3), options.connections)
        for round_index in range(options.rounds):
            for name in (("off", "on") if round_index % 2 == 0 else ("on", "off")):
                url = servers[name][1]
                results[name].append(ab(f"{url}/v2/bench/app/manifests/v1", tokens[name], options.seconds, options.connections))
        on, off = statistics.median(results["on"]), statistics.median(results["off"])
        return {"rounds_rps": results, "metrics_on_median_rps": on, "metrics_off_median_rps": off, "ratio": round(on / off, 3)}
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)


def scrape_time(options, scratch):
    process, url = start(options.wharf, f"{scratch}/scrape", {"WHARF_METRICS_TOKEN": TOKEN})
    try:
        def push_range(indices):
            session = requests.Session()
            session.auth = ("admin", PASSWORD)
            for index in indices:
                push_small_image(session, url, f"ns{index % 100}/repo{index}", "v1")
        started = time.monotonic()
        workers = 8
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(push_range, [range(worker, options.repositories, workers) for worker in range(workers)]))
        pushed_in = time.monotonic() - started
        headers = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 120
        while True:  # wait for the sampler to have read every repository
            text = requests.get(f"{url}/metrics", headers=headers, timeout=30).text
            found = re.search(r"^wharf_repositories (\S+)$", text, re.M)
            if found and float(found.group(1)) >= options.repositories:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the sampler did not report every repository within 120 s")
            time.sleep(1)
        session = requests.Session()
        durations = []
        for _ in range(50):
            begin = time.perf_counter()
            response = session.get(f"{url}/metrics", headers=headers, timeout=30)
            durations.append((time.perf_counter() - begin) * 1000)
            assert response.status_code == 200
        sample = re.search(r"^wharf_metrics_sample_duration_seconds (\S+)$", response.text, re.M)
        return {"repositories": options.repositories, "namespaces": 100, "push_seconds": round(pushed_in, 1),
                "exposition_bytes": len(response.content), "scrape_ms_median": round(statistics.median(durations), 2),
                "scrape_ms_p95": round(sorted(durations)[int(len(durations) * 0.95) - 1], 2),
                "sampler_seconds": float(sample.group(1)) if sample else None}
    finally:
        process.terminate()
        process.wait(timeout=60)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wharf", default=".build/release/wharf")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repositories", type=int, default=10_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wharf-bench-metrics-") as scratch:
        report = {"throughput": throughput(options, scratch), "scrape": scrape_time(options, scratch)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
