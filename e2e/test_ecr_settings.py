"""ECR's registry-wide settings through boto3 (issue 19): pull time update exclusions keep a
scanner's pulls from making a stale image look used, and the account settings Wharf acts on
(BLOB_MOUNTING switches cross-repository mounts on /v2 off and on)."""

import hashlib
import json
import os
import time

import boto3
import botocore.exceptions
import pytest
import requests

from conftest import Wharf, skopeo, umoci_image, write_tree


@pytest.fixture(scope="module")
def server(wharf_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("ecr-settings")
    config = base / "wharf.yaml"
    config.write_text("registry:\n  pullRecordIntervalSeconds: 1\n")
    started = Wharf(wharf_bin, base / "data", extra_args=["--config", str(config)]).start()
    yield started
    assert started.stop() == 0, started.log_text()


def ecr_client(server, user="admin"):
    key = server.api("POST", f"/users/{user}/access-keys", json={"description": "settings"}).json()
    return boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])


def error_code(call, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call(**kwargs)
    return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]


def last_pull(ecr, repository, tag):
    return ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"][0].get("lastRecordedPullTime")


def test_pull_time_update_exclusions(server, small_image):
    ecr = ecr_client(server)
    registry_id = ecr.describe_registry()["registryId"]
    robot = server.api("POST", "/robots", json={
        "name": "scanner", "permissions": [{"scope": "namespace", "name": "stale", "actions": ["pull"]}]}).json()
    robot_arn = f"arn:aws:iam::{registry_id}:role/robot/scanner"
    skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}",
           f"docker://{server.host}/stale/app:v1")

    registered = ecr.register_pull_time_update_exclusion(principalArn=robot_arn)
    assert registered["principalArn"] == robot_arn and registered["createdAt"].year >= 2026
    assert error_code(ecr.register_pull_time_update_exclusion, principalArn=robot_arn)[0] == "ExclusionAlreadyExistsException"
    code, message = error_code(ecr.register_pull_time_update_exclusion, principalArn="arn:aws:iam::999999999999:user/someone")
    assert code == "InvalidParameterException" and registry_id in message

    # The scanner robot pulls: served, but the image stays "never pulled".
    robot_creds = f"{robot['name']}:{robot['secret']}"
    for _ in range(2):
        skopeo("inspect", "--raw", "--tls-verify=false", "--creds", robot_creds, f"docker://{server.host}/stale/app:v1")
    time.sleep(3)  # more than the 1 s pull-record interval
    assert last_pull(ecr, "stale/app", "v1") is None
    # A person's pull still counts.
    skopeo("inspect", "--raw", "--tls-verify=false", "--creds", server.creds, f"docker://{server.host}/stale/app:v1")
    deadline = time.monotonic() + 30
    while last_pull(ecr, "stale/app", "v1") is None:
        assert time.monotonic() < deadline, "the administrator's pull was never recorded"
        time.sleep(0.5)

    # Listing pages; only system administrators may see or change the list.
    second = f"arn:aws:iam::{registry_id}:user/replicator"
    ecr.register_pull_time_update_exclusion(principalArn=second)
    first_page = ecr.list_pull_time_update_exclusions(maxResults=1)
    assert len(first_page["pullTimeUpdateExclusions"]) == 1 and "nextToken" in first_page
    rest = ecr.list_pull_time_update_exclusions(maxResults=1, nextToken=first_page["nextToken"])
    assert sorted(first_page["pullTimeUpdateExclusions"] + rest["pullTimeUpdateExclusions"]) == sorted([robot_arn, second])
    assert server.api("POST", "/users", json={"name": "settingsdev", "password": "settingsdev-password-1"}).status_code == 201
    developer = ecr_client(server, "settingsdev")
    assert error_code(developer.list_pull_time_update_exclusions)[0] == "AccessDeniedException"
    assert error_code(developer.register_pull_time_update_exclusion, principalArn=second)[0] == "AccessDeniedException"

    assert ecr.deregister_pull_time_update_exclusion(principalArn=robot_arn)["principalArn"] == robot_arn
    assert error_code(ecr.deregister_pull_time_update_exclusion, principalArn=robot_arn)[0] == "ExclusionNotFoundException"
    assert ecr.list_pull_time_update_exclusions()["pullTimeUpdateExclusions"] == [second]


def test_account_settings_and_blob_mounting(server):
    ecr = ecr_client(server)
    setting = ecr.get_account_setting(name="BLOB_MOUNTING")
    assert (setting["name"], setting["value"]) == ("BLOB_MOUNTING", "ENABLED")
    assert ecr.get_account_setting(name="REGISTRY_POLICY_SCOPE")["value"] == "V2"
    assert ecr.get_account_setting(name="BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"
    code, message = error_code(ecr.put_account_setting, name="REGISTRY_POLICY_SCOPE", value="V1")
    assert code == "InvalidParameterException" and "V2" in message
    assert error_code(ecr.get_account_setting, name="NO_SUCH_SETTING")[0] == "InvalidParameterException"

    content = b"a layer to mount " + str(time.time()).encode()
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    pushed = requests.post(f"{server.url}/v2/mount/source/blobs/uploads/?digest={digest}", data=content, auth=server.auth, timeout=30)
    assert pushed.status_code == 201

    def mount(target):
        return requests.post(f"{server.url}/v2/mount/{target}/blobs/uploads/?mount={digest}&from=mount/source", auth=server.auth, timeout=30)

    assert mount("first").status_code == 201
    assert ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")["value"] == "DISABLED"
    refused = mount("second")
    assert refused.status_code == 202 and "/blobs/uploads/" in refused.headers["Location"]  # an ordinary upload instead
    assert requests.head(f"{server.url}/v2/mount/second/blobs/{digest}", auth=server.auth, timeout=30).status_code == 404
    ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    assert mount("third").status_code == 201


def test_registry_scanning_configuration_decides_scan_on_push(server, tmp_path):
    """PutRegistryScanningConfiguration's rules decide which pushes are scanned (repositories' own
    scanOnPush is ignored while there are rules, as ECR does); BatchGetRepositoryScanningConfiguration
    reports what applies to each repository."""
    ecr = ecr_client(server)
    empty = ecr.get_registry_scanning_configuration()
    assert empty["scanningConfiguration"] == {"scanType": "BASIC", "rules": []} and empty["registryId"]
    ecr.create_repository(repositoryName="scanrules/own", imageScanningConfiguration={"scanOnPush": True})
    ecr.create_repository(repositoryName="scanned/app")
    ecr.create_repository(repositoryName="other/app")
    before = ecr.batch_get_repository_scanning_configuration(repositoryNames=["scanrules/own", "other/app", "no/such"])
    assert [(c["repositoryName"], c["scanOnPush"], c["scanFrequency"]) for c in before["scanningConfigurations"]] == [
        ("scanrules/own", True, "SCAN_ON_PUSH"), ("other/app", False, "MANUAL")]
    assert [(f["repositoryName"], f["failureCode"]) for f in before["failures"]] == [("no/such", "REPOSITORY_NOT_FOUND")]

    # Refused: continuous scanning is enhanced scanning's, and a rule needs a filter.
    assert error_code(ecr.put_registry_scanning_configuration, scanType="BASIC", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}])[0] == "ValidationException"
    put = ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "scanned/*", "filterType": "WILDCARD"}]}])
    assert put["registryScanningConfiguration"]["rules"][0]["scanFrequency"] == "SCAN_ON_PUSH"
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == put["registryScanningConfiguration"]
    after = {c["repositoryName"]: c for c in ecr.batch_get_repository_scanning_configuration(
        repositoryNames=["scanned/app", "scanrules/own"])["scanningConfigurations"]}
    assert after["scanned/app"]["scanOnPush"] and after["scanned/app"]["appliedScanFilters"] == [{"filter": "scanned/*", "filterType": "WILDCARD"}]
    assert not after["scanrules/own"]["scanOnPush"] and after["scanrules/own"]["scanFrequency"] == "MANUAL"

    # A push into scanned/ is queued for a scan, one into the repository with its own scanOnPush is
    # not (scan results are per digest: each repository gets an image of its own).
    for repository in ("scanned/app", "scanrules/own"):
        layer = tmp_path / repository.replace("/", "-")
        write_tree(layer, {"etc/os-release": "ID=alpine\nVERSION_ID=3.10.4\n", "unique": os.urandom(64)})
        layout = umoci_image(str(tmp_path / f"{repository.replace('/', '-')}-layout"), "v1", [layer])
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{layout}", f"docker://{server.host}/{repository}:v1")
    assert server.api("GET", "/repositories/scanned/app/scan", params={"reference": "v1"}).status_code == 200
    assert server.api("GET", "/repositories/scanrules/own/scan", params={"reference": "v1"}).status_code == 404
    # Back to no rules: the repositories' own settings apply again.
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])
    assert ecr.batch_get_repository_scanning_configuration(repositoryNames=["scanrules/own"])["scanningConfigurations"][0]["scanOnPush"]


LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "description": "keep 5", "selection": {
    "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}, "action": {"type": "expire"}}]})


def test_repository_creation_templates_shape_repositories_created_by_a_push(server, small_image):
    ecr = ecr_client(server)
    created = ecr.create_repository_creation_template(
        prefix="tmpl", description="pushed into tmpl/", appliedFor=["CREATE_ON_PUSH", "REPLICATION"], imageTagMutability="IMMUTABLE",
        lifecyclePolicy=LIFECYCLE, resourceTags=[{"Key": "team", "Value": "platform"}],
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"})
    template = created["repositoryCreationTemplate"]
    assert template["prefix"] == "tmpl/" and template["imageTagMutability"] == "IMMUTABLE" and template["createdAt"].year >= 2026
    assert error_code(ecr.create_repository_creation_template, prefix="tmpl/", appliedFor=["CREATE_ON_PUSH"])[0] == "TemplateAlreadyExistsException"
    assert error_code(ecr.create_repository_creation_template, prefix="bad", appliedFor=["CREATE_ON_PUSH"],
                      lifecyclePolicy="{" + " " * 120 + "}")[0] == "InvalidParameterException"
    ecr.create_repository_creation_template(prefix="ROOT", appliedFor=["PULL_THROUGH_CACHE"], imageTagMutability="IMMUTABLE")

    # A push creates tmpl/app: it gets the template's settings, tags and encryption; pulls work.
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/tmpl/app:v1")
    repository = ecr.describe_repositories(repositoryNames=["tmpl/app"])["repositories"][0]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["encryptionConfiguration"]["encryptionType"] == "KMS"
    assert ecr.get_lifecycle_policy(repositoryName="tmpl/app")["lifecyclePolicyText"] == LIFECYCLE
    assert ecr.list_tags_for_resource(resourceArn=repository["repositoryArn"])["tags"] == [{"Key": "team", "Value": "platform"}]
    skopeo("copy", "--src-tls-verify=false", "--src-creds", server.creds, f"docker://{server.host}/tmpl/app:v1", "oci:" + str(server.data_dir.parent / "tmpl-out") + ":v1")
    again = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}",
                   f"docker://{server.host}/tmpl/app:v1", check=False)
    assert again.returncode == 0  # the same image under the same tag is not a change
    # An explicit create is not shaped by templates, and ROOT only applies to pull-through caches.
    ecr.create_repository(repositoryName="tmpl/explicit")
    assert ecr.describe_repositories(repositoryNames=["tmpl/explicit"])["repositories"][0]["imageTagMutability"] == "MUTABLE"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/elsewhere/app:v1")
    assert ecr.describe_repositories(repositoryNames=["elsewhere/app"])["repositories"][0]["imageTagMutability"] == "MUTABLE"

    listed = ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]
    assert [t["prefix"] for t in listed] == ["ROOT", "tmpl/"]
    assert [t["prefix"] for t in ecr.describe_repository_creation_templates(prefixes=["tmpl"])["repositoryCreationTemplates"]] == ["tmpl/"]
    updated = ecr.update_repository_creation_template(prefix="tmpl", imageTagMutability="MUTABLE")["repositoryCreationTemplate"]
    assert updated["imageTagMutability"] == "MUTABLE" and updated["lifecyclePolicy"] == LIFECYCLE
    assert ecr.delete_repository_creation_template(prefix="tmpl/")["repositoryCreationTemplate"]["prefix"] == "tmpl/"
    assert error_code(ecr.delete_repository_creation_template, prefix="tmpl/")[0] == "TemplateNotFoundException"
    assert error_code(ecr.update_repository_creation_template, prefix="nothing", imageTagMutability="MUTABLE")[0] == "TemplateNotFoundException"
