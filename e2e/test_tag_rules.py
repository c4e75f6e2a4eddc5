"""Deployment rules for tags (issue 17): a namespace's admins refuse `latest` or require SemVer;
skopeo, the Docker Registry API and boto3's PutImage all meet the same rule, with a clear DENIED."""

import json
import subprocess

import boto3
import botocore.exceptions
import pytest
import requests



def push(server, image, reference):
    return subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
                           f"oci:{image}", f"docker://{server.host}/{reference}"], capture_output=True, text=True, timeout=120)


def test_tag_rules_refuse_latest_and_require_semver_everywhere(wharf, small_image):
    server = wharf
    assert push(server, small_image, "rules/app:latest").returncode == 0  # no rules yet
    # Bad rules are refused with the reason; only namespace admins may set them.
    for body, words in [({}, "refuse nothing"), ({"deny": ["bad tag"]}, "not a tag pattern"), ({"deny": "latest"}, "schema")]:
        response = server.api("PUT", "/namespaces/rules/tag-rules", json=body)
        assert response.status_code == 400 and words in response.text, (body, response.text)
    assert server.api("POST", "/users", json={"name": "rulesdev", "password": "rulesdev-password-1"}).status_code == 201
    assert server.api("PUT", "/namespaces/rules/members/rulesdev", json={"role": "developer"}).status_code == 204
    developer = ("rulesdev", "rulesdev-password-1")
    rules = {"deny": ["latest"], "require": ["semver", "release-*"]}
    assert server.api("PUT", "/namespaces/rules/tag-rules", json=rules, auth=developer).status_code == 403
    assert server.api("PUT", "/namespaces/rules/tag-rules", json=rules).json() == rules
    assert server.api("GET", "/namespaces/rules/tag-rules", auth=developer).json() == rules

    refused = push(server, small_image, "rules/app:latest")
    assert refused.returncode != 0 and "'latest' is denied" in refused.stderr, refused.stderr
    nightly = push(server, small_image, "rules/app:nightly")
    assert nightly.returncode != 0 and "tags must match 'semver' or 'release-*'" in nightly.stderr, nightly.stderr
    assert push(server, small_image, "rules/app:1.4.0").returncode == 0
    assert push(server, small_image, "rules/app:release-7").returncode == 0
    assert push(server, small_image, "other/app:latest").returncode == 0  # another namespace

    # The raw answer is OCI's DENIED; the refused tag was not written.
    manifest = requests.get(f"{server.url}/v2/rules/app/manifests/1.4.0", auth=server.auth, timeout=30,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    put = requests.put(f"{server.url}/v2/rules/app/manifests/nightly", data=manifest.content, auth=server.auth, timeout=30,
                       headers={"Content-Type": manifest.headers["Content-Type"]})
    assert put.status_code == 403 and put.json()["errors"][0]["code"] == "DENIED"
    tags = requests.get(f"{server.url}/v2/rules/app/tags/list", auth=server.auth, timeout=30).json()["tags"]
    assert sorted(tags) == ["1.4.0", "latest", "release-7"]  # latest predates the rules
    # A push by digest names no tag and passes.
    digest = manifest.headers["Docker-Content-Digest"]
    by_digest = requests.put(f"{server.url}/v2/rules/app/manifests/{digest}", data=manifest.content, auth=server.auth, timeout=30,
                             headers={"Content-Type": manifest.headers["Content-Type"]})
    assert by_digest.status_code == 201

    # ECR's PutImage meets the same rule.
    key = server.api("POST", "/users/admin/access-keys", json={"description": "rules"}).json()
    ecr = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as error:
        ecr.put_image(repositoryName="rules/app", imageManifest=manifest.text, imageTag="staging")
    assert "tags must match" in str(error.value)
    assert ecr.put_image(repositoryName="rules/app", imageManifest=manifest.text, imageTag="2.0.0")["image"]["imageId"]["imageTag"] == "2.0.0"

    # Changes are audited; deleting the rules lifts them.
    events = server.api("GET", "/audit", params={"namespace": "rules", "action": "tag-rules.set"}).json()
    assert len(events) == 1 and json.loads(events[0]["detail"]) == rules
    assert server.api("DELETE", "/namespaces/rules/tag-rules").status_code == 204
    assert server.api("GET", "/namespaces/rules/tag-rules").status_code == 404
    assert push(server, small_image, "rules/app:nightly").returncode == 0
