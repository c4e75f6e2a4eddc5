"""podman and buildah (vfs storage, private folders) pushing to and pulling from Wharf."""

import json

import pytest
import requests

from conftest import inspect_raw, run, skopeo


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    base = tmp_path_factory.mktemp("containers")
    return ["--storage-driver", "vfs", "--root", str(base / "root"), "--runroot", str(base / "run")]


def buildah(storage, *args, **kwargs):
    return run(["buildah", *storage, *args], **kwargs)


def podman(storage, *args, **kwargs):
    return run(["podman", *storage, "--events-backend", "file", "--cgroup-manager", "cgroupfs", *args], **kwargs)


def build_scratch_image(storage, tmp_path, name, content):
    (tmp_path / f"{name}.txt").write_text(content)
    container = buildah(storage, "from", "scratch").stdout.strip()
    buildah(storage, "copy", container, str(tmp_path / f"{name}.txt"), f"/{name}.txt")
    buildah(storage, "config", "--label", f"built-by=wharf-e2e-{name}", container)
    buildah(storage, "commit", "--format", "oci", container, f"localhost/{name}:latest")
    buildah(storage, "rm", container)


def test_podman_push_and_pull(wharf, storage, tmp_path):
    build_scratch_image(storage, tmp_path, "podman-app", "pushed by podman\n")
    # A wrong password is refused; the right one logs in.
    wrong = podman(storage, "login", "--tls-verify=false", "-u", "admin", "-p", "not-the-password", wharf.host, check=False)
    assert wrong.returncode != 0 and "invalid username/password" in wrong.stderr.lower()
    podman(storage, "login", "--tls-verify=false", "-u", wharf.auth[0], "-p", wharf.auth[1], wharf.host)
    target = f"{wharf.host}/e2e/podman-app:1"
    podman(storage, "push", "--tls-verify=false", "localhost/podman-app:latest", f"docker://{target}")
    podman(storage, "rmi", "-f", "localhost/podman-app:latest")
    podman(storage, "pull", "--tls-verify=false", target)
    inspected = json.loads(podman(storage, "image", "inspect", target).stdout)[0]
    assert inspected["Labels"]["built-by"] == "wharf-e2e-podman-app"
    # The digest podman reports is the manifest Wharf serves.
    served = requests.get(f"{wharf.url}/v2/e2e/podman-app/manifests/1", headers={"Accept": inspected["ManifestType"]}, auth=wharf.auth)
    assert inspected["Digest"] == served.headers["Docker-Content-Digest"]


def test_buildah_push(wharf, storage, tmp_path):
    build_scratch_image(storage, tmp_path, "buildah-app", "pushed by buildah\n")
    ref = f"docker://{wharf.host}/e2e/buildah-app:1"
    buildah(storage, "push", "--tls-verify=false", "--creds", wharf.creds, "localhost/buildah-app:latest", ref)
    manifest = json.loads(inspect_raw(ref, wharf.creds))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert len(manifest["layers"]) == 1


def test_buildah_multi_arch_manifest_list(wharf, storage, tmp_path):
    build_scratch_image(storage, tmp_path, "multi-a", "amd64\n")
    build_scratch_image(storage, tmp_path, "multi-b", "arm64\n")
    buildah(storage, "manifest", "create", "localhost/multi-list")
    buildah(storage, "manifest", "add", "--arch", "amd64", "localhost/multi-list", "localhost/multi-a:latest")
    buildah(storage, "manifest", "add", "--arch", "arm64", "localhost/multi-list", "localhost/multi-b:latest")
    ref = f"docker://{wharf.host}/e2e/multi-list:latest"
    buildah(storage, "manifest", "push", "--all", "--format", "oci", "--tls-verify=false", "--creds", wharf.creds, "localhost/multi-list", ref)
    index = json.loads(inspect_raw(ref, wharf.creds))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    for child in index["manifests"]:
        skopeo("inspect", "--raw", "--tls-verify=false", "--creds", wharf.creds, f"docker://{wharf.host}/e2e/multi-list@{child['digest']}")
