"""The crash loop (issue 23): concurrent monolithic and chunked pushes, deletes and a collector
running every second, with `kill -9` at a random moment, over many cycles. Afterwards every
acknowledged, undeleted image is there byte for byte, nothing half-written is visible, and
`wharf fsck` is clean without --repair. CI runs WHARF_CRASH_CYCLES=6 (the default); the long run
(for example 100 cycles) is by hand."""

import hashlib
import json
import os
import random
import signal
import threading
import time

import requests

from conftest import ADMIN_PASSWORD, Wharf, run

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
AUTH = ("admin", ADMIN_PASSWORD)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(session, url, repository, data, chunked):
    digest = sha256(data)
    if not chunked:
        response = session.post(f"{url}/v2/{repository}/blobs/uploads/", params={"digest": digest}, data=data, timeout=30)
        return digest, response.status_code == 201
    start = session.post(f"{url}/v2/{repository}/blobs/uploads/", timeout=30)
    if start.status_code != 202:
        return digest, False
    location = start.headers["Location"]
    offset = 0
    for piece in (data[i:i + 65536] for i in range(0, len(data), 65536)):
        patch = session.patch(f"{url}{location}" if location.startswith("/") else location, data=piece, timeout=30,
                              headers={"Content-Range": f"{offset}-{offset + len(piece) - 1}", "Content-Type": "application/octet-stream"})
        if patch.status_code != 202:
            return digest, False
        location = patch.headers["Location"]
        offset += len(piece)
    put = session.put(f"{url}{location}" if location.startswith("/") else location, params={"digest": digest}, timeout=30)
    return digest, put.status_code == 201


def worker(url, number, stop, acknowledged, deleted, lock):
    session = requests.Session()
    session.auth = AUTH
    rng = random.Random(os.urandom(8))
    try:
        while not stop.is_set():
            repository = f"crash/repo{rng.randrange(3)}"
            tag = f"w{number}-{rng.randrange(1_000_000)}"
            if rng.random() < 0.2:
                with lock:
                    mine = [key for key in acknowledged if key[1].startswith(f"w{number}-") and key not in deleted]
                if mine:
                    key = rng.choice(mine)
                    # Counted as deleted before it is sent: a delete the kill cut off may or may
                    # not have committed, and either is right, so the image is no longer checked.
                    with lock:
                        deleted.add(key)
                    session.delete(f"{url}/v2/{key[0]}/manifests/{acknowledged[key]['digest']}", timeout=30)
                    continue
            layer = os.urandom(rng.randrange(1_000, 400_000))
            config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
            config_digest, ok1 = push_blob(session, url, repository, config, chunked=False)
            layer_digest, ok2 = push_blob(session, url, repository, layer, chunked=rng.random() < 0.5)
            if not (ok1 and ok2):
                continue
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
                                   "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}]}).encode()
            response = session.put(f"{url}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}, timeout=30)
            if response.status_code == 201:
                with lock:
                    acknowledged[(repository, tag)] = {"digest": sha256(manifest), "manifest": manifest,
                                                       "blobs": {config_digest: sha256(config), layer_digest: sha256(layer)}}
    except requests.RequestException:
        pass  # the server was killed under this request: it was never acknowledged


def verify(url, acknowledged, deleted):
    session = requests.Session()
    session.auth = AUTH
    for (repository, tag), image in acknowledged.items():
        if (repository, tag) in deleted:
            continue
        response = session.get(f"{url}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert response.status_code == 200, f"acknowledged {repository}:{tag} lost: {response.status_code} {response.text}"
        assert response.content == image["manifest"], f"{repository}:{tag} changed"
        for digest in image["blobs"]:
            blob = session.get(f"{url}/v2/{repository}/blobs/{digest}", timeout=60)
            assert blob.status_code == 200, f"blob {digest} of {repository}:{tag} lost"
            assert sha256(blob.content) == digest, f"blob {digest} of {repository}:{tag} corrupt"


def test_kill_9_in_a_loop_loses_no_acknowledged_push(wharf_bin, tmp_path):
    cycles = int(os.environ.get("WHARF_CRASH_CYCLES", "6"))
    config = tmp_path / "wharf.yml"
    config.write_text("gc:\n  graceSeconds: 5\n  intervalSeconds: 1\n")
    data = tmp_path / "data"
    acknowledged, deleted, lock = {}, set(), threading.Lock()
    rng = random.Random()
    for cycle in range(cycles):
        server = Wharf(wharf_bin, data, extra_args=["--config", str(config)]).start()
        verify(server.url, acknowledged, deleted)  # everything acknowledged before the last kill
        stop = threading.Event()
        threads = [threading.Thread(target=worker, args=(server.url, n, stop, acknowledged, deleted, lock)) for n in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.5, 3.0))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.process = None
        server.log.close()
    # A last start: every acknowledged push is there, and the collector cleans what the crashes left.
    server = Wharf(wharf_bin, data, extra_args=["--config", str(config)]).start()
    try:
        verify(server.url, acknowledged, deleted)
        assert len(acknowledged) >= cycles, f"the loop acknowledged only {len(acknowledged)} pushes"
        # Upload files the kills cut off belong to no session: the collector removes them once
        # they are older than the grace window (5 s here), as it does in its continuous passes.
        collect_after_grace(server.url)
        verify(server.url, acknowledged, deleted)
    finally:
        assert server.stop() == 0, server.log_text()
    report = run([wharf_bin, "fsck", "--data", str(data), "--json"], check=False)
    assert report.returncode == 0, f"fsck after {cycles} crashes is not clean:\n{report.stdout}\n{report.stderr}"


def collect_after_grace(url, grace_seconds=5):
    """Waits out the collector's grace window, then runs a full collection (asking again while a
    continuous pass holds it: 409) and checks it succeeded."""
    time.sleep(grace_seconds + 1)
    deadline = time.monotonic() + 60
    while True:
        collected = requests.post(f"{url}/api/v1/gc", auth=AUTH, timeout=120)
        if collected.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert collected.status_code == 200, collected.text
