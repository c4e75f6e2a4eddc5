"""Lifecycle policies and online garbage collection against the real binary."""

import hashlib
import json
import os
import random
import threading
import time
from pathlib import Path

import requests

from conftest import Wharf, run, skopeo

AUTH = ("admin", "e2e-admin-password")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(session, url, repository, data):
    digest = sha256(data)
    response = session.post(f"{url}/v2/{repository}/blobs/uploads/?digest={digest}", data=data)
    assert response.status_code == 201, response.text
    return digest


def push_image(session, url, repository, tag, layer, config=None):
    """Pushes config + layer + manifest. Returns (manifest digest, manifest bytes, {blob: size})."""
    config = config or json.dumps({"architecture": "amd64", "os": "linux", "tag": tag, "nonce": os.urandom(8).hex()}).encode()
    config_digest = push_blob(session, url, repository, config)
    layer_digest = push_blob(session, url, repository, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
    }).encode()
    response = session.put(f"{url}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST})
    return response, sha256(manifest), {config_digest: len(config), layer_digest: len(layer)}


def blobs_on_disk(data_dir):
    files = [p for p in (Path(data_dir) / "blobs").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_stress_push_pull_with_continuous_gc(wharf_bin, tmp_path):
    """Pushers and pullers race a collector running every second with no grace window."""
    config = tmp_path / "wharf.yml"
    config.write_text("gc:\n  graceSeconds: 0\n  intervalSeconds: 1\n")
    data = tmp_path / "data"
    server = Wharf(wharf_bin, data, extra_args=["--config", str(config)]).start()
    # A grace window this short is for tests: the server says what it risks.
    assert "gc.graceSeconds is short" in server.log_text()
    url = server.url
    deadline = time.monotonic() + 20
    pushed = {}  # (repository, tag) -> manifest digest, last successful push
    lock = threading.Lock()
    failures = []
    counts = {"pushes": 0, "retries": 0, "pulls": 0}

    def pusher(number):
        session = requests.Session()
        session.auth = AUTH
        rng = random.Random(number)
        while time.monotonic() < deadline:
            repository = f"stress/repo{rng.randrange(3)}"
            # Tags of its own: two clients moving one tag at once cannot tell which landed last
            # (the server commits in one order, the answers may arrive in the other).
            tag = f"p{number}-t{rng.randrange(6)}"
            layer = os.urandom(rng.randrange(1_000, 200_000))
            # With no grace, the collector may take freshly uploaded blobs before the manifest
            # arrives: the push is then refused (MANIFEST_BLOB_UNKNOWN) and simply retried.
            for _ in range(20):
                response, digest, _ = push_image(session, url, repository, tag, layer)
                if response.status_code == 201:
                    with lock:
                        pushed[(repository, tag)] = digest
                        counts["pushes"] += 1
                    break
                if response.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in response.text:
                    with lock:
                        counts["retries"] += 1
                    continue
                failures.append(f"push {repository}:{tag}: {response.status_code} {response.text}")
                return
            else:
                failures.append(f"push {repository}:{tag} kept failing")

    def puller(number):
        session = requests.Session()
        session.auth = AUTH
        rng = random.Random(1000 + number)
        while time.monotonic() < deadline:
            with lock:
                known = list(pushed.keys())
            if not known:
                time.sleep(0.05)
                continue
            repository, tag = rng.choice(known)
            response = session.get(f"{url}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            if response.status_code != 200:
                failures.append(f"pull {repository}:{tag}: {response.status_code}")
                continue
            manifest = response.json()
            if sha256(response.content) != response.headers["Docker-Content-Digest"]:
                failures.append(f"pull {repository}:{tag}: manifest digest mismatch")
            for blob in [manifest["config"]] + manifest["layers"]:
                # The manifest just read stays in the repository (untagged at worst), so its blobs must too.
                data = session.get(f"{url}/v2/{repository}/blobs/{blob['digest']}").content
                if sha256(data) != blob["digest"] or len(data) != blob["size"]:
                    failures.append(f"pull {repository}:{tag}: blob {blob['digest']} wrong or missing")
            with lock:
                counts["pulls"] += 1

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(4)] + [threading.Thread(target=puller, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, "\n".join(failures[:20])
    assert counts["pushes"] >= 10 and counts["pulls"] >= 10, counts

    # Every tag pulls, with the digest of its last push.
    session = requests.Session()
    session.auth = AUTH
    for (repository, tag), digest in pushed.items():
        response = session.get(f"{url}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 200 and response.headers["Docker-Content-Digest"] == digest
        for blob in [response.json()["config"]] + response.json()["layers"]:
            assert sha256(session.get(f"{url}/v2/{repository}/blobs/{blob['digest']}").content) == blob["digest"]

    # Untag nothing; delete the untagged manifests the races left, then collect everything collectable.
    # (The continuous collector runs every second: a manual run that meets one is told 409, and retries.)
    deadline = time.monotonic() + 60
    while (response := session.post(f"{url}/api/v1/gc?graceSeconds=0")).status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    assert response.json()["errors"] == []
    assert server.stop() == 0
    fsck = run([wharf_bin, "fsck", "--data", data, "--json"], check=False)
    result = json.loads(fsck.stdout)
    assert fsck.returncode == 0, fsck.stdout
    assert result["orphanFiles"] == [] and result["missingBlobs"] == [] and result["corruptBlobs"] == [] and result["danglingReferences"] == []
    # No orphan blob on disk: every file is recorded, and every recorded blob is referenced
    # (the collector keeps untagged manifests, so their blobs stay, referenced).
    files, _ = blobs_on_disk(data)
    assert files == result["checkedBlobs"]
    assert result["unlinkedBlobs"] == 0
    print(f"stress: {counts}")


def test_lifecycle_keep_five_of_thirty(wharf, tmp_path, wharf_bin):
    """Push 30 tagged images, keep the 5 newest by policy, collect: disk drops by exactly the expired bytes."""
    session = requests.Session()
    session.auth = wharf.auth
    url = wharf.url
    repository = "lifecycle/app"
    sizes = {}
    images = []
    for i in range(30):
        response, digest, blobs = push_image(session, url, repository, f"build-{i:02d}", os.urandom(50_000 + i * 1000))
        assert response.status_code == 201
        images.append((f"build-{i:02d}", digest, blobs))
        sizes.update(blobs)
        time.sleep(0.01)  # distinct push times: "newest" is well defined
    _, before = blobs_on_disk(wharf.data_dir)

    policy = {"rules": [{"rulePriority": 1, "description": "keep the five newest builds",
                         "selection": {"tagStatus": "tagged", "tagPrefixList": ["build-"], "countType": "imageCountMoreThan", "countNumber": 5},
                         "action": {"type": "expire"}}]}
    assert wharf.api("PUT", f"/repositories/{repository}/lifecycle-policy", json={"policy": json.dumps(policy)}).status_code == 200
    preview = wharf.api("POST", f"/repositories/{repository}/lifecycle-policy/preview").json()
    assert [p["tags"] for p in preview] == [[f"build-{i:02d}"] for i in range(25)]
    applied = wharf.api("POST", f"/repositories/{repository}/lifecycle-policy/apply").json()
    assert len(applied) == 25

    gc = run([wharf_bin, "gc", "--grace-seconds", "0"], env={"WHARF_SERVER": url, "WHARF_PASSWORD": wharf.auth[1]})
    assert "deleted 50 blobs" in gc.stdout, gc.stdout
    _, after = blobs_on_disk(wharf.data_dir)
    expected = sum(size for _, _, blobs in images[:25] for size in blobs.values())
    assert before - after == expected, (before, after, expected)

    for tag, digest, _ in images[25:]:
        # The five newest pull completely, and the registry serves exactly the bytes pushed.
        skopeo("copy", "--src-tls-verify=false", "--src-creds", wharf.creds, f"docker://{wharf.host}/{repository}:{tag}", f"oci:{tmp_path / tag}:x")
        raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", wharf.creds, f"docker://{wharf.host}/{repository}:{tag}").stdout
        assert sha256(raw.encode()) == digest
    gone = skopeo("inspect", "--tls-verify=false", "--creds", wharf.creds, f"docker://{wharf.host}/{repository}:build-00", check=False)
    assert gone.returncode != 0
    events = wharf.api("GET", "/audit", params={"action": "lifecycle.expire", "repository": repository, "limit": "100"}).json()
    assert len(events) == 25
