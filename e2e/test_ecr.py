"""The ECR control plane, driven by the real `aws` CLI and boto3 against a running Wharf."""

import base64
import datetime
import hashlib
import json
import os
import time

import boto3
import botocore.auth
import botocore.config
import botocore.exceptions
import pytest
import requests

from conftest import run, skopeo

REGION = "eu-west-1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def admin_key(wharf):
    """An access key of the administrator, created through the management API."""
    response = wharf.api("POST", "/users/admin/access-keys", json={"description": "e2e"})
    assert response.status_code == 201, response.text
    key = response.json()
    assert key["accessKeyId"].startswith("WKIA") and len(key["accessKeyId"]) == 20
    assert len(key["secretAccessKey"]) == 40
    # The secret is shown once: listing never includes it.
    listed = wharf.api("GET", "/users/admin/access-keys").json()
    assert [k["accessKeyId"] for k in listed] == [key["accessKeyId"]] and "secretAccessKey" not in listed[0]
    return key["accessKeyId"], key["secretAccessKey"]


def cli_env(wharf, key):
    """The environment of a shell that talks to Wharf as ECR through AWS_ENDPOINT_URL_ECR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=key[0], AWS_SECRET_ACCESS_KEY=key[1], AWS_ENDPOINT_URL_ECR=wharf.url,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               AWS_MAX_ATTEMPTS="1")
    return env


def aws(wharf, key, *args, check=True, input=None):
    result = run(["aws", "ecr", *args, "--output", "json"], env=cli_env(wharf, key), check=check, input=input)
    return json.loads(result.stdout) if check and result.stdout.strip() else result


def client(wharf, key):
    return boto3.client("ecr", endpoint_url=wharf.url, region_name=REGION, aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def error_code(call, *args, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call(*args, **kwargs)
    return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]


def login_password(wharf, key):
    return run(["aws", "ecr", "get-login-password"], env=cli_env(wharf, key)).stdout.strip()


def registry_id(wharf, key):
    return client(wharf, key).describe_registry()["registryId"]


def test_the_create_repository_script_runs_verbatim(wharf, admin_key, tmp_path):
    """The issue's script, unchanged, with only AWS_ENDPOINT_URL_ECR pointing at Wharf."""
    script = tmp_path / "create.sh"
    script.write_text(
        "set -euo pipefail\n"
        'aws ecr create-repository --repository-name "$REGISTRY_NAME" --region "$REGION" \\\n'
        "  --encryption-configuration encryptionType=KMS,kmsKey=arn:aws:kms:$REGION:$ACCOUNT_ID:key/12345678-1234-1234-1234-123456789012 \\\n"
        "  --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true\n"
    )
    env = cli_env(wharf, admin_key)
    env.update(REGISTRY_NAME="ecr/verbatim", REGION="us-west-2", ACCOUNT_ID="123456789012")
    created = json.loads(run(["bash", script], env=env).stdout)["repository"]
    assert created["repositoryName"] == "ecr/verbatim"
    assert created["imageTagMutability"] == "IMMUTABLE"
    assert created["imageScanningConfiguration"] == {"scanOnPush": True}
    assert created["encryptionConfiguration"] == {
        "encryptionType": "KMS", "kmsKey": "arn:aws:kms:us-west-2:123456789012:key/12345678-1234-1234-1234-123456789012"}
    assert created["repositoryUri"] == f"{wharf.host}/ecr/verbatim"
    assert created["repositoryArn"] == f"arn:aws:ecr:us-west-2:{created['registryId']}:repository/ecr/verbatim"
    assert len(created["registryId"]) == 12 and created["registryId"].isdigit()
    # Epoch seconds, within a minute of now.
    assert abs(created["createdAt"] - datetime.datetime.now().timestamp()) < 60

    described = aws(wharf, admin_key, "describe-repositories", "--repository-names", "ecr/verbatim")["repositories"]
    assert described[0]["encryptionConfiguration"]["encryptionType"] == "KMS"
    # Running it again fails with ECR's exception.
    again = run(["bash", script], env=env, check=False)
    assert again.returncode != 0 and "RepositoryAlreadyExistsException" in again.stderr


def test_push_list_describe_immutable_and_delete(wharf, admin_key, small_image, debian_image, tmp_path):
    ecr = client(wharf, admin_key)
    ecr.create_repository(repositoryName="ecr/app", imageTagMutability="IMMUTABLE")
    password = login_password(wharf, admin_key)
    assert ":" not in base64.b64decode(ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]).decode().split(":", 1)[1]
    creds = f"AWS:{password}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{small_image}", f"docker://{wharf.host}/ecr/app:v1")
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{debian_image}", f"docker://{wharf.host}/ecr/app:debian")

    ids = aws(wharf, admin_key, "list-images", "--repository-name", "ecr/app")["imageIds"]
    assert sorted(i["imageTag"] for i in ids) == ["debian", "v1"]
    details = {d["imageTags"][0]: d for d in aws(wharf, admin_key, "describe-images", "--repository-name", "ecr/app")["imageDetails"]}
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, f"docker://{wharf.host}/ecr/app:debian").stdout)
    assert details["debian"]["imageSizeInBytes"] == sum(layer["size"] for layer in manifest["layers"])
    assert details["debian"]["imageManifestMediaType"] == OCI_MANIFEST
    assert details["debian"]["artifactMediaType"] == "application/vnd.oci.image.config.v1+json"
    assert abs(details["v1"]["imagePushedAt"] - datetime.datetime.now().timestamp()) < 300
    assert "lastRecordedPullTime" not in details["v1"]
    # Pulls are recorded (in batches, every 10 s) and reported as lastRecordedPullTime.
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, f"docker://{wharf.host}/ecr/app:v1", f"dir:{tmp_path / 'pulled'}")
    deadline = time.monotonic() + 30
    while "lastRecordedPullTime" not in ecr.describe_images(repositoryName="ecr/app", imageIds=[{"imageTag": "v1"}])["imageDetails"][0]:
        assert time.monotonic() < deadline, "the pull was not recorded"
        time.sleep(1)

    # Moving an immutable tag is refused, on /v2 and in PutImage, with ECR's wording.
    moved = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{debian_image}", f"docker://{wharf.host}/ecr/app:v1", check=False)
    assert moved.returncode != 0
    assert "The image tag 'v1' already exists in the 'ecr/app' repository and cannot be overwritten because the repository is immutable" in moved.stderr
    debian_manifest = ecr.batch_get_image(repositoryName="ecr/app", imageIds=[{"imageTag": "debian"}])["images"][0]["imageManifest"]
    code, message = error_code(ecr.put_image, repositoryName="ecr/app", imageManifest=debian_manifest, imageTag="v1")
    assert code == "ImageTagAlreadyExistsException" and "immutable" in message
    code, _ = error_code(ecr.put_image, repositoryName="ecr/app", imageManifest=debian_manifest, imageTag="debian")
    assert code == "ImageAlreadyExistsException"
    # A new tag for the same manifest is fine, and PutImage keeps the exact bytes.
    put = ecr.put_image(repositoryName="ecr/app", imageManifest=debian_manifest, imageTag="stable")["image"]
    assert put["imageId"]["imageDigest"] == "sha256:" + hashlib.sha256(debian_manifest.encode()).hexdigest()
    code, _ = error_code(ecr.put_image, repositoryName="ecr/app", imageManifest=debian_manifest, imageTag="other",
                         imageDigest="sha256:" + "0" * 64)
    assert code == "ImageDigestDoesNotMatchException"

    # BatchGetImage honours acceptedMediaTypes.
    refused = ecr.batch_get_image(repositoryName="ecr/app", imageIds=[{"imageTag": "v1"}],
                                  acceptedMediaTypes=["application/vnd.docker.distribution.manifest.v2+json"])
    assert refused["images"] == [] and refused["failures"][0]["failureCode"] == "ImageNotFound"

    # Delete by tag: 'stable' goes, the image stays (it keeps 'debian').
    deleted = aws(wharf, admin_key, "batch-delete-image", "--repository-name", "ecr/app", "--image-ids", "imageTag=stable")
    assert [i["imageTag"] for i in deleted["imageIds"]] == ["stable"] and deleted["failures"] == []
    # Delete by digest: the image and all its tags go.
    digest = details["debian"]["imageDigest"]
    deleted = aws(wharf, admin_key, "batch-delete-image", "--repository-name", "ecr/app", "--image-ids", f"imageDigest={digest}")
    assert {i["imageTag"] for i in deleted["imageIds"]} == {"debian"}
    missing = aws(wharf, admin_key, "batch-delete-image", "--repository-name", "ecr/app", "--image-ids", "imageTag=nope")
    assert missing["failures"][0]["failureCode"] == "ImageNotFound"
    assert requests.get(f"{wharf.url}/v2/ecr/app/manifests/debian", auth=wharf.auth).status_code == 404
    # The last tag of an image: deleting it deletes the image.
    details = aws(wharf, admin_key, "describe-images", "--repository-name", "ecr/app")["imageDetails"]
    assert [d["imageTags"] for d in details] == [["v1"]]

    # Deleting a repository that holds images needs force.
    code, _ = error_code(ecr.delete_repository, repositoryName="ecr/app")
    assert code == "RepositoryNotEmptyException"
    gone = aws(wharf, admin_key, "delete-repository", "--repository-name", "ecr/app", "--force")["repository"]
    assert gone["repositoryName"] == "ecr/app"
    assert requests.get(f"{wharf.url}/v2/ecr/app/tags/list", auth=wharf.auth).status_code == 404
    code, _ = error_code(ecr.describe_images, repositoryName="ecr/app")
    assert code == "RepositoryNotFoundException"
    ecr.create_repository(repositoryName="ecr/empty")
    assert ecr.delete_repository(repositoryName="ecr/empty")["repository"]["repositoryName"] == "ecr/empty"


def test_lifecycle_policies_and_preview(wharf, admin_key, small_image):
    ecr = client(wharf, admin_key)
    ecr.create_repository(repositoryName="ecr/lifecycle")
    creds = f"AWS:{login_password(wharf, admin_key)}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{small_image}", f"docker://{wharf.host}/ecr/lifecycle:keep")
    # Two more images with the same blobs: the manifest with an annotation added, pushed with PutImage.
    manifest = json.loads(ecr.batch_get_image(repositoryName="ecr/lifecycle", imageIds=[{"imageTag": "keep"}])["images"][0]["imageManifest"])
    pushed = {}
    for build in ("1", "2"):
        manifest["annotations"] = {"org.example.build": build}
        pushed[build] = ecr.put_image(repositoryName="ecr/lifecycle", imageManifest=json.dumps(manifest), imageTag=f"old-{build}")["image"]["imageId"]
        time.sleep(0.01)  # distinct push times

    code, _ = error_code(ecr.get_lifecycle_policy, repositoryName="ecr/lifecycle")
    assert code == "LifecyclePolicyNotFoundException"
    policy = json.dumps({"rules": [{"rulePriority": 1, "description": "expire untagged",
                                    "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
                                    "action": {"type": "expire"}}]})
    put = aws(wharf, admin_key, "put-lifecycle-policy", "--repository-name", "ecr/lifecycle", "--lifecycle-policy-text", policy)
    assert put["lifecyclePolicyText"] == policy
    assert ecr.get_lifecycle_policy(repositoryName="ecr/lifecycle")["lifecyclePolicyText"] == policy
    # ECR's validation: countUnit only with sinceImagePushed; and the model's length limits.
    bad = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1,
                                                                  "countUnit": "days"}, "action": {"type": "expire"}}]})
    code, message = error_code(ecr.put_lifecycle_policy, repositoryName="ecr/lifecycle", lifecyclePolicyText=bad)
    assert code == "InvalidParameterException" and "countUnit" in message
    code, _ = error_code(ecr.put_lifecycle_policy, repositoryName="ecr/lifecycle", lifecyclePolicyText='{"rules": []}' + " " * 90)
    assert code == "InvalidParameterException"

    # A dry run of another policy: of the images tagged old*, all but the newest go; nothing else.
    preview_policy = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["old"],
                                                                             "countType": "imageCountMoreThan", "countNumber": 1},
                                            "action": {"type": "expire"}},
                                           {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
                                            "action": {"type": "expire"}}]})
    started = ecr.start_lifecycle_policy_preview(repositoryName="ecr/lifecycle", lifecyclePolicyText=preview_policy)
    assert started["status"] in ("IN_PROGRESS", "COMPLETE")
    ecr.get_waiter("lifecycle_policy_preview_complete").wait(repositoryName="ecr/lifecycle")
    preview = ecr.get_lifecycle_policy_preview(repositoryName="ecr/lifecycle")
    assert preview["status"] == "COMPLETE" and preview["lifecyclePolicyText"] == preview_policy
    assert preview["summary"]["expiringImageTotalCount"] == 1
    [result] = preview["previewResults"]
    assert result["imageTags"] == ["old-1"] and result["imageDigest"] == pushed["1"]["imageDigest"]
    assert result["appliedRulePriority"] == 1 and result["action"] == {"type": "EXPIRE"}
    # A dry run changes nothing.
    assert len(ecr.list_images(repositoryName="ecr/lifecycle")["imageIds"]) == 3

    deleted = aws(wharf, admin_key, "delete-lifecycle-policy", "--repository-name", "ecr/lifecycle")
    assert deleted["lifecyclePolicyText"] == policy
    code, _ = error_code(ecr.delete_lifecycle_policy, repositoryName="ecr/lifecycle")
    assert code == "LifecyclePolicyNotFoundException"
    code, _ = error_code(ecr.start_lifecycle_policy_preview, repositoryName="ecr/lifecycle")
    assert code == "LifecyclePolicyNotFoundException"


def test_layer_upload_operations_and_download_urls(wharf, admin_key):
    ecr = client(wharf, admin_key)
    ecr.create_repository(repositoryName="ecr/layers")
    layer = os.urandom(3 * 1024 * 1024 + 17)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    digests = {}
    for name, blob in (("layer", layer), ("config", config)):
        upload = ecr.initiate_layer_upload(repositoryName="ecr/layers")
        assert upload["partSize"] > 0
        parts = [blob[i:i + 1024 * 1024] for i in range(0, len(blob), 1024 * 1024)]
        offset = 0
        for part in parts:
            answer = ecr.upload_layer_part(repositoryName="ecr/layers", uploadId=upload["uploadId"], partFirstByte=offset,
                                           partLastByte=offset + len(part) - 1, layerPartBlob=part)
            offset += len(part)
            assert answer["lastByteReceived"] == offset - 1
        # A part that does not continue the upload is refused.
        if name == "layer":
            code, _ = error_code(ecr.upload_layer_part, repositoryName="ecr/layers", uploadId=upload["uploadId"],
                                 partFirstByte=5, partLastByte=6, layerPartBlob=b"xx")
            assert code == "InvalidLayerPartException"
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        completed = ecr.complete_layer_upload(repositoryName="ecr/layers", uploadId=upload["uploadId"], layerDigests=[digest])
        assert completed["layerDigest"] == digest
        digests[name] = digest
    code, _ = error_code(ecr.upload_layer_part, repositoryName="ecr/layers", uploadId="00000000-0000-4000-8000-000000000000",
                         partFirstByte=0, partLastByte=0, layerPartBlob=b"x")
    assert code == "UploadNotFoundException"
    # A wrong digest on completion.
    upload = ecr.initiate_layer_upload(repositoryName="ecr/layers")
    ecr.upload_layer_part(repositoryName="ecr/layers", uploadId=upload["uploadId"], partFirstByte=0, partLastByte=2, layerPartBlob=b"abc")
    code, _ = error_code(ecr.complete_layer_upload, repositoryName="ecr/layers", uploadId=upload["uploadId"], layerDigests=["sha256:" + "1" * 64])
    assert code == "InvalidLayerException"

    available = ecr.batch_check_layer_availability(repositoryName="ecr/layers", layerDigests=[digests["layer"], "sha256:" + "2" * 64])
    assert available["layers"] == [{"layerDigest": digests["layer"], "layerAvailability": "AVAILABLE", "layerSize": len(layer)}]
    assert available["failures"][0]["failureCode"] == "MissingLayerDigest"
    url = ecr.get_download_url_for_layer(repositoryName="ecr/layers", layerDigest=digests["layer"])["downloadUrl"]
    downloaded = requests.get(url)  # no credentials: the URL is the credential
    assert downloaded.status_code == 200 and downloaded.content == layer
    assert requests.get(url[:-3] + "AAA").status_code == 403
    code, _ = error_code(ecr.get_download_url_for_layer, repositoryName="ecr/layers", layerDigest="sha256:" + "3" * 64)
    assert code == "LayersNotFoundException"

    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests["config"], "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digests["layer"], "size": len(layer)}]})
    ecr.put_image(repositoryName="ecr/layers", imageManifest=manifest, imageTag="built-by-api")
    served = requests.get(f"{wharf.url}/v2/ecr/layers/manifests/built-by-api", auth=wharf.auth, headers={"Accept": OCI_MANIFEST})
    assert served.status_code == 200 and served.text == manifest
    missing = manifest.replace(digests["layer"], "sha256:" + "4" * 64)
    code, _ = error_code(ecr.put_image, repositoryName="ecr/layers", imageManifest=missing, imageTag="broken")
    assert code == "LayersNotFoundException"


def test_errors_map_to_ecr_exceptions(wharf, admin_key):
    ecr = client(wharf, admin_key)
    assert error_code(ecr.describe_repositories, repositoryNames=["ecr/none"])[0] == "RepositoryNotFoundException"
    assert error_code(ecr.delete_repository, repositoryName="ecr/none")[0] == "RepositoryNotFoundException"
    assert error_code(ecr.list_images, repositoryName="ecr/none")[0] == "RepositoryNotFoundException"
    assert error_code(ecr.get_repository_policy, repositoryName="ecr/none")[0] == "RepositoryNotFoundException"
    ecr.create_repository(repositoryName="ecr/errors")
    assert error_code(ecr.create_repository, repositoryName="ecr/errors")[0] == "RepositoryAlreadyExistsException"
    assert error_code(ecr.get_repository_policy, repositoryName="ecr/errors")[0] == "RepositoryPolicyNotFoundException"
    assert error_code(ecr.get_lifecycle_policy_preview, repositoryName="ecr/errors")[0] == "LifecyclePolicyPreviewNotFoundException"
    assert error_code(ecr.describe_images, repositoryName="ecr/errors", imageIds=[{"imageTag": "nope"}])[0] == "ImageNotFoundException"
    assert error_code(ecr.describe_image_scan_findings, repositoryName="ecr/errors", imageId={"imageTag": "nope"})[0] == "ImageNotFoundException"
    # Constraints botocore does not check on the client: max, pattern, enum.
    code, message = error_code(ecr.create_repository, repositoryName="Upper/Case")
    assert code == "InvalidParameterException" and "repositoryName" in message
    code, message = error_code(ecr.create_repository, repositoryName="a" * 257)
    assert code == "InvalidParameterException" and "less than or equal to 256" in message
    code, message = error_code(ecr.create_repository, repositoryName="ecr/enum", imageTagMutability="SOMETIMES")
    assert code == "InvalidParameterException" and "enum" in message
    code, _ = error_code(ecr.list_images, repositoryName="ecr/errors", maxResults=5000)
    assert code == "InvalidParameterException"
    code, _ = error_code(ecr.describe_repositories, nextToken="garbage")
    assert code == "InvalidParameterException"
    code, message = error_code(ecr.create_repository, repositoryName="ecr/ex", imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                               imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "bad filter!"}])
    assert code == "InvalidParameterException"
    assert error_code(ecr.create_repository, repositoryName="ecr/tags", tags=[{"Key": "aws:x", "Value": "y"}])[0] == "InvalidTagParameterException"
    assert error_code(ecr.describe_repositories, registryId="111122223333")[0] == "InvalidParameterException"
    # Not implemented: a clear error that names the operation, never a 500.
    code, message = error_code(ecr.create_pull_through_cache_rule, ecrRepositoryPrefix="hub", upstreamRegistryUrl="registry-1.docker.io")
    assert code == "UnknownOperationException" and "CreatePullThroughCacheRule" in message


def test_signature_failures(wharf, admin_key, monkeypatch):
    good = client(wharf, admin_key)
    assert good.describe_repositories()["repositories"] is not None
    wrong_secret = client(wharf, (admin_key[0], "x" * 40))
    assert error_code(wrong_secret.describe_repositories)[0] == "InvalidSignatureException"
    unknown = client(wharf, ("WKIAAAAAAAAAAAAAAAAA", admin_key[1]))
    assert error_code(unknown.describe_repositories)[0] == "UnrecognizedClientException"
    # Unsigned, and an unknown operation.
    target = {"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories", "Content-Type": "application/x-amz-json-1.1"}
    unsigned = requests.post(wharf.url + "/", data="{}", headers=target)
    assert unsigned.status_code == 400 and unsigned.json()["__type"] == "MissingAuthenticationTokenException"
    assert unsigned.headers["x-amzn-RequestId"]
    bogus = requests.post(wharf.url + "/", data="{}", headers={**target, "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.Frobnicate"})
    assert bogus.status_code == 400 and bogus.json()["__type"] == "UnknownOperationException"
    # A signature from 20 minutes ago is outside the 15-minute window.
    old = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: old)
    code, message = error_code(client(wharf, admin_key).describe_repositories)
    assert code == "InvalidSignatureException" and "Signature expired" in message
    # A disabled key stops working at once; re-enabled, it works again.
    monkeypatch.undo()
    assert wharf.api("PATCH", f"/users/admin/access-keys/{admin_key[0]}", json={"disabled": True}).status_code == 204
    assert error_code(client(wharf, admin_key).describe_repositories)[0] == "UnrecognizedClientException"
    assert wharf.api("PATCH", f"/users/admin/access-keys/{admin_key[0]}", json={"disabled": False}).status_code == 204
    client(wharf, admin_key).describe_repositories()


def test_roles_and_resource_policies(wharf, admin_key, small_image):
    """ECR calls use the namespace roles; repository policies add grants and explicit Deny wins, on /v2 too."""
    ecr = client(wharf, admin_key)
    ecr.create_repository(repositoryName="policy/app")
    creds = f"AWS:{login_password(wharf, admin_key)}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{small_image}", f"docker://{wharf.host}/policy/app:1")
    for user in ("outsider", "maintainer"):
        assert wharf.api("POST", "/users", json={"name": user, "password": "a-long-password-1"}).status_code == 201
    assert wharf.api("PUT", "/namespaces/policy/members/maintainer", json={"role": "maintainer"}).status_code in (200, 204)
    keys = {}
    for user in ("outsider", "maintainer"):
        key = wharf.api("POST", f"/users/{user}/access-keys", json={}, auth=(user, "a-long-password-1")).json()
        keys[user] = (key["accessKeyId"], key["secretAccessKey"])
    outsider, maintainer = client(wharf, keys["outsider"]), client(wharf, keys["maintainer"])

    code, message = error_code(outsider.describe_images, repositoryName="policy/app")
    assert code == "AccessDeniedException" and "user/outsider" in message and "ecr:DescribeImages" in message
    assert "policy/app" not in [r["repositoryName"] for r in outsider.describe_repositories()["repositories"]]
    assert len(maintainer.describe_images(repositoryName="policy/app")["imageDetails"]) == 1
    # Only namespace admins set policies.
    assert error_code(maintainer.put_lifecycle_policy, repositoryName="policy/app", lifecyclePolicyText=json.dumps(
        {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 9},
                    "action": {"type": "expire"}}]}))[0] == "AccessDeniedException"

    rid = registry_id(wharf, admin_key)
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "OutsiderPulls", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{rid}:user/outsider"},
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:DescribeImages"]},
        {"Sid": "NoDeletes", "Effect": "Deny", "Principal": "*", "Action": "ecr:BatchDeleteImage"},
    ]}
    set_policy = aws(wharf, admin_key, "set-repository-policy", "--repository-name", "policy/app", "--policy-text", json.dumps(policy))
    assert json.loads(set_policy["policyText"]) == policy
    assert json.loads(ecr.get_repository_policy(repositoryName="policy/app")["policyText"]) == policy
    # The Allow: the outsider may now describe and pull, over ECR and /v2.
    assert len(outsider.describe_images(repositoryName="policy/app")["imageDetails"]) == 1
    outsider_creds = f"AWS:{login_password(wharf, keys['outsider'])}"
    skopeo("inspect", "--tls-verify=false", "--creds", outsider_creds, f"docker://{wharf.host}/policy/app:1")
    # Pull rights only: no uploads.
    assert error_code(outsider.initiate_layer_upload, repositoryName="policy/app")[0] == "AccessDeniedException"
    # The Deny beats the maintainer role, in BatchDeleteImage and on /v2.
    code, message = error_code(maintainer.batch_delete_image, repositoryName="policy/app", imageIds=[{"imageTag": "1"}])
    assert code == "AccessDeniedException" and "explicit deny" in message
    manifest = requests.get(f"{wharf.url}/v2/policy/app/manifests/1", auth=("maintainer", "a-long-password-1"),
                            headers={"Accept": OCI_MANIFEST})
    assert manifest.status_code == 200
    digest = manifest.headers["Docker-Content-Digest"]
    refused = requests.delete(f"{wharf.url}/v2/policy/app/manifests/{digest}", auth=("maintainer", "a-long-password-1"))
    assert refused.status_code in (401, 403)
    # Invalid policies are refused with the reason.
    code, message = error_code(ecr.set_repository_policy, repositoryName="policy/app", policyText=json.dumps(
        {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImag"}]}))
    assert code == "InvalidParameterException" and "BatchGetImag" in message
    code, message = error_code(ecr.set_repository_policy, repositoryName="policy/app", policyText=json.dumps(
        {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:*", "Condition": {"StringEquals": {"a": "b"}}}]}))
    assert code == "InvalidParameterException" and "Condition" in message
    # An explicit Deny of pulls hides the repository from the maintainer's listings too (issue 23,
    # defect 15): the catalog and DescribeRepositories show only what the caller may pull.
    def maintainer_lists():
        catalog = requests.get(f"{wharf.url}/v2/_catalog", auth=("maintainer", "a-long-password-1"), timeout=30).json()["repositories"]
        described = [r["repositoryName"] for r in maintainer.describe_repositories()["repositories"]]
        return "policy/app" in catalog, "policy/app" in described
    assert maintainer_lists() == (True, True)
    ecr.set_repository_policy(repositoryName="policy/app", policyText=json.dumps({"Statement": [
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{rid}:user/maintainer"}, "Action": "ecr:BatchGetImage"}]}))
    assert maintainer_lists() == (False, False)
    assert "policy/app" in [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    ecr.delete_repository_policy(repositoryName="policy/app")
    assert maintainer_lists() == (True, True)
    assert error_code(outsider.describe_images, repositoryName="policy/app")[0] == "AccessDeniedException"
    assert maintainer.batch_delete_image(repositoryName="policy/app", imageIds=[{"imageTag": "1"}])["failures"] == []

    # Registry policy: system administrators only.
    assert error_code(maintainer.put_registry_policy, policyText=json.dumps(policy))[0] == "AccessDeniedException"
    assert error_code(ecr.get_registry_policy)[0] == "RegistryPolicyNotFoundException"
    ecr.put_registry_policy(policyText=json.dumps({"Statement": [
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{rid}:user/maintainer"}, "Action": "ecr:CreateRepository"}]}))
    assert error_code(maintainer.create_repository, repositoryName="policy/denied")[0] == "AccessDeniedException"
    ecr.delete_registry_policy()
    maintainer.create_repository(repositoryName="policy/allowed")


def test_resource_tags_registry_and_replication(wharf, admin_key):
    ecr = client(wharf, admin_key)
    created = ecr.create_repository(repositoryName="ecr/tagged", tags=[{"Key": "team", "Value": "platform"}])["repository"]
    arn = created["repositoryArn"]
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "cost-center", "Value": "42"}, {"Key": "team", "Value": "infra"}])
    tags = aws(wharf, admin_key, "list-tags-for-resource", "--resource-arn", arn)["tags"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("cost-center", "42"), ("team", "infra")]
    ecr.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "cost-center", "Value": "42"}]
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    assert error_code(ecr.tag_resource, resourceArn=arn, tags=too_many)[0] == "TooManyTagsException"
    assert error_code(ecr.list_tags_for_resource, resourceArn="arn:aws:ecr:eu-west-1:999999999999:repository/ecr/tagged")[0] == "InvalidParameterException"

    ecr.put_image_tag_mutability(repositoryName="ecr/tagged", imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                                 imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest*"}])
    ecr.put_image_scanning_configuration(repositoryName="ecr/tagged", imageScanningConfiguration={"scanOnPush": True})
    repository = ecr.describe_repositories(repositoryNames=["ecr/tagged"])["repositories"][0]
    assert repository["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repository["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest*"}]
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}

    registry = ecr.describe_registry()
    assert registry["replicationConfiguration"] == {"rules": []}
    configuration = {"rules": [{"destinations": [{"region": "us-east-2", "registryId": registry["registryId"]}],
                                "repositoryFilters": [{"filter": "ecr", "filterType": "PREFIX_MATCH"}]}]}
    assert ecr.put_replication_configuration(replicationConfiguration=configuration)["replicationConfiguration"] == configuration
    assert ecr.describe_registry()["replicationConfiguration"] == configuration
    code, _ = error_code(ecr.put_replication_configuration, replicationConfiguration={"rules": [{"destinations": [
        {"region": "us-east-2", "registryId": "12345"}]}]})
    assert code == "InvalidParameterException"

    # Pagination of DescribeRepositories through the CLI's own paginator and boto3's.
    for i in range(7):
        ecr.create_repository(repositoryName=f"ecr/page-{i}")
    names = [r["repositoryName"] for page in ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 3})
             for r in page["repositories"]]
    assert len(names) == len(set(names)) and {f"ecr/page-{i}" for i in range(7)} <= set(names)
    cli_names = [r["repositoryName"] for r in aws(wharf, admin_key, "describe-repositories", "--page-size", "2")["repositories"]]
    assert cli_names == names


def test_access_key_cli_prints_export_lines(wharf, wharf_bin):
    env = {**os.environ, "WHARF_SERVER": wharf.url, "WHARF_PASSWORD": wharf.auth[1]}
    output = run([wharf_bin, "admin", "access-key", "create", "--user", "admin", "--description", "cli"], env=env).stdout
    lines = output.strip().splitlines()
    assert lines[0].startswith("export AWS_ACCESS_KEY_ID=WKIA") and lines[1].startswith("export AWS_SECRET_ACCESS_KEY=")
    # eval the lines in a shell, then call ECR with them.
    script = f'eval "$({wharf_bin} admin access-key create --user admin)"; aws ecr describe-registry --output json'
    shell_env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    shell_env.update(AWS_ENDPOINT_URL_ECR=wharf.url, AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    described = json.loads(run(["bash", "-c", script], env=shell_env).stdout)
    assert len(described["registryId"]) == 12
    listed = run([wharf_bin, "admin", "access-key", "list", "--user", "admin"], env=env).stdout
    assert lines[0].split("=")[1] in listed


def test_out_of_range_layer_parts_are_refused_and_the_server_lives(wharf, admin_key):
    """Issue 23, defect 2: partLastByte = 2**63-1 used to kill the server (Int64 overflow)."""
    ecr = client(wharf, admin_key)
    ecr.create_repository(repositoryName="ecr/hostile-parts")
    upload = ecr.initiate_layer_upload(repositoryName="ecr/hostile-parts")
    for first, last in ((0, 2**63 - 1), (5, 2**63 - 1), (2**63 - 1, 2**63 - 1), (0, 2**53), (2**50, 2**50)):
        code, _ = error_code(ecr.upload_layer_part, repositoryName="ecr/hostile-parts", uploadId=upload["uploadId"],
                             partFirstByte=first, partLastByte=last, layerPartBlob=b"x")
        assert code in ("InvalidLayerPartException", "SerializationException"), (first, last, code)
    answer = ecr.upload_layer_part(repositoryName="ecr/hostile-parts", uploadId=upload["uploadId"], partFirstByte=0, partLastByte=0,
                                   layerPartBlob=b"x")
    assert answer["lastByteReceived"] == 0
    assert requests.get(f"{wharf.url}/v2/", auth=wharf.auth, timeout=10).status_code == 200


def test_registry_logins_end_with_the_access_key_that_minted_them(wharf):
    """Issue 23, defect 6: an ECR login kept working after its access key was deleted."""
    created = wharf.api("POST", "/users/admin/access-keys", json={"description": "short-lived"}).json()
    key = (created["accessKeyId"], created["secretAccessKey"])
    password = login_password(wharf, key)
    assert requests.get(f"{wharf.url}/v2/", auth=("AWS", password), timeout=10).status_code == 200
    # A registry login is a /v2 credential: it cannot use the management API or mint credentials.
    assert wharf.api("GET", "/me", auth=("AWS", password)).status_code == 401
    assert wharf.api("POST", "/users/admin/tokens", auth=("AWS", password), json={"name": "from-ecr"}).status_code == 401
    # Disabling the key ends the login at once; enabling it again restores it; deleting it ends it for good.
    assert wharf.api("PATCH", f"/users/admin/access-keys/{key[0]}", json={"disabled": True}).status_code == 204
    assert requests.get(f"{wharf.url}/v2/", auth=("AWS", password), timeout=10).status_code == 401
    assert wharf.api("PATCH", f"/users/admin/access-keys/{key[0]}", json={"disabled": False}).status_code == 204
    assert requests.get(f"{wharf.url}/v2/", auth=("AWS", password), timeout=10).status_code == 200
    assert wharf.api("DELETE", f"/users/admin/access-keys/{key[0]}").status_code == 204
    assert requests.get(f"{wharf.url}/v2/", auth=("AWS", password), timeout=10).status_code == 401
