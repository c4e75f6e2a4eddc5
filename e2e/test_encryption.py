"""Encryption at rest: repositories created with ECR's `encryptionConfiguration` (the seed's quick
start verbatim) have their blobs sealed in storage under their key: the built-in key service on a
fresh install, or a key of a real KMS API (moto's, with signature checking on). Real clients push and
pull; every stored file or bucket object is searched for plaintext of the pushed layers."""

import hashlib
import json
import os
from pathlib import Path

import boto3
import pytest
import requests

from conftest import Wharf, layout_manifest, run, skopeo

REGION = "us-west-2"
ACCOUNT = "123456789012"
QUICK_START_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/12345678-1234-1234-1234-123456789012"


def admin_key(server):
    response = server.api("POST", "/users/admin/access-keys", json={"description": "encryption e2e"})
    assert response.status_code == 201, response.text
    return response.json()["accessKeyId"], response.json()["secretAccessKey"]


def cli_env(server, key):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=key[0], AWS_SECRET_ACCESS_KEY=key[1], AWS_ENDPOINT_URL_ECR=server.url, AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_MAX_ATTEMPTS="1")
    return env


def ecr(server, key):
    return boto3.client("ecr", endpoint_url=server.url, region_name=REGION, aws_access_key_id=key[0], aws_secret_access_key=key[1])


def create_with_quick_start(server, key, tmp_path, name, kms_key):
    """The seed's create-repository command, verbatim but for the names."""
    script = tmp_path / "create.sh"
    script.write_text(
        "set -euo pipefail\n"
        'aws ecr create-repository --repository-name "$REGISTRY_NAME" --region "$REGION" \\\n'
        "  --encryption-configuration encryptionType=KMS,kmsKey=$KMS_KEY \\\n"
        "  --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true\n")
    env = cli_env(server, key)
    env.update(REGISTRY_NAME=name, REGION=REGION, KMS_KEY=kms_key)
    return run(["bash", script], env=env, check=False)


def push_blob(server, repository, data, chunks=None):
    """A blob over /v2: monolithic (POST then PUT), or chunked PATCHes at the given cut points."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    session = requests.Session()
    session.auth = server.auth
    location = session.post(f"{server.url}/v2/{repository}/blobs/uploads/").headers["Location"]
    url = lambda loc: server.url + loc if loc.startswith("/") else loc  # noqa: E731
    start = 0
    for end in chunks or []:
        response = session.patch(url(location), data=data[start:end],
                                 headers={"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"})
        assert response.status_code == 202, response.text
        location, start = response.headers["Location"], end
    response = session.put(url(location), params={"digest": digest}, data=data[start:], headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    return digest


def probes(data, count=12, width=32):
    """Windows of the plaintext, spread over it: none may appear in any stored object."""
    step = max(1, (len(data) - width) // count)
    return [data[i:i + width] for i in range(0, len(data) - width, step)][:count]


def stored_files(root):
    return [p for p in Path(root).rglob("*") if p.is_file() and p.suffix not in (".db", ".db-wal", ".db-shm") and "wharf.db" not in p.name]


def assert_no_plaintext(contents, secrets):
    for name, body in contents:
        for probe in secrets:
            assert probe not in body, f"plaintext of a pushed blob found in {name}"


def test_quick_start_kms_repository_on_a_fresh_install(wharf_bin, tmp_path, small_image):
    """No KMS configured: the built-in key service creates the quick start's key on first use."""
    data_dir = tmp_path / "data"
    server = Wharf(wharf_bin, data_dir).start()
    try:
        key = admin_key(server)
        created = create_with_quick_start(server, key, tmp_path, "secure/app", QUICK_START_KEY)
        assert created.returncode == 0, created.stderr
        repository = json.loads(created.stdout)["repository"]
        assert repository["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": QUICK_START_KEY}

        # A real client, and raw pushes: monolithic and chunked at cuts that split segments.
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/secure/app:1")
        big = os.urandom(3 * 1024 * 1024 + 12345)
        big_digest = push_blob(server, "secure/app", big, chunks=[100_000, 1_500_001, 2_000_000])
        small = os.urandom(70_000)
        small_digest = push_blob(server, "secure/app", small)
        manifest = json.loads(layout_manifest(small_image)[1])
        layer_bytes = [Path(small_image.rsplit(":", 1)[0], "blobs", "sha256", layer["digest"].split(":")[1]).read_bytes() for layer in manifest["layers"]]
        secrets = probes(big) + probes(small) + [p for layer in layer_bytes for p in probes(layer, count=4)]

        # The manifest is sealed in the database too (its digest and media type stay readable).
        manifest_bytes = layout_manifest(small_image)[1]
        database = b"".join(p.read_bytes() for p in data_dir.glob("wharf.db*"))
        assert manifest_bytes[:200] in requests.get(f"{server.url}/v2/secure/app/manifests/1", auth=server.auth,
                                                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).content
        # (Windows with the JSON's own keys: digests alone are indexed in the clear.)
        windows = [manifest_bytes[i:i + 48] for i in range(0, len(manifest_bytes) - 48, 8)]
        structural = [w for w in windows if b'"size":' in w or b'"digest":' in w]
        assert len(structural) >= 4
        assert_no_plaintext([("wharf.db", database)], structural)
        described = ecr(server, key).describe_images(repositoryName="secure/app")["imageDetails"]
        assert described[0]["imageSizeInBytes"] == sum(layer["size"] for layer in json.loads(manifest_bytes)["layers"])

        # Nothing stored holds a plaintext window; the encrypted copies are not at the blobs' addresses.
        files = stored_files(data_dir)
        assert_no_plaintext([(str(p), p.read_bytes()) for p in files], secrets)
        for digest in [big_digest, small_digest] + [layer["digest"] for layer in manifest["layers"]]:
            hexdigest = digest.split(":")[1]
            assert not (data_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest).exists()

        # Pulls give the bytes back: whole, by range across a segment boundary, and through skopeo.
        got = requests.get(f"{server.url}/v2/secure/app/blobs/{big_digest}", auth=server.auth)
        assert got.status_code == 200 and got.content == big
        ranged = requests.get(f"{server.url}/v2/secure/app/blobs/{big_digest}", auth=server.auth, headers={"Range": "bytes=65530-131080"})
        assert ranged.status_code == 206 and ranged.content == big[65530:131081]
        out = tmp_path / "pulled"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", server.creds, f"docker://{server.host}/secure/app:1", f"oci:{out}:x")
        pulled = json.loads(layout_manifest(f"{out}:x")[1])
        assert [layer["digest"] for layer in pulled["layers"]] == [layer["digest"] for layer in manifest["layers"]]

        # The same layer in a plain repository is stored once more, in the clear, at its address;
        # a mount from there into the encrypted repository is refused (the client uploads instead).
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/plain/app:1")
        # The probe finds what it looks for: the plain repository's copy of the manifest is there in the clear.
        database = b"".join(p.read_bytes() for p in data_dir.glob("wharf.db*"))
        assert any(window in database for window in structural)
        plain_digest = push_blob(server, "plain/app", small)
        assert plain_digest == small_digest
        hexdigest = small_digest.split(":")[1]
        assert (data_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest).read_bytes() == small
        other = os.urandom(10_000)
        other_digest = push_blob(server, "plain/app", other)
        mount = requests.post(f"{server.url}/v2/secure/app/blobs/uploads/", params={"mount": other_digest, "from": "plain/app"}, auth=server.auth)
        assert mount.status_code == 202, mount.text

        # The key as the built-in key service holds it.
        keys = {k["keyId"]: k for k in server.api("GET", "/encryption/keys").json()}
        assert keys[QUICK_START_KEY]["service"] == "local" and keys[QUICK_START_KEY]["state"] == "ENABLED"
        assert keys[QUICK_START_KEY]["encryptedCopies"] >= 4

        # Disabled: pulls and pushes are refused with the reason; ECR says KmsException.
        assert server.api("POST", "/encryption/keys/disable", json={"keyId": QUICK_START_KEY}).status_code == 200
        refused = requests.get(f"{server.url}/v2/secure/app/blobs/{big_digest}", auth=server.auth)
        assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "DENIED"
        assert "DisabledException" in refused.json()["errors"][0]["message"]
        assert requests.post(f"{server.url}/v2/secure/app/blobs/uploads/", auth=server.auth).status_code == 403
        with pytest.raises(Exception) as raised:
            ecr(server, key).initiate_layer_upload(repositoryName="secure/app")
        assert raised.value.response["Error"]["Code"] == "KmsException"
        again = create_with_quick_start(server, key, tmp_path, "secure/other", QUICK_START_KEY)
        assert again.returncode != 0 and "KmsException" in again.stderr
        # The plain repository's copy does not depend on that key.
        assert requests.get(f"{server.url}/v2/plain/app/blobs/{small_digest}", auth=server.auth).content == small
        assert server.api("POST", "/encryption/keys/enable", json={"keyId": QUICK_START_KEY}).status_code == 200

        # Rotation re-wraps every data key without rewriting a blob; everything still reads.
        before = {str(p): p.stat().st_mtime_ns for p in stored_files(data_dir / "blobs")}
        rotation = server.api("POST", "/encryption/keys/rotate", json={"keyId": QUICK_START_KEY}).json()
        assert rotation["versions"] == 2 and rotation["rewrappedCopies"] >= 4 and rotation["failures"] == []
        assert {str(p): p.stat().st_mtime_ns for p in stored_files(data_dir / "blobs")} == before
        assert requests.get(f"{server.url}/v2/secure/app/blobs/{big_digest}", auth=server.auth).content == big
        second = server.api("POST", "/encryption/keys/rotate", json={"keyId": QUICK_START_KEY}).json()
        assert second["versions"] == 3 and second["rewrappedCopies"] == rotation["rewrappedCopies"]
    finally:
        assert server.stop() == 0
    # fsck opens every encrypted copy with its keys and checks its digest.
    fsck = run([wharf_bin, "fsck", "--data", str(data_dir), "--json"], check=False)
    report = json.loads(fsck.stdout)
    assert fsck.returncode == 0, fsck.stdout
    assert report["checkedEncryptedCopies"] >= 4 and report["undecryptedCopies"] == [] and report["corruptBlobs"] == []

    # Deleting the repository lets the collector take its copies; the plain one stays.
    server.start()
    try:
        key = admin_key(server)
        ecr(server, key).delete_repository(repositoryName="secure/app", force=True)
        report = requests.post(f"{server.url}/api/v1/gc", params={"graceSeconds": "0"}, auth=server.auth, timeout=120).json()
        assert report["errors"] == [] and report["deletedEncryptedCopies"] >= 4, report
        # What is left is plain blobs at their content addresses: the image plain/app holds.
        left = stored_files(data_dir / "blobs")
        assert left and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in left), left
        for layer in manifest["layers"]:
            assert requests.get(f"{server.url}/v2/plain/app/blobs/{layer['digest']}", auth=server.auth).status_code == 200

        # The other way round: an encrypted repository keeps the image, the plain one lets go of it.
        # The plain files go too (they would be plaintext of encrypted content), the sealed copy stays.
        ecr(server, key).create_repository(repositoryName="secure/again", encryptionConfiguration={"encryptionType": "KMS_DSSE", "kmsKey": QUICK_START_KEY})
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/secure/again:1")
        ecr(server, key).delete_repository(repositoryName="plain/app", force=True)
        report = requests.post(f"{server.url}/api/v1/gc", params={"graceSeconds": "0"}, auth=server.auth, timeout=120).json()
        assert report["errors"] == [] and report["deletedPlainCopies"] >= len(manifest["layers"]), report
        for layer in manifest["layers"]:
            hexdigest = layer["digest"].split(":")[1]
            assert not (data_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest).exists()
        assert_no_plaintext([(str(p), p.read_bytes()) for p in stored_files(data_dir / "blobs")], [p for layer in layer_bytes for p in probes(layer, count=4)])
        out = tmp_path / "again"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", server.creds, f"docker://{server.host}/secure/again:1", f"oci:{out}:x")
        assert [layer["digest"] for layer in json.loads(layout_manifest(f"{out}:x")[1])["layers"]] == [layer["digest"] for layer in manifest["layers"]]
    finally:
        assert server.stop() == 0
    fsck = run([wharf_bin, "fsck", "--data", str(data_dir), "--json"], check=False)
    assert fsck.returncode == 0 and json.loads(fsck.stdout)["orphanFiles"] == [], fsck.stdout


def test_kms_repository_on_s3_with_a_key_of_motos_kms(wharf_bin, tmp_path, s3):
    """A real KMS API (moto's, signatures checked) and an S3 bucket: the bucket holds no plaintext;
    a missing or disabled key is ECR's KmsException; rotation keeps everything readable."""
    endpoint = s3["endpoint"]
    secret = Path(s3["secret_file"]).read_text().strip()
    kms = boto3.client("kms", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=s3["key"], aws_secret_access_key=secret)
    created_key = kms.create_key(Description="wharf e2e")["KeyMetadata"]
    arn, key_id = created_key["Arn"], created_key["KeyId"]  # moto's DisableKey takes the id only
    config = tmp_path / "wharf.yml"
    config.write_text(
        "storage:\n  s3:\n"
        f"    bucket: {s3['bucket']}\n    endpoint: {endpoint}\n    pathStyle: true\n    prefix: registry\n"
        f"    accessKeyId: {s3['key']}\n    secretAccessKeyFile: {s3['secret_file']}\n    partSizeMiB: 5\n"
        "encryption:\n  kms:\n"
        f"    endpoint: {endpoint}\n    accessKeyId: {s3['key']}\n    secretAccessKeyFile: {s3['secret_file']}\n    dataKeyCacheSeconds: 0\n")
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        key = admin_key(server)
        missing = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-0000-0000-000000000000"
        refused = create_with_quick_start(server, key, tmp_path, "kms/missing", missing)
        assert refused.returncode != 0 and "KmsException" in refused.stderr and "NotFoundException" in refused.stderr
        created = create_with_quick_start(server, key, tmp_path, "kms/app", arn)
        assert created.returncode == 0, created.stderr

        data = os.urandom(7 * 1024 * 1024 + 333)
        digest = push_blob(server, "kms/app", data, chunks=[6 * 1024 * 1024])
        objects = []
        for page in s3["client"].get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"]):
            for item in page.get("Contents", []):
                objects.append((item["Key"], s3["client"].get_object(Bucket=s3["bucket"], Key=item["Key"])["Body"].read()))
        assert objects, "nothing was stored in the bucket"
        assert_no_plaintext(objects, probes(data, count=24))
        assert requests.get(f"{server.url}/v2/kms/app/blobs/{digest}", auth=server.auth).content == data

        # Disabled in KMS: the pull is refused (no data key is cached), ECR reports KmsException.
        kms.disable_key(KeyId=key_id)
        refused = requests.get(f"{server.url}/v2/kms/app/blobs/{digest}", auth=server.auth)
        assert refused.status_code == 403 and "DisabledException" in refused.json()["errors"][0]["message"]
        with pytest.raises(Exception) as raised:
            ecr(server, key).initiate_layer_upload(repositoryName="kms/app")
        assert raised.value.response["Error"]["Code"] == "KmsException"
        assert raised.value.response.get("kmsError") == "DisabledException" or "DisabledException" in str(raised.value)
        kms.enable_key(KeyId=key_id)

        # Rotation: KMS re-encrypts each stored data key (ReEncrypt); the blob reads as before.
        rotation = server.api("POST", "/encryption/keys/rotate", json={"keyId": arn}).json()
        assert rotation["failures"] == [] and rotation["rewrappedCopies"] + rotation["unchangedCopies"] >= 1, rotation
        assert requests.get(f"{server.url}/v2/kms/app/blobs/{digest}", auth=server.auth).content == data
    finally:
        assert server.stop() == 0
    fsck = run([wharf_bin, "fsck", "--data", str(tmp_path / "data"), "--config", str(config), "--json"], check=False)
    report = json.loads(fsck.stdout)
    assert fsck.returncode == 0 and report["checkedEncryptedCopies"] >= 1 and report["corruptBlobs"] == [], fsck.stdout
