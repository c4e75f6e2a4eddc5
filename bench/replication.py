#!/usr/bin/env python3
"""Replication (issue 18), side by side in one run on this machine:

1. Throughput: the same image set copied Wharf -> Wharf by Wharf's replication (queued all at once
   by the reconcile pass, timed until every copy is COMPLETE) and by `skopeo sync` (what users would
   reach for) between the same source and a second, empty destination Wharf. Reports both times and
   the ratio (target: replication at least 3x faster).
2. Lag under a steady push load: small images pushed at a fixed rate for a fixed time; per image the
   time from the push's commit at the source to the copy's completion (the replication task's
   createdAt -> completedAt, as Wharf records them), p50 and p99.
3. Memory: the source's peak RSS while it replicates one image with a 1 GiB layer (target < 200 MiB).

    python3 bench/replication.py --wharf .build/release/wharf [--images 40] [--lag-seconds 20] [--large-mib 1024]
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

PASSWORD = "bench-admin-password-0123456789"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REGISTRY_ID = "123456789012"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Wharf:
    def __init__(self, binary, root, name, region, destinations=(), concurrency=None):
        self.root = Path(root) / name
        self.root.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        lines = ["ecr:", f'  registryId: "{REGISTRY_ID}"', "scanner:", "  enabled: false", "replication:", f"  region: {region}",
                 "  reconcileIntervalSeconds: 0"]
        if destinations:
            secret = self.root / "destination.password"
            secret.write_text(PASSWORD + "\n")
            secret.chmod(0o600)
            lines.append("  destinations:")
            for destination_name, destination_region, url in destinations:
                lines += [f"    - name: {destination_name}", f"      region: {destination_region}", f"      url: {url}", "      username: admin",
                          f"      passwordFile: {secret}"]
                if concurrency:
                    lines.append(f"      concurrency: {concurrency}")
        config = self.root / "wharf.yml"
        config.write_text("\n".join(lines) + "\n")
        env = dict(os.environ, WHARF_ADMIN_PASSWORD=PASSWORD)
        self.log = open(self.root / "server.log", "wb")
        self.process = subprocess.Popen([binary, "serve", "--listen", self.host, "--data", str(self.root / "data"), "--config", str(config)],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/v2/", timeout=1).status_code == 401:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise SystemExit(f"{name} did not start: {(self.root / 'server.log').read_text()[-2000:]}")
        self.session = requests.Session()
        self.session.auth = ("admin", PASSWORD)

    def api(self, method, path, **kwargs):
        response = self.session.request(method, f"{self.url}/api/v1{path}", timeout=60, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def put_blob(server, repository, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = server.session.post(f"{server.url}/v2/{repository}/blobs/uploads/?digest={digest}", data=data, timeout=120)
    assert response.status_code == 201, response.text
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(data)}


def push_image(server, repository, tag, layer_sizes):
    layers = [put_blob(server, repository, os.urandom(size)) for size in layer_sizes]
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag, "nonce": os.urandom(8).hex(),
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}}).encode()
    config_descriptor = put_blob(server, repository, config)
    config_descriptor["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": layers}).encode()
    response = server.session.put(f"{server.url}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}, timeout=60)
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"]


def push_large_image(server, repository, tag, size):
    """One layer of `size` pseudo-random bytes, streamed in 8 MiB chunks (never all in memory)."""
    location = server.session.post(f"{server.url}/v2/{repository}/blobs/uploads/", timeout=30).headers["Location"]
    location = location if location.startswith("http") else server.url + location
    hasher = hashlib.sha256()
    block = os.urandom(8 << 20)
    offset = 0
    while offset < size:
        n = min(len(block), size - offset)
        chunk = bytes([offset // len(block) % 256]) + block[1:n]
        hasher.update(chunk)
        response = server.session.patch(location, data=chunk, timeout=120, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + n - 1}"})
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
        location = location if location.startswith("http") else server.url + location
        offset += n
    digest = "sha256:" + hasher.hexdigest()
    response = server.session.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", timeout=300)
    assert response.status_code == 201, response.text
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    config_descriptor = put_blob(server, repository, config)
    config_descriptor["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": [layer]}).encode()
    response = server.session.put(f"{server.url}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}, timeout=60)
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"]


def configure(source, rules):
    """ECR's replication configuration through the management-side ECR API: boto3, signed with an access key."""
    import boto3
    import botocore.config

    if not hasattr(source, "key"):
        key = source.api("POST", "/users/admin/access-keys", json={"description": "bench"})
        source.key = (key["accessKeyId"], key["secretAccessKey"])
    ecr = boto3.client("ecr", endpoint_url=source.url, region_name="us-east-1", aws_access_key_id=source.key[0],
                       aws_secret_access_key=source.key[1], config=botocore.config.Config(retries={"max_attempts": 1}))
    ecr.put_replication_configuration(replicationConfiguration={"rules": rules})


def wait_idle(source, destination, timeout=1800):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queues = {d["name"]: d for d in source.api("GET", "/replication/destinations")}
        queue = queues.get(destination)
        if queue and queue["pending"] == 0:
            assert queue["failed"] == 0, queue
            return
        time.sleep(0.05)
    raise SystemExit(f"replication to {destination} did not finish in {timeout}s")


def wait_tasks(source, repository, count, timeout=1800):
    """Waits until `count` copies of the repository's images exist (the outbox fan-out may still be
    taking the last events) and are all COMPLETE; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = [t for t in source.api("GET", "/replication/tasks", params={"destination": "eu", "limit": 1000}) if t["repository"] == repository]
        if len(tasks) == count and all(t["status"] == "COMPLETE" for t in tasks):
            return tasks
        assert time.monotonic() < deadline and not any(t["status"] == "FAILED" for t in tasks), tasks
        time.sleep(0.05)


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wharf", required=True)
    parser.add_argument("--images", type=int, default=40, help="images in the throughput set (3 layers each, 64 KiB to 4 MiB)")
    parser.add_argument("--lag-seconds", type=int, default=20)
    parser.add_argument("--lag-rate", type=float, default=5.0, help="pushes per second during the lag run")
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, help="images copied at once (the destination's setting; default Wharf's)")
    args = parser.parse_args()
    binary = str(Path(args.wharf).resolve())
    root = Path(tempfile.mkdtemp(prefix="wharf-bench-replication-"))
    replicated = Wharf(binary, root, "dest-replication", "eu-west-1")
    synced = Wharf(binary, root, "dest-skopeo", "ap-south-1")
    source = Wharf(binary, root, "source", "us-east-1", [("eu", "eu-west-1", replicated.url)], concurrency=args.concurrency)
    results = {}
    try:
        # 1. Throughput.
        sizes = [64 << 10, 1 << 20, 4 << 20]
        repositories = [f"set/app{i % 8}" for i in range(args.images)]
        for i, repository in enumerate(repositories):
            push_image(source, repository, f"v{i}", sizes)
        total_mib = args.images * sum(sizes) / (1 << 20)
        configure(source, [{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}],
                            "repositoryFilters": [{"filter": "set", "filterType": "PREFIX_MATCH"}]}])
        start = time.perf_counter()
        report = source.api("POST", "/replication/reconcile")
        wait_idle(source, "eu")
        replication_seconds = time.perf_counter() - start
        assert report["queued"] == args.images, report
        start = time.perf_counter()
        for repository in sorted(set(repositories)):
            subprocess.run(["skopeo", "--insecure-policy", "sync", "--src", "docker", "--dest", "docker",
                            "--src-tls-verify=false", "--dest-tls-verify=false", "--src-creds", f"admin:{PASSWORD}",
                            "--dest-creds", f"admin:{PASSWORD}", f"{source.host}/{repository}", f"{synced.host}/set"],
                           check=True, capture_output=True)
        skopeo_seconds = time.perf_counter() - start
        results["throughput"] = {"images": args.images, "MiB": round(total_mib), "replication_s": round(replication_seconds, 2),
                                 "skopeo_sync_s": round(skopeo_seconds, 2), "speedup": round(skopeo_seconds / replication_seconds, 2)}
        print(f"throughput: {args.images} images, {total_mib:.0f} MiB: replication {replication_seconds:.2f} s, "
              f"skopeo sync {skopeo_seconds:.2f} s -> {skopeo_seconds / replication_seconds:.2f}x", flush=True)

        # 2. Lag under a steady push load.
        configure(source, [{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}],
                            "repositoryFilters": [{"filter": "lag", "filterType": "PREFIX_MATCH"}]}])
        pushed = []
        interval = 1 / args.lag_rate
        deadline = time.perf_counter() + args.lag_seconds
        next_push = time.perf_counter()
        while time.perf_counter() < deadline:
            pushed.append(push_image(source, "lag/app", f"t{len(pushed)}", [32 << 10]))
            next_push += interval
            time.sleep(max(0, next_push - time.perf_counter()))
        tasks = wait_tasks(source, "lag/app", len(pushed))
        lags = sorted((parse_time(t["completedAt"]) - parse_time(t["createdAt"])) * 1000 for t in tasks)
        assert len(lags) == len(pushed), (len(lags), len(pushed))
        p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        results["lag"] = {"pushes": len(pushed), "rate_per_s": args.lag_rate, "p50_ms": round(p50), "p99_ms": round(p99)}
        print(f"lag: {len(pushed)} pushes at {args.lag_rate}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms (commit at the source -> copied)", flush=True)

        # 3. Memory while replicating a large layer.
        configure(source, [{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}],
                            "repositoryFilters": [{"filter": "large", "filterType": "PREFIX_MATCH"}]}])
        baseline = source.rss_mib()
        peak = [baseline]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], source.rss_mib())
                time.sleep(0.05)

        start = time.perf_counter()
        push_large_image(source, "large/app", "v1", args.large_mib << 20)
        pushed_at = time.perf_counter()
        push_peak = source.rss_mib()
        sampler = threading.Thread(target=sample)
        sampler.start()
        wait_tasks(source, "large/app", 1)
        sampling.set()
        sampler.join()
        copy_seconds = time.perf_counter() - pushed_at
        results["large"] = {"MiB": args.large_mib, "push_s": round(pushed_at - start, 2), "replication_s": round(copy_seconds, 2),
                            "source_rss_before_MiB": round(baseline), "source_rss_after_push_MiB": round(push_peak),
                            "source_peak_rss_while_replicating_MiB": round(peak[0])}
        print(f"large: {args.large_mib} MiB layer copied in {copy_seconds:.2f} s; source RSS {baseline:.0f} MiB before, "
              f"peak {peak[0]:.0f} MiB while replicating (target < 200)", flush=True)
    finally:
        for server in (source, replicated, synced):
            server.stop()
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results" / f"replication-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
