"""Power cuts (issue 24): the data folder lives on powercut_fs.py, a FUSE filesystem that keeps only
what was fsynced (a file's bytes after its fsync, a name after its folder's fsync) and forgets the
rest when it is unmounted. `kill -9` alone never tests this: the page cache survives a killed
process, and ext4's data=ordered mode persists more than POSIX promises.

After every cut, every acknowledged blob and manifest is there byte for byte, every acknowledged
chunk of an open upload session can be resumed, nothing half-written is visible, and `wharf fsck`
is clean. CI runs WHARF_POWER_CUT_CYCLES=3 random cuts; more by hand."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import ADMIN_PASSWORD, Wharf, run
from test_crash_loop import collect_after_grace, verify, worker

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
AUTH = ("admin", ADMIN_PASSWORD)
FILESYSTEM = Path(__file__).resolve().parent / "powercut_fs.py"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class PowerCutDisk:
    """powercut_fs.py mounted at `mountpoint`; `cut()` loses everything not synced."""

    def __init__(self, base):
        self.mountpoint = base / "disk"
        self.image = base / "durable.pickle"
        self.log = base / "powercut-fs.log"
        self.mountpoint.mkdir()
        self.process = None

    def mount(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(FILESYSTEM), str(self.mountpoint), str(self.image)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"powercut_fs did not mount:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def cut(self):
        """The power cut: unmounting saves only what was durable, and the next mount starts there."""
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(["umount", str(self.mountpoint)], capture_output=True, text=True)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot unmount the power-cut disk: {result.stderr}")
            time.sleep(0.1)
        self.process.wait(timeout=60)
        assert self.image.exists(), f"powercut_fs saved no image:\n{self.log.read_text(errors='replace')[-3000:]}"

    def close(self):
        if self.process is not None and self.process.poll() is None:
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the power-cut tests mount a FUSE filesystem and need root, which CI has")
        pytest.skip("needs root to mount a FUSE filesystem")
    disk = PowerCutDisk(tmp_path)
    disk.mount()
    yield disk
    disk.close()


def serve(wharf_bin, data, tmp_path, extra_args=()):
    """A server on the power-cut disk whose log is kept off it (a cut would take the log too)."""
    server = Wharf(wharf_bin, data, extra_args=extra_args)
    server.log_path = tmp_path / "server.log"
    return server.start()


def kill(server):
    """Power goes: the process stops where it is (nothing it had not synced is kept by the cut)."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)
    server.process = None
    server.log.close()


def location_url(server, response):
    location = response.headers["Location"]
    return f"{server.url}{location}" if location.startswith("/") else location


def test_a_fresh_install_keeps_what_it_acknowledged_right_before_the_cut(wharf_bin, disk, tmp_path):
    # A fresh install: the data folder, the database, the master key and the blob folders are all
    # created on the disk that will lose power.
    server = serve(wharf_bin, disk.mountpoint / "data", tmp_path)
    session = requests.Session()
    session.auth = AUTH
    repository = "power/app"

    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    response = session.post(f"{server.url}/v2/{repository}/blobs/uploads/", params={"digest": sha256(config)}, data=config, timeout=30)
    assert response.status_code == 201, response.text

    # A layer in two chunks, then the closing PUT.
    layer = os.urandom(300_000)
    start = session.post(f"{server.url}/v2/{repository}/blobs/uploads/", timeout=30)
    assert start.status_code == 202, start.text
    url = location_url(server, start)
    for offset in (0, 150_000):
        patch = session.patch(url, data=layer[offset:offset + 150_000], timeout=30,
                              headers={"Content-Range": f"{offset}-{offset + 149_999}", "Content-Type": "application/octet-stream"})
        assert patch.status_code == 202, patch.text
        url = location_url(server, patch)
    put = session.put(url, params={"digest": sha256(layer)}, timeout=30)
    assert put.status_code == 201, put.text

    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}]}).encode()
    response = session.put(f"{server.url}/v2/{repository}/manifests/v1", data=manifest, headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert response.status_code == 201, response.text

    # An upload session left open with one acknowledged chunk.
    pending = os.urandom(200_000)
    start = session.post(f"{server.url}/v2/{repository}/blobs/uploads/", timeout=30)
    assert start.status_code == 202, start.text
    patch = session.patch(location_url(server, start), data=pending[:120_000], timeout=30,
                          headers={"Content-Range": "0-119999", "Content-Type": "application/octet-stream"})
    assert patch.status_code == 202, patch.text
    resume_path = requests.utils.urlparse(location_url(server, patch))
    resume_path = resume_path.path + (f"?{resume_path.query}" if resume_path.query else "")

    kill(server)  # right after the last acknowledgement
    disk.cut()
    disk.mount()

    server = serve(wharf_bin, disk.mountpoint / "data", tmp_path)
    resume_url = server.url + resume_path  # the restarted server listens on another port
    try:
        got = session.get(f"{server.url}/v2/{repository}/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert got.status_code == 200, f"the acknowledged manifest is gone after the cut: {got.status_code} {got.text}"
        assert got.content == manifest
        for blob in (config, layer):
            got = session.get(f"{server.url}/v2/{repository}/blobs/{sha256(blob)}", timeout=30)
            assert got.status_code == 200, f"acknowledged blob {sha256(blob)} lost in the cut: {got.status_code} {got.text}"
            assert got.content == blob, f"blob {sha256(blob)} is corrupt after the cut"

        # The session survived with its acknowledged chunk, and the upload can be finished.
        status = session.get(resume_url, timeout=30)
        assert status.status_code == 204, f"an acknowledged upload session was lost in the cut: {status.status_code} {status.text}"
        assert status.headers["Range"] == "0-119999", status.headers
        rest = session.put(resume_url, params={"digest": sha256(pending)}, data=pending[120_000:], timeout=30,
                           headers={"Content-Type": "application/octet-stream"})
        assert rest.status_code == 201, rest.text
        assert session.get(f"{server.url}/v2/{repository}/blobs/{sha256(pending)}", timeout=30).content == pending
    finally:
        assert server.stop() == 0, server.log_text()
    report = run([wharf_bin, "fsck", "--data", str(disk.mountpoint / "data"), "--json"], check=False)
    assert report.returncode == 0, f"fsck after the cut is not clean:\n{report.stdout}\n{report.stderr}"


def test_power_cuts_at_random_moments_lose_no_acknowledged_push(wharf_bin, disk, tmp_path):
    """Concurrent monolithic and chunked pushes, deletes and a collector running every second;
    the power goes at a random moment, several times."""
    cycles = int(os.environ.get("WHARF_POWER_CUT_CYCLES", "3"))
    config = tmp_path / "wharf.yml"
    config.write_text("gc:\n  graceSeconds: 5\n  intervalSeconds: 1\n")
    data = disk.mountpoint / "data"
    acknowledged, deleted, lock = {}, set(), threading.Lock()
    rng = random.Random()
    for cycle in range(cycles):
        server = serve(wharf_bin, data, tmp_path, extra_args=["--config", str(config)])
        verify(server.url, acknowledged, deleted)  # everything acknowledged before the last cut
        stop = threading.Event()
        threads = [threading.Thread(target=worker, args=(server.url, n, stop, acknowledged, deleted, lock)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(1.0, 4.0))
        kill(server)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        disk.cut()
        disk.mount()
    server = serve(wharf_bin, data, tmp_path, extra_args=["--config", str(config)])
    try:
        verify(server.url, acknowledged, deleted)
        assert len(acknowledged) >= cycles, f"the loop acknowledged only {len(acknowledged)} pushes"
        # Upload files the cuts orphaned (their session row never committed) are removed by the
        # collector once older than the grace window (5 s here); fsck would list them otherwise.
        collect_after_grace(server.url)
        verify(server.url, acknowledged, deleted)
    finally:
        assert server.stop() == 0, server.log_text()
    report = run([wharf_bin, "fsck", "--data", str(data), "--json"], check=False)
    assert report.returncode == 0, f"fsck after {cycles} power cuts is not clean:\n{report.stdout}\n{report.stderr}"
