"""Signed-only pulls (issue 17) with cosign's key-based format, made by an independent signer written
here from cosign's specification (simple signing payload, ECDSA P-256 / Ed25519 with Python's
`cryptography`), attached by tag (`sha256-<hex>.sig`) and as an OCI 1.1 referrer, and judged on real
pulls by skopeo and boto3.

Debian's skopeo 1.9 and podman 4.3 cannot make these signatures: both stop with "Debian-local change:
sigstore disabled" when asked to `--sign-by-sigstore-private-key`, so no client here can sign."""

import base64
import json
import subprocess

import boto3
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from test_artifact_formats import descriptor, push_blob, push_image, push_manifest, sha256

COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key, payload):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return key.sign(payload)


def simple_signing(digest, reference):
    return json.dumps({"critical": {"identity": {"docker-reference": reference}, "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"}, "optional": {"creator": "test"}}).encode()


def attach(server, repository, image_digest, image_size, payload, signature, referrer=False):
    """What `cosign sign --key` writes: by tag, or with `--registry-referrers-mode=oci-1-1` as a referrer."""
    config = json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    push_blob(server, repository, config)
    push_blob(server, repository, payload)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                "layers": [descriptor(COSIGN_PAYLOAD, payload, {COSIGN_ANNOTATION: base64.b64encode(signature).decode()})]}
    if referrer:
        manifest["artifactType"] = COSIGN_SIG_ARTIFACT
        manifest["subject"] = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image_digest, "size": image_size}
        reference = sha256(json.dumps(manifest, separators=(",", ":")).encode())
    else:
        reference = image_digest.replace(":", "-") + ".sig"
    push_manifest(server, repository, reference, manifest)


def skopeo_pull(server, reference, tmp_path, creds=None):
    target = tmp_path / f"pulled-{reference.replace('/', '_').replace(':', '_')}"
    return subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", creds or server.creds,
                           f"docker://{server.host}/{reference}", f"oci:{target}:x"], capture_output=True, text=True, timeout=120)


def head(server, reference):
    repository, tag = reference.split(":")
    response = requests.head(f"{server.url}/v2/{repository}/manifests/{tag}", auth=server.auth, timeout=30,
                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    return response.headers["Docker-Content-Digest"], int(response.headers["Content-Length"])


def test_signed_only_pulls_with_cosign_signatures(wharf, small_image, tmp_path):
    server = wharf
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
                    f"oci:{small_image}", f"docker://{server.host}/signed/app:v1"], check=True, timeout=120)
    push_image(server, "signed/app", "v2")  # two more images with their own digests
    push_image(server, "signed/app", "v3")
    trusted, other_key = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()

    # Policies are checked: a key that is not one is refused; only namespace admins may set one.
    bad = server.api("PUT", "/namespaces/signed/signature-policy", json={"mode": "enforce", "keys": [{"name": "ci", "publicKey": "nope"}]})
    assert bad.status_code == 400 and "not a PEM public key" in bad.text
    assert server.api("POST", "/users", json={"name": "sigdev", "password": "sigdev-password-1"}).status_code == 201
    assert server.api("PUT", "/namespaces/signed/members/sigdev", json={"role": "developer"}).status_code == 204
    policy = {"mode": "enforce", "keys": [{"name": "ci", "publicKey": public_pem(trusted)}, {"name": "release", "publicKey": public_pem(other_key)}]}
    assert server.api("PUT", "/namespaces/signed/signature-policy", json=policy, auth=("sigdev", "sigdev-password-1")).status_code == 403
    assert server.api("PUT", "/namespaces/signed/signature-policy", json=policy).status_code == 200

    refused = skopeo_pull(server, "signed/app:v1", tmp_path)
    assert refused.returncode != 0 and "no cosign signature is attached" in refused.stderr, refused.stderr
    v1, v1_size = head(server, "signed/app:v1")
    v2, v2_size = head(server, "signed/app:v2")

    # A signature by a key outside the policy, then one by a trusted key for another image: refused, saying why.
    stranger = ec.generate_private_key(ec.SECP256R1())
    attach(server, "signed/app", v1, v1_size, simple_signing(v1, f"{server.host}/signed/app"), sign(stranger, simple_signing(v1, f"{server.host}/signed/app")))
    refused = skopeo_pull(server, "signed/app:v1", tmp_path)
    assert refused.returncode != 0 and "verifies with none of the policy's keys" in refused.stderr, refused.stderr
    attach(server, "signed/app", v1, v1_size, simple_signing(v2, "x"), sign(trusted, simple_signing(v2, "x")))
    refused = skopeo_pull(server, "signed/app:v1", tmp_path)
    assert refused.returncode != 0 and f"is for {v2}, not this image" in refused.stderr, refused.stderr

    # The right signature (by tag, ECDSA) and a referrer signature (Ed25519) let the images through.
    payload = simple_signing(v1, f"{server.host}/signed/app")
    attach(server, "signed/app", v1, v1_size, payload, sign(trusted, payload))
    assert skopeo_pull(server, "signed/app:v1", tmp_path).returncode == 0
    verdict = server.api("GET", "/repositories/signed/app/signatures", params={"reference": "v1"}).json()
    assert verdict["verified"] is True and verdict["key"] == "ci"
    payload = simple_signing(v2, f"{server.host}/signed/app")
    attach(server, "signed/app", v2, v2_size, payload, sign(other_key, payload), referrer=True)
    assert skopeo_pull(server, "signed/app:v2", tmp_path).returncode == 0
    assert server.api("GET", "/repositories/signed/app/signatures", params={"reference": "v2"}).json()["key"] == "release"

    # ECR's BatchGetImage obeys the same gate; layers of the unsigned image are refused too.
    key = server.api("POST", "/users/admin/access-keys", json={"description": "signatures"}).json()
    ecr = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])
    batch = ecr.batch_get_image(repositoryName="signed/app", imageIds=[{"imageTag": "v1"}, {"imageTag": "v3"}])
    assert [i["imageId"]["imageTag"] for i in batch["images"]] == ["v1"]
    assert batch["failures"][0]["failureCode"] == "ImageInaccessible" and "no cosign signature" in batch["failures"][0]["failureReason"]
    v3_manifest = requests.get(f"{server.url}/v2/signed/app/manifests/v3", auth=server.auth, timeout=30,
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert v3_manifest.status_code == 403 and v3_manifest.json()["errors"][0]["code"] == "DENIED"

    # Audit mode serves the unsigned image and records it.
    policy["mode"] = "audit"
    assert server.api("PUT", "/namespaces/signed/signature-policy", json=policy).status_code == 200
    assert skopeo_pull(server, "signed/app:v3", tmp_path).returncode == 0
    events = server.api("GET", "/audit", params={"namespace": "signed", "action": "pull.unsigned"}).json()
    assert events and json.loads(events[0]["detail"])["mode"] == "audit"
    denied = server.api("GET", "/audit", params={"namespace": "signed", "action": "pull", "limit": 100}).json()
    assert any(e["result"] == "denied" and json.loads(e["detail"])["policy"] == "signature:signed" for e in denied)
    assert server.api("DELETE", "/namespaces/signed/signature-policy").status_code == 204
    assert server.api("GET", "/namespaces/signed/signature-policy").status_code == 404
