#!/usr/bin/env python3
"""Wharf versus CNCF Distribution, side by side on one machine, identical workloads.

Each registry runs on 127.0.0.1 with filesystem storage (or, with `--storage s3`, each with a bucket
of its own on one S3 server: moto's, started by scripts/s3.sh), first without authentication, then with
it (Wharf: its own token service, clients use bearer tokens as Docker does; Distribution: htpasswd
Basic authentication, its only built-in scheme). Results print as one table (Wharf, Distribution,
ratio; a ratio above 1 means Wharf is better) and go to bench/results/<time>.json.
"""

import argparse
import base64
import http.client
import concurrent.futures
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PASSWORD = "bench-password-123"
# With --storage s3: the S3 server both registries use (endpoint, keys), each with a bucket of its own.
S3 = {}


def s3_bucket(name):
    import boto3
    client = boto3.client("s3", endpoint_url=S3["endpoint"], region_name="us-east-1",
                          aws_access_key_id=S3["key"], aws_secret_access_key=S3["secret"])
    client.create_bucket(Bucket=name)
    return name


def wharf_s3_config(workdir, bucket):
    secret = Path(workdir) / "s3-secret"
    secret.write_text(S3["secret"] + "\n")
    secret.chmod(0o600)
    return ("storage:\n  s3:\n"
            f"    bucket: {bucket}\n    endpoint: {S3['endpoint']}\n    pathStyle: true\n"
            f"    accessKeyId: {S3['key']}\n    secretAccessKeyFile: {secret}\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def run(args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=True, **kwargs)


def run_timed(args):
    """Runs a command; returns its wall time in seconds."""
    start = time.perf_counter()
    run(args)
    return time.perf_counter() - start


class RSSMonitor:
    """Samples a process's resident memory; peaks are kept per named phase."""

    def __init__(self, pid):
        self.pid = pid
        self.phase = "idle"
        self.peaks = {}
        self.stopped = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stopped:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024
                self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            except (OSError, AttributeError):
                return
            time.sleep(0.05)

    def stop(self):
        self.stopped = True


class Registry:
    name = "?"

    def __init__(self, workdir, auth):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.port = free_port()
        self.process = None
        self.session = requests.Session()
        if auth:
            self.session.auth = ("bench", PASSWORD)

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"http://{self.host}"

    @property
    def creds(self):
        return f"bench:{PASSWORD}" if self.auth else None

    def wait_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/v2/", timeout=1).status_code in (200, 401):
                    self.rss = RSSMonitor(self.process.pid)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.rss.stop()

    def curl_auth(self):
        return ["-u", f"bench:{PASSWORD}"] if self.auth else []

    def bearer_header(self, scope):
        """Headers a Docker client would send for `scope` (a bearer token when auth is on)."""
        if not self.auth:
            return {}
        return {"Authorization": "Basic " + __import__("base64").b64encode(f"bench:{PASSWORD}".encode()).decode()}


class Wharf(Registry):
    name = "Wharf"

    def __init__(self, binary, workdir, auth):
        super().__init__(workdir, auth)
        self.binary = binary

    def start(self):
        data = self.workdir / "wharf-data"
        config = self.workdir / "wharf.yml"
        text = "log:\n  level: error\nlifecycle:\n  enabled: false\n"
        if S3:
            text += wharf_s3_config(self.workdir, s3_bucket("wharf-" + self.workdir.name.lower().replace("_", "-")))
        config.write_text(text)
        env = dict(os.environ, WHARF_ADMIN_PASSWORD=PASSWORD, WHARF_AUTH_ENABLED="true" if self.auth else "false")
        self.log = self.workdir / "wharf.log"
        self.process = subprocess.Popen([self.binary, "serve", "--listen", self.host, "--data", data, "--config", config],
                                        stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env)
        self.wait_ready()
        if self.auth:
            # The benchmark user: a system administrator (Distribution's htpasswd user may do everything
            # too), imported from an htpasswd line made exactly as Distribution's, so both servers check
            # the same bcrypt cost. (A user created with a password gets Wharf's cost 12: its first
            # sign-in then takes about 0.25 s longer; see the README.)
            line = run(["htpasswd", "-nbB", "bench", PASSWORD]).stdout.strip()
            response = requests.post(f"{self.url}/api/v1/users", auth=("admin", PASSWORD),
                                     json={"name": "bench", "passwordHash": line.split(":", 1)[1], "admin": True})
            assert response.status_code == 201, response.text
        self.blob_root = data / "blobs"
        return self

    def bearer_header(self, scope):
        if not self.auth:
            return {}
        token = requests.get(f"{self.url}/auth/token", params={"service": "wharf", "scope": scope}, auth=("bench", PASSWORD)).json()["token"]
        return {"Authorization": f"Bearer {token}"}


class Distribution(Registry):
    name = "Distribution"

    def start(self):
        root = self.workdir / "distribution-data"
        root.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:", "  level: error", "  accesslog:", "    disabled: true",
            *(["storage:", "  s3:", f"    accesskey: {S3['key']}", f"    secretkey: {S3['secret']}", "    region: us-east-1",
               f"    regionendpoint: {S3['endpoint']}", f"    bucket: {s3_bucket('distribution-' + self.workdir.name.lower().replace('_', '-'))}",
               "    secure: false", "    v4auth: true", "    chunksize: 10485760", "    rootdirectory: /registry"] if S3 else
              ["storage:", "  filesystem:", f"    rootdirectory: {root}"]),
            # Distribution's S3 driver answers blob GETs with redirects to presigned URLs by default;
            # off, so both registries serve the bytes themselves (Wharf's redirect is off by default too).
            *(["  redirect:", "    disable: true"] if S3 else []),
            "  delete:", "    enabled: true",
            "  cache:", "    blobdescriptor: inmemory",
            "http:", f"  addr: {self.host}",
        ]
        if self.auth:
            htpasswd = self.workdir / "htpasswd"
            run(["htpasswd", "-Bbc", htpasswd, "bench", PASSWORD])
            lines += ["auth:", "  htpasswd:", "    realm: bench", f"    path: {htpasswd}"]
        config = self.workdir / "distribution.yml"
        config.write_text("\n".join(lines) + "\n")
        self.log = self.workdir / "distribution.log"
        # Distribution's AWS SDK panics on a custom CA bundle with its own HTTP transport; it needs none here.
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self.process = subprocess.Popen(["docker-registry", "serve", config], stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env)
        self.wait_ready()
        self.blob_root = root
        return self


# ---- workloads ---------------------------------------------------------------------------------

PUSH_COUNTER = itertools.count()


def make_unique(path):
    """Gives the file new content (its first 16 bytes) and returns its digest. Every push then sends
    a blob the server does not hold yet: pushing the same bytes again would measure each server's
    handling of a duplicate (for both, freeing the 1 GiB just written) instead of a push."""
    with open(path, "r+b") as f:
        f.write(f"{os.getpid():08x}{next(PUSH_COUNTER):08x}".encode())
    return sha256_file(path)


def curl_upload(registry, repository, path, chunked):
    """Pushes a blob: POST, then one PUT with the whole body, or 10 MiB PATCHes and a closing PUT."""
    digest = make_unique(path)
    start = time.perf_counter()
    location = registry.session.post(f"{registry.url}/v2/{repository}/blobs/uploads/").headers["Location"]
    location = location if location.startswith("http") else registry.url + location
    size = path.stat().st_size
    if not chunked:
        run(["curl", "-sf", "-X", "PUT", *registry.curl_auth(), "-H", "Content-Type: application/octet-stream",
             "-T", path, f"{location}{'&' if '?' in location else '?'}digest={digest}"])
    else:
        chunk = 10 * MiB
        with open(path, "rb") as f:
            offset = 0
            while offset < size:
                data = f.read(chunk)
                response = registry.session.patch(location, data=data, headers={
                    "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + len(data) - 1}"})
                assert response.status_code == 202, response.text
                location = response.headers["Location"]
                location = location if location.startswith("http") else registry.url + location
                offset += len(data)
        response = registry.session.put(f"{location}{'&' if '?' in location else '?'}digest={digest}")
        assert response.status_code == 201, response.text
    elapsed = time.perf_counter() - start
    return size / elapsed / 1e6, digest


def curl_download(registry, repository, digest):
    out = run(["curl", "-sf", *registry.curl_auth(), "-o", "/dev/null", "-w", "%{speed_download}", f"{registry.url}/v2/{repository}/blobs/{digest}"])
    return float(out.stdout) / 1e6


def blob_workloads(registries, files, results, repeats):
    for size_name, path in files.items():
        for registry in registries:
            registry.rss.phase = f"push {size_name}"
            pushed = None
            for mode in ("monolithic", "chunked"):
                speeds = []
                for i in range(repeats[size_name]):
                    speed, digest = curl_upload(registry, f"bench/blob-{mode}-{i}", path, chunked=(mode == "chunked"))
                    speeds.append(speed)
                    pushed = pushed or digest
                results.record(f"blob push {mode} {size_name} (MB/s)", registry, statistics.median(speeds), higher_is_better=True)
            registry.rss.phase = f"pull {size_name}"
            speeds = [curl_download(registry, "bench/blob-monolithic-0", pushed) for _ in range(repeats[size_name])]
            results.record(f"blob pull {size_name} (MB/s)", registry, statistics.median(speeds), higher_is_better=True)


def push_small_image(session, url, repository, tag, payload):
    config = json.dumps({"architecture": "amd64", "os": "linux", "payload": payload}).encode()
    layer = payload.encode() * 100
    digests = []
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        response = session.post(f"{url}/v2/{repository}/blobs/uploads/")
        location = response.headers["Location"]
        location = location if location.startswith("http") else url + location
        response = session.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", data=blob, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text
        digests.append((digest, len(blob)))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0][0], "size": digests[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digests[1][0], "size": digests[1][1]}],
    }).encode()
    response = session.put(f"{url}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert response.status_code == 201, response.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest


def hey(url, headers, method="HEAD", connections=64, duration=10):
    """HEAD load with hey: wrk cannot measure HEAD (its parser waits for the body Content-Length announces)."""
    args = ["hey", "-z", f"{duration}s", "-c", str(connections), "-m", method]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = run(args + [url]).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(percent):
        return float(re.search(rf"\s{percent}% in ([\d.]+) secs", out).group(1)) * 1000

    statuses = {int(code): int(count) for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = sum(count for code, count in statuses.items() if code >= 400) + (1 if "Error distribution" in out else 0)
    return {"rps": rps, "p50_ms": latency(50), "p99_ms": latency(99), "errors": errors}


def wrk(url, headers, method="GET", connections=64, duration=10):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    lines = [f'wrk.method = "{method}"'] + [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write("\n".join(lines) + "\n")
    script.close()
    out = run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name, url]).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(percent):
        match = re.search(rf"\s{percent}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value if unit == "ms" else value * 1000

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "p50_ms": latency(50), "p99_ms": latency(99), "errors": errors}


def manifest_workloads(registries, results, duration):
    for registry in registries:
        digest, _ = push_small_image(registry.session, registry.url, "bench/manifests", "latest", "manifest benchmark")
        headers = {"Accept": OCI_MANIFEST, **registry.bearer_header("repository:bench/manifests:pull")}
        for method in ("GET", "HEAD"):
            for reference, label in (("latest", "tag"), (digest, "digest")):
                registry.rss.phase = f"manifest {method} by {label}"
                load = wrk if method == "GET" else hey
                r = load(f"{registry.url}/v2/bench/manifests/manifests/{reference}", headers, method=method, duration=duration)
                assert r["errors"] == 0, f"{registry.name} answered errors: {r}"
                results.record(f"manifest {method} by {label}, 64 conns (req/s)", registry, r["rps"], higher_is_better=True)
                results.record(f"manifest {method} by {label} p50 (ms)", registry, r["p50_ms"], higher_is_better=False)
                results.record(f"manifest {method} by {label} p99 (ms)", registry, r["p99_ms"], higher_is_better=False)


def listing_workloads(registries, results, count):
    for registry in registries:
        registry.rss.phase = "listing setup"
        session = registry.session
        digest, manifest = push_small_image(session, registry.url, "bench/tags", "seed", "tags")
        tags = [f"t{i:05d}" for i in range(count)]
        if isinstance(registry, Wharf):
            for i in range(0, count, 50):  # PUT …/manifests/<digest>?tag=… tags many at once (one OCI-Tag header each)
                query = "&".join(f"tag={t}" for t in tags[i:i + 50])
                assert session.put(f"{registry.url}/v2/bench/tags/manifests/{digest}?{query}", data=manifest,
                                   headers={"Content-Type": OCI_MANIFEST}).status_code == 201
        else:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda t: session.put(f"{registry.url}/v2/bench/tags/manifests/{t}", data=manifest,
                                                    headers={"Content-Type": OCI_MANIFEST}).raise_for_status(), tags))
        layer = json.loads(manifest)["layers"][0]["digest"]
        config = json.loads(manifest)["config"]["digest"]

        def repository(i):
            name = f"repos/r{i:05d}"
            for blob in (config, layer):
                response = session.post(f"{registry.url}/v2/{name}/blobs/uploads/?mount={blob}&from=bench/tags")
                assert response.status_code == 201, response.text
            session.put(f"{registry.url}/v2/{name}/manifests/v1", data=manifest, headers={"Content-Type": OCI_MANIFEST}).raise_for_status()

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(repository, range(count)))

        def walk(path, key, page_size):
            """Follows Link headers over one keep-alive connection. The clock runs from sending each
            request to the last byte of its answer; decoding JSON on this side is not counted.
            page_size None asks as skopeo list-tags and crane ls do: no n, the server's own page."""
            connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)
            headers = {}
            if registry.auth:
                headers["Authorization"] = "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
            target, items, elapsed, first = (f"{path}?n={page_size}" if page_size else path), 0, 0.0, None
            while target:
                start = time.perf_counter()
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                body = response.read()
                elapsed += time.perf_counter() - start
                assert response.status == 200, body[:200]
                if first is None:
                    first = elapsed
                items += len(json.loads(body)[key] or [])
                link = response.getheader("Link")
                target = re.match(r"<([^>]+)>", link).group(1) if link else None
            connection.close()
            assert items >= count, f"{registry.name}: {items} listed by {path}"
            return first, elapsed

        # Let the setup's writes reach the disk first (both servers wrote ~30,000 records or files):
        # the walks measure listing, not the kernel's writeback competing for two cores.
        os.sync()
        time.sleep(1)
        registry.rss.phase = "listing"
        for what, path, key in ((f"tag list of {count}", "/v2/bench/tags/tags/list", "tags"),
                                (f"catalog of {count}+ repositories", "/v2/_catalog", "repositories")):
            # The first walk after the writes is cold: nothing about the list is cached yet.
            first, total = walk(path, key, 1000)
            results.record(f"{what}: first page, cold (ms)", registry, first * 1000, higher_is_better=False)
            results.record(f"{what}: full walk n=1000, cold (ms)", registry, total * 1000, higher_is_better=False)
            warm = statistics.median(walk(path, key, 1000)[1] for _ in range(5))
            results.record(f"{what}: full walk n=1000, median of 5 (ms)", registry, warm * 1000, higher_is_better=False)
            default = statistics.median(walk(path, key, None)[1] for _ in range(5))
            results.record(f"{what}: full walk without n, median of 5 (ms)", registry, default * 1000, higher_is_better=False)


BLOB_INFO_CACHES = [Path("/var/lib/containers/cache"), Path.home() / ".local/share/containers/cache"]


def forget_blob_locations():
    """Removes skopeo's blob-info cache, which otherwise turns a second copy in into cross-repository
    mounts (for root it lives in /var/lib/containers/cache)."""
    for folder in BLOB_INFO_CACHES:
        for cache in folder.glob("blob-info-cache-v1*"):
            cache.unlink()


def skopeo_workload(registries, results, layout, rounds=5):
    """Medians of `rounds` copies in and out, the servers taking turns so that a slow moment of the
    disk falls on both (a copy is about 0.7 s, most of it skopeo's own work, and single copies
    varied by ±30 %). Every copy in goes to a new repository with skopeo's blob-info cache cleared:
    it uploads every layer (the registry may hold them in another repository, which costs both
    servers the same: each receives and hashes the bytes again)."""
    if not layout:
        return
    for registry in registries:
        registry.rss.phase = "skopeo"
    timings = {id(registry): {"in": [], "out": []} for registry in registries}
    for i in range(rounds):
        for registry in registries:
            forget_blob_locations()
            creds = ["--dest-creds", registry.creds] if registry.auth else []
            timings[id(registry)]["in"].append(run_timed(
                ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", *creds, f"oci:{layout}", f"docker://{registry.host}/bench/debian-{i}:1"]))
    for _ in range(rounds):
        for registry in registries:
            creds = ["--src-creds", registry.creds] if registry.auth else []
            out = Path(tempfile.mkdtemp())
            timings[id(registry)]["out"].append(run_timed(
                ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", *creds, f"docker://{registry.host}/bench/debian-0:1", f"oci:{out}:x"]))
            shutil.rmtree(out)
    for registry in registries:
        results.record(f"skopeo copy Debian image in, median of {rounds} (s)", registry, statistics.median(timings[id(registry)]["in"]), higher_is_better=False)
        results.record(f"skopeo copy Debian image out, median of {rounds} (s)", registry, statistics.median(timings[id(registry)]["out"]), higher_is_better=False)


def mixed_workload(registries, results, duration):
    """75 % pulls (manifest + blob), 25 % pushes (two blobs + manifest), 16 workers."""
    for registry in registries:
        for i in range(20):
            push_small_image(registry.session, registry.url, "bench/mixed", f"seed{i}", f"seed {i}")
        registry.rss.phase = "mixed"
        latencies, errors = [], []
        stop_at = time.monotonic() + duration
        lock = threading.Lock()

        def worker(number):
            session = requests.Session()
            session.auth = registry.session.auth
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                start = time.perf_counter()
                try:
                    if n % 4 == 0:
                        push_small_image(session, registry.url, "bench/mixed", f"w{number}-{n}", f"{number}-{n}")
                    else:
                        response = session.get(f"{registry.url}/v2/bench/mixed/manifests/seed{n % 20}", headers={"Accept": OCI_MANIFEST})
                        response.raise_for_status()
                        blob = response.json()["layers"][0]["digest"]
                        session.get(f"{registry.url}/v2/bench/mixed/blobs/{blob}").raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - start)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(str(error))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, f"{registry.name}: {errors[:3]}"
        latencies.sort()
        results.record("mixed 75/25, 16 workers (ops/s)", registry, len(latencies) / duration, higher_is_better=True)
        results.record("mixed p50 (ms)", registry, latencies[len(latencies) // 2] * 1000, higher_is_better=False)
        results.record("mixed p99 (ms)", registry, latencies[int(len(latencies) * 0.99)] * 1000, higher_is_better=False)


def cluster_workload(binary, work, results, duration):
    """Manifest GETs through nginx in front of one node, then three, over one PostgreSQL and the S3 server."""
    work.chmod(0o755)  # the PostgreSQL server runs as the postgres user and needs to reach its folder
    postgres = run(["scripts/postgres.sh", "start", str(work / "postgres")], cwd=ROOT).stdout
    url = re.search(r"WHARF_TEST_POSTGRES_URL=(\S+)", postgres).group(1)
    nodes = []
    try:
        bucket = s3_bucket("wharf-cluster")
        config = work / "cluster.yml"
        config.write_text(f"log:\n  level: error\ndatabase:\n  url: {url}\n" + wharf_s3_config(work, bucket)
                          + f"secrets:\n  masterKeyFile: {work / 'cluster-master.key'}\n")
        for index in range(3):
            node = Wharf(binary, work / f"node{index}", auth=False)
            node.log = node.workdir / "wharf.log"
            env = dict(os.environ, WHARF_ADMIN_PASSWORD=PASSWORD, WHARF_AUTH_ENABLED="false")
            node.process = subprocess.Popen([binary, "serve", "--listen", node.host, "--data", node.workdir / "data", "--config", config],
                                            stdout=open(node.log, "w"), stderr=subprocess.STDOUT, env=env)
            node.wait_ready()
            nodes.append(node)
        push_small_image(nodes[0].session, nodes[0].url, "bench/cluster", "latest", "cluster benchmark")
        for count in (1, 3):
            folder = work / f"nginx-{count}"
            folder.mkdir()
            port = free_port()
            servers = "".join(f"server 127.0.0.1:{node.port}; " for node in nodes[:count])
            temp = " ".join(f"{kind}_temp_path {folder}/{kind};" for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
            (folder / "nginx.conf").write_text(
                f"{'user root;' if os.geteuid() == 0 else ''} worker_processes 2; error_log {folder}/error.log; pid {folder}/pid;"
                f" events {{ worker_connections 1024; }} http {{ access_log off; {temp}"
                f" upstream wharf {{ {servers} keepalive 64; }}"
                f" server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://wharf; proxy_http_version 1.1;"
                f" proxy_set_header Connection \"\"; proxy_set_header Host $http_host; }} }} }}")
            nginx = subprocess.Popen(["nginx", "-c", folder / "nginx.conf", "-g", "daemon off;"])
            try:
                time.sleep(1)
                r = wrk(f"http://127.0.0.1:{port}/v2/bench/cluster/manifests/latest", {"Accept": OCI_MANIFEST}, duration=duration)
                assert r["errors"] == 0, r
                section = results.wharf.setdefault("nodes behind nginx (PostgreSQL + S3)", {})
                section[f"manifest GET by tag, {count} node{'s' if count > 1 else ''} (req/s)"] = r["rps"]
                section[f"manifest GET by tag, {count} node{'s' if count > 1 else ''} p99 (ms)"] = r["p99_ms"]
            finally:
                nginx.terminate()
                nginx.wait()
    finally:
        for node in nodes:
            node.stop()
        run(["scripts/postgres.sh", "stop", str(work / "postgres")], cwd=ROOT)


def machine_limits(files, results):
    """What this machine can do with the bytes of a 1 GiB push, without a server: hash them, write
    them to a new file and fsync it, read them. Medians of three.

    The write goes to a new file each time and the files stay until the run ends, because that is
    what a push does: it fills page cache the kernel had free. On a VM whose balloon reports free
    memory to the host (virtio free page reporting) that costs about twice as much as writing into
    memory freed a moment ago, so both are measured; the limit uses the first, like the pushes."""
    path = files.get("1GiB") or list(files.values())[-1]
    size = path.stat().st_size

    hash_time = statistics.median(run_timed(["openssl", "dgst", "-sha256", path]) for _ in range(3))
    written = [path.parent / f"write-test-{i}" for i in range(3)]
    time.sleep(5)  # lets memory freed before the run (other processes) go back to the host, as it has by the 1 GiB pushes
    write_time = statistics.median(run_timed(["dd", f"if={path}", f"of={target}", "bs=1M", "conv=fsync"]) for target in written)
    reused = []
    for target in written:
        target.unlink()
        reused.append(run_timed(["dd", f"if={path}", f"of={target}", "bs=1M", "conv=fsync"]))
    read_time = statistics.median(run_timed(["curl", "-s", "-o", "/dev/null", f"file://{path}"]) for _ in range(3))
    results.machine_size = f"{size / (1024 * MiB):g} GiB" if size >= 1024 * MiB else f"{size / MiB:g} MiB"
    results.machine = {
        "sha256 (MB/s)": size / hash_time / 1e6,
        "write + fsync to a new file (MB/s)": size / write_time / 1e6,
        "hash then write, serial (MB/s)": size / (hash_time + write_time) / 1e6,
        "write + fsync into memory just freed (MB/s, for comparison)": size / statistics.median(reused) / 1e6,
        "curl file read (MB/s)": size / read_time / 1e6,
    }


def wharf_only(wharf_off, wharf_on, results, duration, gc_blobs):
    """Issue benchmarks that concern Wharf alone: auth overhead and collection under load."""
    digest, _ = push_small_image(wharf_off.session, wharf_off.url, "bench/authcost", "latest", "auth cost")
    push_small_image(wharf_on.session, wharf_on.url, "bench/authcost", "latest", "auth cost")
    accept = {"Accept": OCI_MANIFEST}
    # Interleaved rounds, medians: on a small machine one run's noise exceeds the difference measured.
    rounds = {"off": [], "bearer": [], "basic": []}
    bearer_headers = {**accept, **wharf_on.bearer_header("repository:bench/authcost:pull")}
    basic_headers = {**accept, **Registry.bearer_header(wharf_on, "")}
    for _ in range(3):
        rounds["off"].append(wrk(f"{wharf_off.url}/v2/bench/authcost/manifests/latest", accept, duration=duration)["rps"])
        rounds["bearer"].append(wrk(f"{wharf_on.url}/v2/bench/authcost/manifests/latest", bearer_headers, duration=duration)["rps"])
        rounds["basic"].append(wrk(f"{wharf_on.url}/v2/bench/authcost/manifests/latest", basic_headers, duration=duration)["rps"])
    off, bearer, basic = (statistics.median(rounds[k]) for k in ("off", "bearer", "basic"))
    results.wharf["authentication cost"] = {
        "manifest GET by tag, auth off (req/s, median of 3)": off,
        "same, bearer token (req/s)": bearer,
        "same, Basic credentials (req/s)": basic,
        "bearer / off": bearer / off,
        "basic / off": basic / off,
    }
    if not gc_blobs:
        return
    # Collection: seed unreferenced blobs, then collect them while manifest GETs run.
    session = wharf_on.session

    def seed(i):
        data = f"garbage blob {i} {os.urandom(8).hex()}".encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = session.post(f"{wharf_on.url}/v2/bench/garbage/blobs/uploads/?digest={digest}", data=data)
        assert response.status_code == 201, response.text

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(seed, range(gc_blobs)))
    seed_time = time.perf_counter() - start
    headers = {**accept, **wharf_on.bearer_header("repository:bench/authcost:pull")}
    idle = wrk(f"{wharf_on.url}/v2/bench/authcost/manifests/latest", headers, duration=duration)
    outcome = {}

    def collect():
        begin = time.perf_counter()
        outcome["report"] = requests.post(f"{wharf_on.url}/api/v1/gc?graceSeconds=0", auth=("bench", PASSWORD), timeout=600).json()
        outcome["seconds"] = time.perf_counter() - begin

    collector = threading.Thread(target=collect)
    collector.start()
    time.sleep(0.2)
    loaded = wrk(f"{wharf_on.url}/v2/bench/authcost/manifests/latest", headers, duration=duration)
    collector.join()
    results.wharf["garbage collection"] = {
        "unreferenced blobs": gc_blobs,
        "seeding (s)": seed_time,
        "collection (s)": outcome["seconds"],
        "blobs deleted": outcome["report"]["deletedBlobs"],
        "manifest GET idle (req/s)": idle["rps"],
        "manifest GET during collection (req/s)": loaded["rps"],
        "during / idle": loaded["rps"] / idle["rps"],
    }


def encryption_workload(wharf, files, results, repeats):
    """The cost of encryption at rest on the same server: pushes and pulls into an AES256 repository
    (created through the ECR API, as users do) beside a plain one, interleaved, medians."""
    import boto3
    key = requests.post(f"{wharf.url}/api/v1/users/bench/access-keys", auth=("bench", PASSWORD), json={"description": "bench"}).json()
    ecr = boto3.client("ecr", endpoint_url=wharf.url, region_name="us-east-1",
                       aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])
    ecr.create_repository(repositoryName="bench/encrypted", encryptionConfiguration={"encryptionType": "AES256"})
    table = {}
    for size_name, path in files.items():
        if size_name not in ("100MiB", "1GiB"):
            continue
        speeds = {(kind, op): [] for kind in ("plain", "encrypted") for op in ("push", "chunked push", "pull")}
        for _ in range(max(3, repeats[size_name])):
            for kind in ("plain", "encrypted"):
                repository = f"bench/{kind}"
                speed, digest = curl_upload(wharf, repository, path, chunked=False)
                speeds[(kind, "push")].append(speed)
                speeds[(kind, "chunked push")].append(curl_upload(wharf, repository, path, chunked=True)[0])
                speeds[(kind, "pull")].append(curl_download(wharf, repository, digest))
        for op in ("push", "chunked push", "pull"):
            plain, encrypted = statistics.median(speeds[("plain", op)]), statistics.median(speeds[("encrypted", op)])
            table[f"{op} {size_name}, plain (MB/s)"] = plain
            table[f"{op} {size_name}, AES256 (MB/s)"] = encrypted
            table[f"{op} {size_name}, encrypted / plain"] = encrypted / plain
    results.wharf["encryption at rest"] = table


def number(value):
    """Two decimals below 10 (seconds of a skopeo copy), one above."""
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


class Results:
    def __init__(self):
        self.rows = {}
        self.machine = {}
        self.machine_size = ""
        self.wharf = {}
        self.rss = {}

    def record(self, name, registry, value, higher_is_better):
        row = self.rows.setdefault(name, {"higher_is_better": higher_is_better, "auth": {}})
        row["auth"].setdefault(registry.auth, {})[registry.name] = value

    def table(self):
        lines = []
        for auth in (False, True):
            lines.append(f"\n## Authentication {'on' if auth else 'off'}\n")
            lines.append(f"| workload | Wharf | Distribution | ratio |")
            lines.append("|---|---:|---:|---:|")
            for name, row in self.rows.items():
                values = row["auth"].get(auth)
                if not values or "Wharf" not in values or "Distribution" not in values:
                    continue
                w, d = values["Wharf"], values["Distribution"]
                ratio = (w / d if row["higher_is_better"] else d / w) if w and d else float("nan")
                lines.append(f"| {name} | {number(w)} | {number(d)} | {ratio:.2f}× |")
            rss = self.rss.get(auth, {})
            for phase in sorted(set(rss.get("Wharf", {})) | set(rss.get("Distribution", {}))):
                w = rss.get("Wharf", {}).get(phase, 0) / MiB
                d = rss.get("Distribution", {}).get(phase, 0) / MiB
                if w and d:
                    lines.append(f"| peak RSS: {phase} (MiB) | {w:,.1f} | {d:,.1f} | {d / w:.2f}× |")
        if self.machine:
            lines.append(f"\n## The machine's own limits ({self.machine_size})\n")
            lines += [f"- {k}: {v:,.0f}" for k, v in self.machine.items()]
            limit = self.machine["hash then write, serial (MB/s)"]
            for mode in ("monolithic", "chunked"):
                if "hash then write, serial (MB/s)" not in self.machine:
                    break
                row = self.rows.get(f"blob push {mode} 1GiB (MB/s)", {}).get("auth", {})
                shares = [f"{values[name] / limit:.0%} ({name}, authentication {'on' if auth else 'off'})"
                          for auth, values in sorted(row.items()) for name in ("Wharf", "Distribution") if name in values]
                if shares:
                    lines.append(f"- 1 GiB {mode} push, share of the serial limit: " + ", ".join(shares))
        for section, values in self.wharf.items():
            lines.append(f"\n## Wharf: {section}\n")
            lines += [f"- {k}: {v:,.2f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in values.items()]
        return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wharf", default=str(ROOT / ".build" / "release" / "wharf"))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 1 GiB blobs, 1 000 tags and repositories")
    parser.add_argument("--only", default="", help="comma-separated: blobs,manifests,listings,skopeo,mixed,wharf,cluster,encryption")
    parser.add_argument("--duration", type=int, default=10, help="seconds per throughput measurement")
    parser.add_argument("--gc-blobs", type=int, default=100_000, help="unreferenced blobs for the collection benchmark (0 skips it)")
    parser.add_argument("--storage", choices=["filesystem", "s3"], default="filesystem",
                        help="s3: both registries store blobs in S3 (moto's server, started here); adds the three-node cluster workload")
    parser.add_argument("--layout", default=str(Path.home() / ".cache" / "wharf-e2e" / "debian-layout") + ":bookworm",
                        help="OCI layout reference of the image for skopeo (built by the e2e tests)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))

    def wanted(name):
        return not only or name in only

    work = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    services = []
    if args.storage == "s3":
        environment = run(["scripts/s3.sh", "start", str(work / "s3")], cwd=ROOT).stdout
        values = dict(re.findall(r"export (\w+)=(\S+)", environment))
        S3.update(endpoint=values["WHARF_TEST_S3_ENDPOINT"], key=values["WHARF_TEST_S3_ACCESS_KEY"], secret=values["WHARF_TEST_S3_SECRET_KEY"])
        services.append(["scripts/s3.sh", "stop", str(work / "s3")])
    sizes = {"1MiB": MiB, "10MiB": 10 * MiB, "100MiB": 100 * MiB} if args.quick else {"1MiB": MiB, "10MiB": 10 * MiB, "100MiB": 100 * MiB, "1GiB": 1024 * MiB}
    repeats = {"1MiB": 10, "10MiB": 5, "100MiB": 3, "1GiB": 3} if not args.quick else {"1MiB": 5, "10MiB": 3, "100MiB": 1}
    if args.storage == "s3":
        # moto keeps every object in memory: fewer, larger blobs.
        sizes = {"10MiB": 10 * MiB, "100MiB": 100 * MiB} if args.quick else {"10MiB": 10 * MiB, "100MiB": 100 * MiB, "1GiB": 1024 * MiB}
        repeats = {"10MiB": 3, "100MiB": 2, "1GiB": 1}
    files = {}
    for name, size in sizes.items():
        path = work / f"blob-{name}"
        with open(path, "wb") as f:
            remaining = size
            while remaining:
                block = os.urandom(min(remaining, 4 * MiB))
                f.write(block)
                remaining -= len(block)
        files[name] = path

    results = Results()
    machine_limits(files, results)
    layout = args.layout if Path(args.layout.rsplit(":", 1)[0], "index.json").exists() else None
    count = 1000 if args.quick else 10_000
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    wharf_servers = {}
    try:
        for auth in (False, True):
            registries = [Wharf(args.wharf, work / f"wharf-{auth}", auth).start(), Distribution(work / f"distribution-{auth}", auth).start()]
            wharf_servers[auth] = registries[0]
            for registry in registries:
                registry.rss.phase = "idle"
            time.sleep(1)
            try:
                if wanted("manifests"):
                    manifest_workloads(registries, results, args.duration)
                if wanted("blobs"):
                    blob_workloads(registries, files, results, repeats)
                if wanted("skopeo"):
                    skopeo_workload(registries, results, layout)
                if wanted("mixed"):
                    mixed_workload(registries, results, args.duration * 2)
                if wanted("listings"):
                    listing_workloads(registries, results, count)
            finally:
                for registry in registries:
                    results.rss.setdefault(auth, {})[registry.name] = dict(registry.rss.peaks)
                if auth is False:
                    registries[1].stop()
                else:
                    registries[1].stop()
        if wanted("wharf") and not S3:
            wharf_only(wharf_servers[False], wharf_servers[True], results, args.duration, 0 if args.quick else args.gc_blobs)
        if wanted("encryption"):
            encryption_workload(wharf_servers[True], files, results, repeats)
        if wanted("cluster") and S3:
            cluster_workload(args.wharf, work, results, args.duration)
    finally:
        for server in wharf_servers.values():
            server.stop()
        for command in services:
            run(command, cwd=ROOT)
    cpu = platform.processor() or next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    header = f"# Wharf vs CNCF Distribution ({args.storage} storage) — {started}\n\n{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"
    print(header)
    print(results.table())
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {"started": started, "cores": os.cpu_count(), "cpu": cpu, "rows": results.rows, "machine": results.machine,
               "wharf": results.wharf, "rss": {str(k): v for k, v in results.rss.items()}}
    (out / f"{stamp}.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / f"{stamp}.md").write_text(header + "\n" + results.table() + "\n")
    print(f"\nresults: bench/results/{stamp}.json")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
