"""A full disk (issue 23, defect 9): the real binary on a 64 MiB tmpfs. Pushes get a clear error
naming the cause; reads, deletes and garbage collection keep working, and free the space."""

import hashlib
import json
import os
import subprocess

import pytest
import requests

from conftest import Wharf, run

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full test mounts a tmpfs and needs root, which CI has")
        pytest.skip("needs root to mount a tmpfs")
    run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)])
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def push_blob(wharf, repository, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = requests.post(f"{wharf.url}/v2/{repository}/blobs/uploads/", params={"digest": digest}, data=data, auth=wharf.auth, timeout=60)
    return digest, response


def test_full_disk_refuses_pushes_clearly_and_still_deletes_and_collects(wharf_bin, small_disk, tmp_path):
    config = tmp_path / "wharf.yml"
    config.write_text("storage:\n  minimumFreeMiB: 8\n  reserveMiB: 8\ngc:\n  enabled: false\n")
    wharf = Wharf(wharf_bin, small_disk / "data", extra_args=["--config", str(config)]).start()
    try:
        # An image to delete later.
        config_digest, response = push_blob(wharf, "full/app", b'{"architecture":"amd64","os":"linux"}')
        assert response.status_code == 201
        layer_digest, response = push_blob(wharf, "full/app", os.urandom(4 << 20))
        assert response.status_code == 201
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 37},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": 4 << 20}]})
        put = requests.put(f"{wharf.url}/v2/full/app/manifests/v1", data=manifest, headers={"Content-Type": OCI_MANIFEST}, auth=wharf.auth, timeout=60)
        assert put.status_code == 201, put.text

        # Push until Wharf refuses: it stops before the disk is full, naming the cause.
        refused = None
        for _ in range(40):
            _, response = push_blob(wharf, "full/filler", os.urandom(4 << 20))
            if response.status_code != 201:
                refused = response
                break
        assert refused is not None, "the 64 MiB disk never filled"
        assert refused.status_code == 507, refused.text
        error = refused.json()["errors"][0]
        assert error["code"] == "UNKNOWN" and "storage" in error["message"] and "full" in error["message"], error

        # Something else takes the rest of the disk.
        filler = small_disk / "other-program"
        run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"], check=False)
        assert run(["df", "--output=avail", str(small_disk)]).stdout.split()[-1] == "0"

        # Writes fail with the same clear answer, the management API included.
        _, response = push_blob(wharf, "full/filler", b"x" * 1000)
        assert response.status_code == 507
        created = wharf.api("POST", "/users", json={"name": "newcomer", "password": "newcomer-password"})
        assert created.status_code in (507, 201), created.text  # the user row may fit in a free page
        # Reads work.
        assert requests.get(f"{wharf.url}/v2/full/app/manifests/v1", auth=wharf.auth, headers={"Accept": OCI_MANIFEST}, timeout=30).status_code == 200
        # Deletes work (the reserve is released for the database), and so does garbage collection.
        deleted = requests.delete(f"{wharf.url}/v2/full/app/manifests/v1", auth=wharf.auth, timeout=30)
        assert deleted.status_code == 202, deleted.text
        assert "released the reserved space" in wharf.log_text()
        # The collection runs on the full disk too: no manifest needs the filler blobs.
        collected = wharf.api("POST", "/gc", params={"graceSeconds": "0"})
        assert collected.status_code == 200, collected.text
        assert collected.json()["deletedBlobs"] >= 3
        filler.unlink()
        # And the registry takes pushes again.
        _, response = push_blob(wharf, "full/app", os.urandom(1 << 20))
        assert response.status_code == 201, response.text
    finally:
        assert wharf.stop() == 0, wharf.log_text()
