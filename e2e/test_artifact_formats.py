"""helm, cosign and notation (issue 24): none of them is installable here, so these tests push and
pull exactly what they write, with the requests they send, and check Wharf answers as those
clients need. What is tested is precisely:

  - helm 3.8+ (`helm push` / `helm pull oci://`): the chart manifest with helm's config and chart
    media types, the optional provenance layer, the version tag (`+` written as `_`), a pull with
    helm's Accept header, and the chart listed under its repository's tags;
  - cosign 2 (tag scheme): `sha256-<hex>.sig` and `.att` manifests in the image's repository, with
    cosign's simplesigning and DSSE layers and their annotations, read back byte for byte; cosign's
    OCI 1.1 referrers mode (an artifact manifest whose subject is the image);
  - notation (Notary Project): a signature manifest with artifactType
    application/vnd.cncf.notary.signature, the JWS envelope layer and the subject, found through the
    referrers API filtered by artifactType, as `notation verify` does;
  - with a pull policy that refuses unscanned images, the image is refused but every signature,
    attestation and chart above is still served: verification must never be blocked by the gate.

Exact client runs stay untested until the clients can be installed here."""

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"

# helm's media types (helm.sh/helm/v3/pkg/registry/constants.go).
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_PROVENANCE = "application/vnd.cncf.helm.chart.provenance.v1.prov"
# helm pull's Accept header.
HELM_ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}"

COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
JWS = "application/jose+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(wharf, repository, data):
    """As the Go clients (oras-go, go-containerregistry) do: HEAD, then POST + PUT ?digest."""
    digest = sha256(data)
    head = requests.head(f"{wharf.url}/v2/{repository}/blobs/{digest}", auth=wharf.auth, timeout=30)
    if head.status_code == 200:
        return digest
    start = requests.post(f"{wharf.url}/v2/{repository}/blobs/uploads/", auth=wharf.auth, timeout=30)
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    url = f"{wharf.url}{location}" if location.startswith("/") else location
    put = requests.put(url, params={"digest": digest}, data=data, auth=wharf.auth, timeout=30,
                       headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201, put.text
    return digest


def push_manifest(wharf, repository, reference, manifest, media_type=OCI_MANIFEST):
    body = json.dumps(manifest, separators=(",", ":")).encode()
    response = requests.put(f"{wharf.url}/v2/{repository}/manifests/{reference}", data=body, auth=wharf.auth, timeout=30,
                            headers={"Content-Type": media_type})
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha256(body)
    return sha256(body), body, response


def descriptor(media_type, data, annotations=None):
    result = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    if annotations:
        result["annotations"] = annotations
    return result


def push_image(wharf, repository, tag):
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = gzip.compress(b"not really a tar, but a layer " + os.urandom(64))
    push_blob(wharf, repository, config)
    push_blob(wharf, repository, layer)
    return push_manifest(wharf, repository, tag, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)]})


def chart_tarball(name, version):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        content = f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode()
        info = tarfile.TarInfo(f"{name}/Chart.yaml")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def get(wharf, path, **kwargs):
    return requests.get(f"{wharf.url}/v2/{path}", auth=wharf.auth, timeout=30, **kwargs)


def push_chart(wharf, repository="charts/web", version="1.2.3+build.7"):
    chart = chart_tarball("web", version)
    config = json.dumps({"apiVersion": "v2", "name": "web", "version": version}).encode()
    provenance = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nname: web\n...\n"
    for blob in (config, chart, provenance):
        push_blob(wharf, repository, blob)
    tag = version.replace("+", "_")  # OCI tags cannot hold '+'; helm writes '_'
    manifest = {"schemaVersion": 2, "config": descriptor(HELM_CONFIG, config),
                "layers": [descriptor(HELM_CHART, chart), descriptor(HELM_PROVENANCE, provenance)],
                "annotations": {"org.opencontainers.image.title": "web", "org.opencontainers.image.version": version}}
    # helm (oras-go) sends the manifest without a mediaType field, with the Content-Type header.
    digest, body, _ = push_manifest(wharf, repository, tag, manifest)
    return repository, tag, digest, body, {sha256(b): b for b in (config, chart, provenance)}


def test_helm_chart_push_and_pull(wharf):
    repository, tag, digest, body, blobs = push_chart(wharf)
    pulled = get(wharf, f"{repository}/manifests/{tag}", headers={"Accept": HELM_ACCEPT})
    assert pulled.status_code == 200, pulled.text
    assert pulled.content == body and pulled.headers["Docker-Content-Digest"] == digest
    assert pulled.headers["Content-Type"] == OCI_MANIFEST
    for blob_digest, data in blobs.items():
        blob = get(wharf, f"{repository}/blobs/{blob_digest}")
        assert blob.status_code == 200 and blob.content == data
    assert tag in get(wharf, f"{repository}/tags/list").json()["tags"]


def test_cosign_tag_scheme_and_referrers(wharf):
    cosign_artifacts(wharf, "signed/app")


def cosign_artifacts(wharf, repository):
    """Pushes an image and what cosign writes for it, checks it reads back; returns the digests."""
    image_digest, _, _ = push_image(wharf, repository, "v1")
    hex_digest = image_digest.split(":", 1)[1]

    # cosign sign: a `sha256-<hex>.sig` image whose layers are simplesigning payloads.
    payload = json.dumps({"critical": {"identity": {"docker-reference": f"{wharf.host}/{repository}"},
                                       "image": {"docker-manifest-digest": image_digest},
                                       "type": "cosign container image signature"}, "optional": None}).encode()
    signature = base64.b64encode(os.urandom(71)).decode()
    config = json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]}}).encode()
    push_blob(wharf, repository, payload)
    push_blob(wharf, repository, config)
    sig_manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                    "layers": [descriptor(COSIGN_SIMPLESIGNING, payload, {
                        "dev.cosignproject.cosign/signature": signature,
                        "dev.sigstore.cosign/bundle": json.dumps({"SignedEntryTimestamp": "MEUCIQ", "Payload": {"logIndex": 1}}),
                    })]}
    sig_digest, sig_body, _ = push_manifest(wharf, repository, f"sha256-{hex_digest}.sig", sig_manifest)

    # cosign attest: `.att` with a DSSE envelope layer.
    envelope = json.dumps({"payloadType": "application/vnd.in-toto+json",
                           "payload": base64.b64encode(b'{"_type":"https://in-toto.io/Statement/v0.1"}').decode(),
                           "signatures": [{"keyid": "", "sig": signature}]}).encode()
    push_blob(wharf, repository, envelope)
    att_manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                    "layers": [descriptor(DSSE, envelope, {"predicateType": "https://slsa.dev/provenance/v0.2"})]}
    att_digest, att_body, _ = push_manifest(wharf, repository, f"sha256-{hex_digest}.att", att_manifest)

    # cosign verify: the signature tag is resolved and read back exactly.
    fetched = get(wharf, f"{repository}/manifests/sha256-{hex_digest}.sig", headers={"Accept": OCI_MANIFEST})
    assert fetched.status_code == 200 and fetched.content == sig_body
    layer = json.loads(fetched.content)["layers"][0]
    assert layer["annotations"]["dev.cosignproject.cosign/signature"] == signature
    assert get(wharf, f"{repository}/blobs/{layer['digest']}").content == payload
    assert get(wharf, f"{repository}/manifests/sha256-{hex_digest}.att", headers={"Accept": OCI_MANIFEST}).content == att_body

    # cosign --registry-referrers-mode=oci-1-1: an artifact whose subject is the image.
    push_blob(wharf, repository, b"{}")
    referrer = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": COSIGN_SIG_ARTIFACT,
                "config": {"mediaType": EMPTY, "digest": sha256(b"{}"), "size": 2},
                "layers": [descriptor(COSIGN_SIMPLESIGNING, payload, {"dev.cosignproject.cosign/signature": signature})],
                "subject": {"mediaType": OCI_MANIFEST, "digest": image_digest, "size": len(get(wharf, f"{repository}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content)}}
    body = json.dumps(referrer, separators=(",", ":")).encode()
    put = requests.put(f"{wharf.url}/v2/{repository}/manifests/{sha256(body)}", data=body, auth=wharf.auth, timeout=30,
                       headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    assert put.headers.get("OCI-Subject") == image_digest
    listed = get(wharf, f"{repository}/referrers/{image_digest}", params={"artifactType": COSIGN_SIG_ARTIFACT})
    assert listed.status_code == 200 and listed.headers["Content-Type"] == OCI_INDEX
    assert [m["digest"] for m in listed.json()["manifests"]] == [sha256(body)]
    return repository, image_digest, [sig_digest, att_digest, sha256(body)]


def test_notation_signature_through_referrers(wharf):
    notation_artifacts(wharf, "notary/app")


def notation_artifacts(wharf, repository):
    """Pushes an image and a notation signature for it, checks discovery; returns the digests."""
    image_digest, image_body, _ = push_image(wharf, repository, "v1")
    envelope = json.dumps({"payload": base64.urlsafe_b64encode(json.dumps({"targetArtifact": {
        "mediaType": OCI_MANIFEST, "digest": image_digest, "size": len(image_body)}}).encode()).decode().rstrip("="),
        "protected": "eyJhbGciOiJQUzI1NiJ9", "header": {"x5c": []}, "signature": "c2ln"}).encode()
    push_blob(wharf, repository, envelope)
    push_blob(wharf, repository, b"{}")
    signature = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": NOTARY_SIGNATURE,
                 "config": {"mediaType": EMPTY, "digest": sha256(b"{}"), "size": 2},
                 "layers": [descriptor(JWS, envelope)],
                 "subject": {"mediaType": OCI_MANIFEST, "digest": image_digest, "size": len(image_body)},
                 "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": json.dumps(["ab" * 32]),
                                 "org.opencontainers.image.created": "2026-12-07T00:00:00Z"}}
    body = json.dumps(signature, separators=(",", ":")).encode()
    # notation pushes by digest.
    put = requests.put(f"{wharf.url}/v2/{repository}/manifests/{sha256(body)}", data=body, auth=wharf.auth, timeout=30,
                       headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    assert put.headers.get("OCI-Subject") == image_digest

    listed = get(wharf, f"{repository}/referrers/{image_digest}", params={"artifactType": NOTARY_SIGNATURE})
    assert listed.status_code == 200, listed.text
    manifests = listed.json()["manifests"]
    assert len(manifests) == 1
    found = manifests[0]
    assert found["digest"] == sha256(body) and found["artifactType"] == NOTARY_SIGNATURE
    assert found["annotations"]["io.cncf.notary.x509chain.thumbprint#S256"] == json.dumps(["ab" * 32])
    fetched = get(wharf, f"{repository}/manifests/{sha256(body)}", headers={"Accept": OCI_MANIFEST})
    assert fetched.content == body
    assert get(wharf, f"{repository}/blobs/{sha256(envelope)}").content == envelope
    return repository, image_digest, [sha256(body)]


def test_signatures_attestations_and_charts_pass_a_pull_gate_that_refuses_the_image(wharf):
    """A namespace that refuses unscanned images still serves what verifies them."""
    namespaces = {"gatedsigned", "gatednotary", "gatedcharts"}
    cosign_repository, cosign_image, cosign_refs = cosign_artifacts(wharf, "gatedsigned/app")
    notary_repository, notary_image, notary_refs = notation_artifacts(wharf, "gatednotary/app")
    chart_repository, chart_tag, _, _, _ = push_chart(wharf, repository="gatedcharts/web", version="2.0.0")
    try:
        for namespace in namespaces:
            response = wharf.api("PUT", f"/namespaces/{namespace}/pull-policy", json={"blockUnscanned": True})
            assert response.status_code == 200, response.text
        for repository, image in ((cosign_repository, cosign_image), (notary_repository, notary_image)):
            refused = get(wharf, f"{repository}/manifests/{image}", headers={"Accept": OCI_MANIFEST})
            assert refused.status_code == 403, f"the gate let an unscanned image through: {refused.status_code} {refused.text}"
        for repository, digests in ((cosign_repository, cosign_refs), (notary_repository, notary_refs)):
            for digest in digests:
                served = get(wharf, f"{repository}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
                assert served.status_code == 200, f"the pull gate refused a signature or attestation {digest}: {served.text}"
        chart = get(wharf, f"{chart_repository}/manifests/{chart_tag}", headers={"Accept": HELM_ACCEPT})
        assert chart.status_code == 200, f"the pull gate refused a helm chart: {chart.text}"
    finally:
        for namespace in namespaces:
            wharf.api("DELETE", f"/namespaces/{namespace}/pull-policy")
