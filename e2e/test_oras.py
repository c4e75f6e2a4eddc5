"""oras: the ORAS CLI (Go, Debian 13's package, what users run) for artifacts with custom media
types, referrers through `attach` and `discover`; the Python library (oras-py) for chunked uploads,
which the CLI does not make."""

import hashlib
import json
import os
from pathlib import Path

import oras.provider
import pytest
import requests

from conftest import run


@pytest.fixture(scope="module")
def oras_cli():
    binary = os.environ.get("ORAS_BIN")
    if not binary or not Path(binary).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("ORAS_BIN is not set or missing: scripts/test.sh installs the oras CLI (scripts/install-oras-cli.sh)")
        pytest.skip("no oras CLI (run through scripts/test.sh, or set ORAS_BIN)")
    return binary


def oras_run(binary, wharf, *args, cwd=None):
    """One oras command against the server, signed in as the administrator over plain HTTP."""
    credentials = ["--plain-http", "--username", wharf.auth[0], "--password", wharf.auth[1]]
    return run([binary, *args, *credentials], cwd=cwd, timeout=120)


def test_push_and_pull_artifact_with_the_cli(oras_cli, wharf, tmp_path):
    (tmp_path / "model.bin").write_bytes(os.urandom(2_000_000))
    (tmp_path / "README.md").write_text("# an artifact\n")
    oras_run(oras_cli, wharf, "push", f"{wharf.host}/e2e/artifact:v1", "--artifact-type", "application/vnd.example.model.v1",
         "model.bin:application/vnd.example.model", "README.md:text/markdown", cwd=tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    oras_run(oras_cli, wharf, "pull", f"{wharf.host}/e2e/artifact:v1", cwd=out)
    assert (out / "model.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()
    assert (out / "README.md").read_text() == "# an artifact\n"
    manifest = requests.get(f"{wharf.url}/v2/e2e/artifact/manifests/v1", auth=wharf.auth, timeout=30,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert manifest["artifactType"] == "application/vnd.example.model.v1"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.example.model", "text/markdown"]
    # The CLI reads it back the same way.
    fetched = json.loads(oras_run(oras_cli, wharf, "manifest", "fetch", f"{wharf.host}/e2e/artifact:v1").stdout)
    assert fetched == manifest


def test_attach_and_discover_referrers_with_the_cli(oras_cli, wharf, tmp_path):
    (tmp_path / "app.txt").write_text("the application\n")
    (tmp_path / "sbom.json").write_text('{"spdxVersion":"SPDX-2.3"}')
    (tmp_path / "sig.bin").write_bytes(b"not really a signature")
    oras_run(oras_cli, wharf, "push", f"{wharf.host}/e2e/withrefs:v1", "app.txt", cwd=tmp_path)
    subject = requests.get(f"{wharf.url}/v2/e2e/withrefs/manifests/v1", auth=wharf.auth, timeout=30,
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    digest = subject.headers["Docker-Content-Digest"]
    # The referrers API, not the tag fallback: Wharf implements distribution-spec 1.1.
    for kind, file in (("application/spdx+json", "sbom.json:application/spdx+json"), ("application/vnd.example.signature", "sig.bin")):
        oras_run(oras_cli, wharf, "attach", "--artifact-type", kind, "--distribution-spec", "v1.1-referrers-api",
             "--annotation", "org.example.kind=" + kind.rsplit("/", 1)[1], f"{wharf.host}/e2e/withrefs:v1", file, cwd=tmp_path)

    discovered = json.loads(oras_run(oras_cli, wharf, "discover", "--format", "json", "--distribution-spec", "v1.1-referrers-api",
                                 f"{wharf.host}/e2e/withrefs:v1").stdout)
    entries = discovered["manifests"]
    assert sorted(entry["artifactType"] for entry in entries) == ["application/spdx+json", "application/vnd.example.signature"]
    filtered = json.loads(oras_run(oras_cli, wharf, "discover", "--format", "json", "--artifact-type", "application/spdx+json",
                               f"{wharf.host}/e2e/withrefs:v1").stdout)["manifests"]
    assert len(filtered) == 1 and filtered[0]["annotations"]["org.example.kind"] == "spdx+json"

    # The server's own answer agrees, digest for digest.
    referrers = requests.get(f"{wharf.url}/v2/e2e/withrefs/referrers/{digest}", auth=wharf.auth, timeout=30)
    assert referrers.status_code == 200
    assert referrers.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(e["digest"] for e in referrers.json()["manifests"]) == sorted(e["digest"] for e in entries)
    for entry in entries:
        body = requests.get(f"{wharf.url}/v2/e2e/withrefs/manifests/{entry['digest']}", auth=wharf.auth, timeout=30,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert entry["digest"] == "sha256:" + hashlib.sha256(body.content).hexdigest()
        assert body.json()["subject"]["digest"] == digest


def test_chunked_push_with_oras_py(wharf, tmp_path, monkeypatch):
    """oras-py sends PATCHes with Content-Range, which neither the CLI nor skopeo does. It signs
    in with Basic credentials on every request: its token handling refreshes a token only on 403,
    while registries answer a token lacking a scope with 401, as Distribution does."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.bin").write_bytes(os.urandom(3_500_000))
    registry = oras.provider.Registry(hostname=wharf.host, insecure=True, auth_backend="basic")
    registry.auth.set_basic_auth(wharf.auth[0], wharf.auth[1])
    registry.push(target=f"{wharf.host}/e2e/chunked:v1", files=["big.bin"], do_chunked=True, chunk_size=1_000_000)
    manifest = requests.get(f"{wharf.url}/v2/e2e/chunked/manifests/v1", auth=wharf.auth, timeout=30).json()
    layer = manifest["layers"][0]
    blob = requests.get(f"{wharf.url}/v2/e2e/chunked/blobs/{layer['digest']}", auth=wharf.auth, timeout=30).content
    assert blob == (tmp_path / "big.bin").read_bytes()
