"""oras (PyPI oras-py): artifacts with custom media types, and referrers through `subject`."""

import hashlib
import os

import oras.client
import oras.oci
import requests


def client(wharf):
    c = oras.client.OrasClient(hostname=wharf.host, insecure=True)
    c.login(username=wharf.auth[0], password=wharf.auth[1], hostname=wharf.host, tls_verify=False)
    return c


def test_push_and_pull_artifact(wharf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.bin").write_bytes(os.urandom(2_000_000))
    (tmp_path / "README.md").write_text("# an artifact\n")
    c = client(wharf)
    c.push(target=f"{wharf.host}/e2e/artifact:v1", files=["model.bin:application/vnd.example.model", "README.md:text/markdown"])
    out = tmp_path / "out"
    paths = c.pull(target=f"{wharf.host}/e2e/artifact:v1", outdir=str(out))
    assert sorted(os.path.basename(p) for p in paths) == ["README.md", "model.bin"]
    assert (out / "model.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()
    manifest = requests.get(f"{wharf.url}/v2/e2e/artifact/manifests/v1", auth=wharf.auth).json()
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.example.model", "text/markdown"]


def test_chunked_push(wharf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.bin").write_bytes(os.urandom(3_500_000))
    c = client(wharf)
    c.push(target=f"{wharf.host}/e2e/chunked:v1", files=["big.bin"], do_chunked=True, chunk_size=1_000_000)
    manifest = requests.get(f"{wharf.url}/v2/e2e/chunked/manifests/v1", auth=wharf.auth).json()
    layer = manifest["layers"][0]
    blob = requests.get(f"{wharf.url}/v2/e2e/chunked/blobs/{layer['digest']}", auth=wharf.auth).content
    assert blob == (tmp_path / "big.bin").read_bytes()


def test_referrer_with_subject(wharf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.txt").write_text("the application\n")
    (tmp_path / "sbom.json").write_text('{"spdxVersion":"SPDX-2.3"}')
    c = client(wharf)
    c.push(target=f"{wharf.host}/e2e/withrefs:v1", files=["app.txt"])
    subject_response = requests.get(
        f"{wharf.url}/v2/e2e/withrefs/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    , auth=wharf.auth)
    subject = oras.oci.Subject(
        mediaType=subject_response.headers["Content-Type"],
        digest=subject_response.headers["Docker-Content-Digest"],
        size=len(subject_response.content),
    )
    response = c.push(
        target=f"{wharf.host}/e2e/withrefs:sbom", files=["sbom.json:application/spdx+json"],
        subject=subject, manifest_annotations={"org.example.kind": "sbom"},
    )
    assert response.headers.get("OCI-Subject") == subject.digest

    referrers = requests.get(f"{wharf.url}/v2/e2e/withrefs/referrers/{subject.digest}", auth=wharf.auth)
    assert referrers.status_code == 200
    assert referrers.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    entries = referrers.json()["manifests"]
    assert len(entries) == 1
    sbom_manifest = requests.get(f"{wharf.url}/v2/e2e/withrefs/manifests/sbom", auth=wharf.auth)
    assert entries[0]["digest"] == "sha256:" + hashlib.sha256(sbom_manifest.content).hexdigest()
    assert entries[0]["annotations"]["org.example.kind"] == "sbom"
    # oras-py sets no artifactType, so the config's media type stands in, as the spec says.
    assert entries[0]["artifactType"] == sbom_manifest.json()["config"]["mediaType"]
