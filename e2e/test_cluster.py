"""Three `wharf serve` nodes behind nginx, sharing one PostgreSQL and one S3 bucket: clients push and
pull through the balancer, sessions move between nodes, a node dies mid-push, scheduled work runs on
one node at a time."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import types
from pathlib import Path

import pytest
import requests

from conftest import Wharf, free_port, layout_manifest, push_config_image, run, skopeo

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Balancer:
    """Debian's nginx as the load balancer: round robin, uploads streamed (no request buffering)."""

    def __init__(self, folder, ports):
        self.folder = folder
        self.port = free_port()
        folder.mkdir()
        servers = "\n".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in ports)
        temp = " ".join(f"{kind}_temp_path {folder}/{kind};" for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
        (folder / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 2;
error_log {folder}/error.log warn;
pid {folder}/nginx.pid;
events {{ worker_connections 512; }}
http {{
  log_format upstream '$upstream_addr $status "$request"';
  access_log {folder}/access.log upstream;
  {temp}
  upstream wharf {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{self.port};
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    location / {{
      proxy_pass http://wharf;
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_502;
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
        self.process = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=open(folder / "stderr.log", "wb"))
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/v2/", timeout=2)
                break
            except requests.RequestException:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("nginx did not start: " + (folder / "stderr.log").read_text() + (folder / "error.log").read_text())
                time.sleep(0.1)

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"http://{self.host}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)

    def nodes_used(self):
        """Upstream addresses in the access log (which node answered each request)."""
        return {line.split()[0] for line in (self.folder / "access.log").read_text().splitlines() if line}


@pytest.fixture
def cluster(wharf_bin, tmp_path, postgres_url, s3):
    config = tmp_path / "node.yml"
    # A cache lifetime of an hour: a node sees another's change only because it is told (NOTIFY).
    config.write_text(
        f"database:\n  url: {postgres_url}\n"
        "storage:\n  s3:\n"
        f"    bucket: {s3['bucket']}\n    endpoint: {s3['endpoint']}\n    pathStyle: true\n    prefix: cluster\n"
        f"    accessKeyId: {s3['key']}\n    secretAccessKeyFile: {s3['secret_file']}\n    partSizeMiB: 5\n"
        "registry:\n  cacheTTLSeconds: 3600\n"
        "gc:\n  graceSeconds: 10\n  intervalSeconds: 1\n"  # grace: pushes in flight keep their blobs
        "lifecycle:\n  intervalSeconds: 1\n"
        f"secrets:\n  masterKeyFile: {tmp_path / 'master.key'}\n")
    nodes = [Wharf(wharf_bin, tmp_path / f"node{i}", extra_args=["--config", str(config)]).start() for i in range(3)]
    balancer = Balancer(tmp_path / "nginx", [node.port for node in nodes])
    yield nodes, balancer, config
    balancer.stop()
    for node in nodes:
        code = node.stop()
        assert code in (0, None), node.log_text()


def cluster_status(node):
    return requests.get(f"{node.url}/api/v1/cluster", auth=node.auth, timeout=30).json()


def lease_holder(node, name):
    return next((lease["holder"] for lease in cluster_status(node)["leases"] if lease["name"] == name), None)


def test_three_nodes_behind_a_balancer(wharf_bin, tmp_path, cluster, small_image, s3, docker):
    nodes, balancer, config = cluster
    creds = nodes[0].creds

    # skopeo and podman push and pull through the balancer; the requests spread over all three nodes.
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{small_image}", f"docker://{balancer.host}/lb/app:1")
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, f"docker://{balancer.host}/lb/app:1", f"oci:{tmp_path / 'pulled'}:x")
    assert json.loads(layout_manifest(f"{tmp_path / 'pulled'}:x")[1])["layers"] == json.loads(layout_manifest(small_image)[1])["layers"]
    short = Path(tempfile.mkdtemp(prefix="wpc"))  # podman refuses a run root longer than 50 characters
    storage = ["--storage-driver", "vfs", "--root", str(short / "root"), "--runroot", str(short / "run")]
    podman = ["podman", *storage, "--events-backend", "file", "--cgroup-manager", "cgroupfs"]
    run([*podman, "pull", f"oci:{small_image}"])
    image_id = run([*podman, "images", "-q"]).stdout.split()[0]
    run([*podman, "push", "--tls-verify=false", "--creds", creds, image_id, f"docker://{balancer.host}/lb/podman:1"])
    run([*podman, "rmi", "-af"])
    run([*podman, "pull", "--tls-verify=false", "--creds", creds, f"{balancer.host}/lb/podman:1"])
    shutil.rmtree(short, ignore_errors=True)
    # And the Docker engine: log in through the balancer (the token realm names it), pull what
    # skopeo pushed, push it under another name, drop it locally and pull it back.
    user, password = nodes[0].auth
    run(["docker", "login", "-u", user, "--password-stdin", balancer.host], env=docker, input=password + "\n")
    run(["docker", "pull", f"{balancer.host}/lb/app:1"], env=docker)
    run(["docker", "tag", f"{balancer.host}/lb/app:1", f"{balancer.host}/lb/docker:1"], env=docker)
    run(["docker", "push", f"{balancer.host}/lb/docker:1"], env=docker)
    run(["docker", "rmi", f"{balancer.host}/lb/app:1", f"{balancer.host}/lb/docker:1"], env=docker)
    run(["docker", "pull", f"{balancer.host}/lb/docker:1"], env=docker)
    assert {node.host for node in nodes} <= balancer.nodes_used(), balancer.nodes_used()

    # A chunked upload whose requests land on different nodes completes: session in the database,
    # bytes in the bucket, hash state rebuilt by whichever node gets the next request.
    blob = os.urandom(11 * 1024 * 1024 + 3)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    location = requests.post(f"{nodes[0].url}/v2/lb/chunked/blobs/uploads/", auth=nodes[0].auth).headers["Location"]
    cuts = [0, 4 * 1024 * 1024, 8 * 1024 * 1024 + 7, len(blob)]
    for node, start, end in [(nodes[1], cuts[0], cuts[1]), (nodes[2], cuts[1], cuts[2])]:
        response = requests.patch(node.url + location, data=blob[start:end], auth=node.auth,
                                  headers={"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"})
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
    response = requests.put(nodes[0].url + location, params={"digest": digest}, data=blob[cuts[2]:], auth=nodes[0].auth,
                            headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    assert hashlib.sha256(requests.get(f"{balancer.url}/v2/lb/chunked/blobs/{digest}", auth=nodes[0].auth).content).hexdigest() == digest[7:]

    # A tag moved on one node is served by the others at once (their caches would keep it for an hour).
    first = push_config_image(nodes[0], "lb/moving", "latest", "first")
    for node in nodes:
        assert requests.get(f"{node.url}/v2/lb/moving/manifests/latest", auth=node.auth,
                            headers={"Accept": OCI_MANIFEST}).headers["Docker-Content-Digest"] == first.digest
    second = push_config_image(nodes[1], "lb/moving", "latest", "second")
    deadline = time.monotonic() + 5
    seen = {}
    while time.monotonic() < deadline and any(seen.get(node.port) != second.digest for node in nodes):
        for node in nodes:
            seen[node.port] = requests.get(f"{node.url}/v2/lb/moving/manifests/latest", auth=node.auth,
                                           headers={"Accept": OCI_MANIFEST}).headers["Docker-Content-Digest"]
        time.sleep(0.02)
    assert all(digest == second.digest for digest in seen.values()), seen

    # Scheduled work has one holder, the same on every node; garbage collection runs there only.
    statuses = [cluster_status(node) for node in nodes]
    assert len({status["node"] for status in statuses}) == 3
    assert all(status["database"] == "postgres" and status["storage"] == "s3" for status in statuses)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (lease_holder(nodes[0], "garbage-collection") is None or lease_holder(nodes[0], "lifecycle") is None):
        time.sleep(0.2)
    gc_holder = lease_holder(nodes[0], "garbage-collection")
    assert gc_holder in {status["node"] for status in statuses}
    assert all(lease_holder(node, "garbage-collection") == gc_holder for node in nodes)
    # Give the collector something to do: a deleted image's blobs.
    doomed = push_config_image(nodes[2], "lb/doomed", "x", "doomed")
    assert requests.delete(f"{nodes[2].url}/v2/lb/doomed/manifests/{doomed.digest}", auth=nodes[2].auth).status_code == 202
    deadline = time.monotonic() + 60  # after the 10 s grace
    runs = []
    while time.monotonic() < deadline:
        runs = [run for run in requests.get(f"{balancer.url}/api/v1/gc", auth=nodes[0].auth).json()["recent"] if run["trigger"] == "continuous"]
        if any(run["deletedBlobs"] > 0 for run in runs):
            break
        time.sleep(0.5)
    assert runs and any(run["deletedBlobs"] > 0 for run in runs), runs
    assert {run["node"] for run in runs} == {gc_holder}, runs

    # kill -9 of a node in the middle of pushes through the balancer: clients retry, no acknowledged
    # push is lost, and the scheduled work moves to a surviving node.
    acknowledged, failures, stop = {}, [], threading.Event()
    through = types.SimpleNamespace(url=balancer.url, auth=nodes[0].auth)

    def pusher(worker):
        count = 0
        while not stop.is_set() and count < 40:
            tag = f"w{worker}-{count}"
            for _attempt in range(5):
                try:
                    acknowledged[tag] = push_config_image(through, "lb/killed", tag, f"{worker}-{count}").digest
                    break
                except (AssertionError, requests.RequestException, KeyError):
                    time.sleep(0.2)
            else:
                failures.append(tag)
            count += 1

    threads = [threading.Thread(target=pusher, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    holder_node = next(node for node, status in zip(nodes, statuses) if status["node"] == gc_holder)
    holder_node.stop(signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=300)
    stop.set()
    assert not failures, failures
    assert len(acknowledged) >= 100, len(acknowledged)
    survivors = [node for node in nodes if node.process is not None]
    for tag, digest in acknowledged.items():
        response = requests.get(f"{balancer.url}/v2/lb/killed/manifests/{tag}", auth=nodes[0].auth, headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 200 and response.headers["Docker-Content-Digest"] == digest, tag
    deadline = time.monotonic() + 60  # the dead node's lease expires after 30 s
    while time.monotonic() < deadline and lease_holder(survivors[0], "garbage-collection") in (None, gc_holder):
        time.sleep(0.5)
    new_holder = lease_holder(survivors[0], "garbage-collection")
    assert new_holder not in (None, gc_holder)
    assert new_holder in {cluster_status(node)["node"] for node in survivors}

    # A graceful stop hands the lease over at once.
    leaving = next(node for node in survivors if cluster_status(node)["node"] == new_holder)
    assert leaving.stop() == 0
    remaining = next(node for node in survivors if node is not leaving)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and lease_holder(remaining, "garbage-collection") in (None, new_holder):
        time.sleep(0.2)
    assert lease_holder(remaining, "garbage-collection") == cluster_status(remaining)["node"]

    # And the whole store is consistent.
    fsck = run([wharf_bin, "fsck", "--config", str(config), "--data", str(tmp_path / "fsck"), "--json"], check=False)
    result = json.loads(fsck.stdout)
    assert result["missingBlobs"] == [] and result["corruptBlobs"] == [] and result["danglingReferences"] == [], fsck.stdout
