"""skopeo against Wharf: copies in and out with identical digests, inspect, list-tags, delete."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import requests

from conftest import inspect_raw, layout_manifest, require_testdata, run, skopeo


def test_copy_real_debian_image_oci_roundtrip(wharf, debian_image, tmp_path):
    descriptor, source_bytes = layout_manifest(debian_image)
    ref = f"docker://{wharf.host}/e2e/debian:bookworm"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", wharf.creds, f"oci:{debian_image}", ref)
    # The manifest arrives byte for byte (umoci's manifest has no mediaType; Wharf takes it from Content-Type).
    raw = inspect_raw(ref, wharf.creds)
    assert raw.encode() == source_bytes
    assert "mediaType" not in json.loads(raw)
    assert requests.get(f"{wharf.url}/v2/e2e/debian/manifests/bookworm", auth=wharf.auth).headers["Docker-Content-Digest"] == descriptor["digest"]
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", wharf.creds, ref).stdout)
    assert len(info["Layers"]) == 3
    assert info["Env"] is None or isinstance(info["Env"], list)

    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", wharf.creds, ref, f"oci:{out}:copy")
    back_descriptor, back_bytes = layout_manifest(f"{out}:copy")
    assert back_descriptor["digest"] == descriptor["digest"]
    assert back_bytes == source_bytes
    for layer in json.loads(back_bytes)["layers"]:
        algorithm, encoded = layer["digest"].split(":")
        blob = out / "blobs" / algorithm / encoded
        assert blob.stat().st_size == layer["size"]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == encoded


def test_copy_as_docker_schema2(wharf, small_image, tmp_path):
    ref = f"docker://{wharf.host}/e2e/small:v2s2"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", wharf.creds, "--format", "v2s2", f"oci:{small_image}", ref)
    raw = inspect_raw(ref, wharf.creds)
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    response = requests.get(f"{wharf.url}/v2/e2e/small/manifests/v2s2", headers={"Accept": manifest["mediaType"]}, auth=wharf.auth)
    assert response.headers["Content-Type"] == manifest["mediaType"]
    assert response.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    # Out again, unchanged.
    skopeo("copy", "--src-tls-verify=false", "--src-creds", wharf.creds, ref, f"dir:{tmp_path / 'dir'}")
    assert (tmp_path / "dir" / "manifest.json").read_text() == raw


def test_copy_docker_archive_of_real_alpine(wharf, tmp_path):
    archive = tmp_path / "alpine-310.tar"
    with open(archive, "wb") as f:
        subprocess.run(["gunzip", "-c", require_testdata("images", "alpine-310.tar.gz")], stdout=f, check=True)
    ref = f"docker://{wharf.host}/library/alpine:3.10"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", wharf.creds, f"docker-archive:{archive}", ref)
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", wharf.creds, ref).stdout)
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", wharf.creds, ref, f"docker-archive:{tmp_path / 'back.tar'}:alpine:back")
    # The image config (whose digest is the image id) is identical at every step.
    original = skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}").stdout
    stored = skopeo("inspect", "--config", "--raw", "--tls-verify=false", "--creds", wharf.creds, ref).stdout
    back = skopeo("inspect", "--config", "--raw", f"docker-archive:{tmp_path / 'back.tar'}").stdout
    assert original == stored == back


def test_multi_arch_index_with_all(wharf, small_image, tmp_path):
    # Build an OCI index of two platform images in a layout.
    layout = tmp_path / "multi"
    skopeo("copy", f"oci:{small_image}", f"oci:{layout}:amd64")
    variant = tmp_path / "variant"
    (variant / "etc").mkdir(parents=True)
    (variant / "etc" / "arch").write_text("arm64\n")
    run(["umoci", "new", "--image", f"{layout}:arm64"])
    run(["umoci", "insert", "--image", f"{layout}:arm64", variant, "/"])
    index = json.loads((layout / "index.json").read_text())
    children = []
    for descriptor in index["manifests"]:
        tag = descriptor["annotations"]["org.opencontainers.image.ref.name"]
        children.append({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": descriptor["digest"], "size": descriptor["size"],
            "platform": {"architecture": tag, "os": "linux"},
        })
    image_index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}).encode()
    index_digest = hashlib.sha256(image_index).hexdigest()
    (layout / "blobs" / "sha256" / index_digest).write_bytes(image_index)
    index["manifests"].append({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{index_digest}",
        "size": len(image_index), "annotations": {"org.opencontainers.image.ref.name": "multi"},
    })
    (layout / "index.json").write_text(json.dumps(index))

    ref = f"docker://{wharf.host}/e2e/multi:latest"
    skopeo("copy", "--all", "--dest-tls-verify=false", "--dest-creds", wharf.creds, f"oci:{layout}:multi", ref)
    raw = inspect_raw(ref, wharf.creds)
    assert raw.encode() == image_index
    for child in children:
        child_ref = f"docker://{wharf.host}/e2e/multi@{child['digest']}"
        assert hashlib.sha256(inspect_raw(child_ref, wharf.creds).encode()).hexdigest() == child["digest"].split(":")[1]

    out = tmp_path / "out"
    skopeo("copy", "--all", "--src-tls-verify=false", "--src-creds", wharf.creds, ref, f"oci:{out}:multi")
    back, back_bytes = layout_manifest(f"{out}:multi")
    assert back["digest"] == f"sha256:{index_digest}"
    for child in children:
        algorithm, encoded = child["digest"].split(":")
        assert (out / "blobs" / algorithm / encoded).exists()


def test_list_tags_and_delete(wharf, small_image):
    for tag in ["1.0", "1.1", "latest"]:
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", wharf.creds, f"oci:{small_image}", f"docker://{wharf.host}/e2e/tags:{tag}")
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", "--creds", wharf.creds, f"docker://{wharf.host}/e2e/tags").stdout)["Tags"]
    assert tags == ["1.0", "1.1", "latest"]
    # skopeo deletes by digest: every tag of that manifest goes.
    skopeo("delete", "--tls-verify=false", "--creds", wharf.creds, f"docker://{wharf.host}/e2e/tags:latest")
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", "--creds", wharf.creds, f"docker://{wharf.host}/e2e/tags").stdout)["Tags"]
    assert tags == []
    result = skopeo("inspect", "--tls-verify=false", "--creds", wharf.creds, f"docker://{wharf.host}/e2e/tags:1.0", check=False)
    assert result.returncode != 0
    assert "manifest unknown" in result.stderr.lower()
    catalog = requests.get(f"{wharf.url}/v2/_catalog", auth=wharf.auth).json()["repositories"]
    assert "e2e/tags" in catalog
