"""Replication: a source Wharf copies pushed images to two other Wharf regions and to CNCF
Distribution (Debian's docker-registry, htpasswd auth), as ECR's replication configuration says,
set with the real `aws` CLI and boto3. Everything is checked at the destinations with skopeo and
by recomputing digests; destinations and the source are killed with SIGKILL mid-copy."""

import datetime
import hashlib
import io
import json
import os
import signal
import tarfile
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest
import requests

from conftest import ADMIN_PASSWORD, Distribution, Wharf, push_config_image, run, skopeo

REGISTRY_ID = "123456789012"
FOREIGN_ID = "111111111111"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def region_config(path, region, destinations=()):
    lines = ["ecr:", f'  registryId: "{REGISTRY_ID}"', "scanner:", "  enabled: false", "replication:", f"  region: {region}",
             "  firstRetrySeconds: 1", "  chunkSizeMiB: 8"]
    if destinations:
        lines.append("  destinations:")
        for destination in destinations:
            lines.append(f"    - name: {destination['name']}")
            for key in ("region", "registryId", "url", "username", "passwordFile"):
                if key in destination:
                    lines.append(f'      {key}: "{destination[key]}"')
    path.write_text("\n".join(lines) + "\n")
    return path


class Regions:
    def __init__(self, source, eu, ap, distribution, key):
        self.source, self.eu, self.ap, self.distribution, self.key = source, eu, ap, distribution, key

    def ecr(self):
        return boto3.client("ecr", endpoint_url=self.source.url, region_name="us-east-1", aws_access_key_id=self.key[0],
                            aws_secret_access_key=self.key[1], config=botocore.config.Config(retries={"max_attempts": 1}))

    def aws(self, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.key[0], AWS_SECRET_ACCESS_KEY=self.key[1], AWS_ENDPOINT_URL_ECR=self.source.url,
                   AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_MAX_ATTEMPTS="1")
        out = run(["aws", "ecr", *args, "--output", "json"], env=env).stdout
        return json.loads(out) if out.strip() else None

    def configure(self, rules):
        self.aws("put-replication-configuration", "--replication-configuration", json.dumps({"rules": rules}))

    def statuses(self, repository, digest):
        response = self.ecr().describe_image_replication_status(repositoryName=repository, imageId={"imageDigest": digest})
        return {(s["region"], s["registryId"]): s for s in response["replicationStatuses"]}

    def wait_complete(self, repository, digest, expected, timeout=120):
        """Waits until the image's status names exactly `expected` (region, registry) pairs, all COMPLETE."""
        deadline = time.monotonic() + timeout
        statuses = {}
        while time.monotonic() < deadline:
            statuses = self.statuses(repository, digest)
            if set(statuses) == set(expected) and all(s["status"] == "COMPLETE" for s in statuses.values()):
                return statuses
            failed = [s for s in statuses.values() if s["status"] == "FAILED"]
            assert not failed, failed
            time.sleep(0.2)
        raise AssertionError(f"{repository}@{digest} not replicated in {timeout}s: {statuses}\n{self.source.log_text()}")


EU = ("eu-west-1", REGISTRY_ID)
AP = ("ap-south-1", REGISTRY_ID)
FOREIGN = ("foreign-1", FOREIGN_ID)


@pytest.fixture(scope="module")
def regions(wharf_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("regions")
    eu = Wharf(wharf_bin, base / "eu", extra_args=["--config", str(region_config(base / "eu.yml", "eu-west-1"))]).start()
    ap = Wharf(wharf_bin, base / "ap", extra_args=["--config", str(region_config(base / "ap.yml", "ap-south-1"))]).start()
    distribution = Distribution(base / "distribution", user="replicator", password="distribution-secret").start()
    secrets = base / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "wharf").write_text(ADMIN_PASSWORD + "\n")
    (secrets / "distribution").write_text("distribution-secret\n")
    for path in secrets.iterdir():
        path.chmod(0o600)
    config = region_config(base / "source.yml", "us-east-1", [
        {"name": "eu", "region": "eu-west-1", "url": eu.url, "username": "admin", "passwordFile": secrets / "wharf"},
        {"name": "ap", "region": "ap-south-1", "url": ap.url, "username": "admin", "passwordFile": secrets / "wharf"},
        {"name": "distribution", "region": "foreign-1", "registryId": FOREIGN_ID, "url": distribution.url, "username": "replicator",
         "passwordFile": secrets / "distribution"},
    ])
    source = Wharf(wharf_bin, base / "source", extra_args=["--config", str(config)]).start()
    key = source.api("POST", "/users/admin/access-keys", json={"description": "replication e2e"}).json()
    yield Regions(source, eu, ap, distribution, (key["accessKeyId"], key["secretAccessKey"]))
    for server in (source, eu, ap):
        server.stop()
    distribution.stop()


def raw_manifest(host, creds, reference):
    return skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, f"docker://{host}/{reference}").stdout.encode()


def build_index(small_image, tmp_path):
    """An OCI layout holding a two-platform index tagged `multi` (children: the small image and a one-layer variant)."""
    layout = tmp_path / "multi"
    skopeo("copy", f"oci:{small_image}", f"oci:{layout}:amd64")
    variant = tmp_path / "variant"
    (variant / "etc").mkdir(parents=True)
    (variant / "etc" / "arch").write_text("arm64\n" + os.urandom(8).hex())
    run(["umoci", "new", "--image", f"{layout}:arm64"])
    run(["umoci", "insert", "--image", f"{layout}:arm64", variant, "/"])
    index = json.loads((layout / "index.json").read_text())
    children = [{"mediaType": OCI_MANIFEST, "digest": d["digest"], "size": d["size"],
                 "platform": {"architecture": d["annotations"]["org.opencontainers.image.ref.name"], "os": "linux"}}
                for d in index["manifests"]]
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    digest = hashlib.sha256(body).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(body)
    index["manifests"].append({"mediaType": OCI_INDEX, "digest": f"sha256:{digest}", "size": len(body),
                               "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(index))
    return f"{layout}:multi", f"sha256:{digest}", [c["digest"] for c in children]


def push_referrer(server, repository, subject_digest, subject_size, payload):
    """An SBOM-like artifact whose subject is the image: one layer, the empty config."""
    auth = server.auth
    empty = b"{}"
    layer_digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    for blob, digest in ((empty, "sha256:" + hashlib.sha256(empty).hexdigest()), (payload, layer_digest)):
        assert requests.post(f"{server.url}/v2/{repository}/blobs/uploads/?digest={digest}", data=blob, auth=auth, timeout=30).status_code == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": layer_digest, "size": len(payload)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
    }).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    put = requests.put(f"{server.url}/v2/{repository}/manifests/{digest}", data=manifest, auth=auth, timeout=30,
                       headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    return digest, manifest


def test_pushes_replicate_to_every_region_and_to_distribution(regions, small_image, tmp_path):
    regions.configure([{
        "destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}, {"region": "ap-south-1", "registryId": REGISTRY_ID},
                         {"region": "foreign-1", "registryId": FOREIGN_ID}],
        "repositoryFilters": [{"filter": "team", "filterType": "PREFIX_MATCH"}],
    }])
    source = regions.source
    # An image, a multi-platform index, an SBOM referrer of the image, and a repository no rule matches.
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", source.creds, f"oci:{small_image}", f"docker://{source.host}/team/app:v1")
    app = raw_manifest(source.host, source.creds, "team/app:v1")
    app_digest = "sha256:" + hashlib.sha256(app).hexdigest()
    index_ref, index_digest, children = build_index(small_image, tmp_path)
    skopeo("copy", "--all", "--dest-tls-verify=false", "--dest-creds", source.creds, f"oci:{index_ref}", f"docker://{source.host}/team/multi:latest")
    sbom_digest, sbom = push_referrer(source, "team/app", app_digest, len(app), b'{"spdxVersion": "SPDX-2.3", "name": "app"}')
    outside = push_config_image(source, "other/app", "v1", "not replicated")

    everywhere = [EU, AP, FOREIGN]
    for repository, digest in (("team/app", app_digest), ("team/multi", index_digest), ("team/app", sbom_digest)):
        statuses = regions.wait_complete(repository, digest, everywhere)
        assert all("failureCode" not in s for s in statuses.values())

    for destination in (regions.eu, regions.ap, regions.distribution):
        host, creds = destination.host, destination.creds
        assert raw_manifest(host, creds, "team/app:v1") == app
        assert raw_manifest(host, creds, f"team/app@{sbom_digest}") == sbom
        assert hashlib.sha256(raw_manifest(host, creds, "team/multi:latest")).hexdigest() == index_digest.split(":")[1]
        for child in children:
            assert hashlib.sha256(raw_manifest(host, creds, f"team/multi@{child}")).hexdigest() == child.split(":")[1]
        # skopeo recomputes every blob's digest as it copies.
        out = tmp_path / f"out-{destination.port}"
        skopeo("copy", "--all", "--src-tls-verify=false", "--src-creds", creds, f"docker://{host}/team/multi:latest", f"oci:{out}:multi")
        skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, f"docker://{host}/team/app:v1", f"oci:{out}:app")
        missing = requests.get(f"{destination.url}/v2/other/app/manifests/v1", auth=destination.auth, timeout=10,
                               headers={"Accept": OCI_MANIFEST})
        assert missing.status_code == 404, missing.status_code  # no rule matches it: never replicated
    # The referrer travels with its image: the Wharf regions list it as the image's referrer.
    for destination in (regions.eu, regions.ap):
        listing = requests.get(f"{destination.url}/v2/team/app/referrers/{app_digest}", auth=destination.auth, timeout=10).json()
        assert [d["digest"] for d in listing["manifests"]] == [sbom_digest]
    assert regions.statuses("other/app", outside.digest) == {}

    # The management API shows the queues empty and the copies made.
    destinations = {d["name"]: d for d in regions.source.api("GET", "/replication/destinations").json()}
    assert set(destinations) == {"eu", "ap", "distribution"}
    for destination in destinations.values():
        assert destination["configured"] and destination["pending"] == 0 and destination["failed"] == 0 and destination["complete"] >= 3
    status = regions.source.api("GET", "/replication/status", params={"repository": "team/app", "reference": "v1"}).json()
    assert status["digest"] == app_digest and {t["destination"] for t in status["destinations"]} == {"eu", "ap", "distribution"}
    audit = regions.source.api("GET", "/audit", params={"action": "replication.copy"}).json()
    assert len(audit) >= 9
    # The same from the command line.
    env = dict(os.environ, WHARF_PASSWORD=ADMIN_PASSWORD)
    lines = run([source.binary, "admin", "replication", "status", "--server", source.url], env=env).stdout.splitlines()
    assert {line.split()[0] for line in lines[1:]} == {"eu", "ap", "distribution"}, lines
    lines = run([source.binary, "admin", "replication", "image", "team/app:v1", "--server", source.url], env=env).stdout.splitlines()
    assert lines[0] == f"team/app@{app_digest}" and sorted(line.split()[0] for line in lines[2:] if line.split()[1] == "COMPLETE") == ["ap", "distribution", "eu"], lines


def test_reconcile_repairs_drift_and_copies_what_predates_the_rules(regions):
    """A destination restored from an old backup (a tag and a referrer gone there) and an image
    pushed before its rule existed are found by the reconcile pass and copied."""
    source, eu, ap = regions.source, regions.eu, regions.ap
    regions.configure([{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}],
                        "repositoryFilters": [{"filter": "unrelated", "filterType": "PREFIX_MATCH"}]}])
    late = push_config_image(source, "team/late", "v1", "pushed before its rule")
    # Rules apply when the outbox is fanned out (within a second of the commit): a later push that
    # the current rule copies shows that the fan-out has passed team/late's event.
    marker = push_config_image(source, "unrelated/marker", "v1", "fan-out marker")
    regions.wait_complete("unrelated/marker", marker.digest, [EU])
    regions.configure([{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}, {"region": "ap-south-1", "registryId": REGISTRY_ID}],
                        "repositoryFilters": [{"filter": "team", "filterType": "PREFIX_MATCH"}]}])
    app = raw_manifest(source.host, source.creds, "team/app:v1")
    app_digest = "sha256:" + hashlib.sha256(app).hexdigest()
    sbom = source.api("GET", "/replication/status", params={"repository": "team/app", "reference": app_digest})
    referrers = requests.get(f"{source.url}/v2/team/app/referrers/{app_digest}", auth=source.auth, timeout=10).json()["manifests"]
    sbom_digest = referrers[0]["digest"]
    assert sbom.status_code == 200
    # The drift: eu lost the tag, ap lost the referrer.
    assert requests.delete(f"{eu.url}/v2/team/app/manifests/v1", auth=eu.auth, timeout=10).status_code == 202
    assert requests.delete(f"{ap.url}/v2/team/app/manifests/{sbom_digest}", auth=ap.auth, timeout=10).status_code == 202
    assert requests.get(f"{eu.url}/v2/team/late/manifests/v1", auth=eu.auth, timeout=10).status_code == 404

    report = source.api("POST", "/replication/reconcile")
    assert report.status_code == 200, report.text
    report = report.json()
    assert report["unreachable"] == {} and report["queued"] >= 4 and report["checked"] >= 8, report
    regions.wait_complete("team/late", late.digest, [EU, AP])
    deadline = time.monotonic() + 60
    while True:
        tag = requests.get(f"{eu.url}/v2/team/app/manifests/v1", auth=eu.auth, timeout=10, headers={"Accept": OCI_MANIFEST})
        referrer = requests.get(f"{ap.url}/v2/team/app/manifests/{sbom_digest}", auth=ap.auth, timeout=10, headers={"Accept": OCI_MANIFEST})
        if tag.status_code == 200 and referrer.status_code == 200:
            break
        assert time.monotonic() < deadline, (tag.status_code, referrer.status_code)
        time.sleep(0.2)
    assert tag.content == app
    assert [d["digest"] for d in requests.get(f"{ap.url}/v2/team/app/referrers/{app_digest}", auth=ap.auth, timeout=10).json()["manifests"]] == [sbom_digest]
    # Nothing differs now: a second pass queues nothing.
    time.sleep(1)
    again = source.api("POST", "/replication/reconcile").json()
    assert again["queued"] == 0, again


def test_docker_engine_push_replicates_and_pulls_from_every_region(regions, docker, small_image, tmp_path):
    """The Docker engine pushes (Docker schema 2, gzip layers) to the source and pulls the copies from
    a Wharf region and from Distribution."""
    regions.configure([{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}, {"region": "foreign-1", "registryId": FOREIGN_ID}],
                        "repositoryFilters": [{"filter": "engine", "filterType": "PREFIX_MATCH"}]}])
    source, eu, distribution = regions.source, regions.eu, regions.distribution
    for server, (user, password) in ((source, source.auth), (eu, eu.auth), (distribution, distribution.auth)):
        run(["docker", "login", "-u", user, "--password-stdin", server.host], env=docker, input=password + "\n")
    archive = tmp_path / "small.tar"
    skopeo("copy", f"oci:{small_image}", f"docker-archive:{archive}:replication-e2e/small:v1")
    run(["docker", "load", "-i", str(archive)], env=docker)
    pushed = f"{source.host}/engine/app:v1"
    run(["docker", "tag", "replication-e2e/small:v1", pushed], env=docker)
    run(["docker", "push", pushed], env=docker)
    head = requests.head(f"{source.url}/v2/engine/app/manifests/v1", auth=source.auth, timeout=10,
                         headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    digest = head.headers["Docker-Content-Digest"]
    assert head.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    regions.wait_complete("engine/app", digest, [EU, FOREIGN])
    for server in (eu, distribution):
        copy = f"{server.host}/engine/app:v1"
        run(["docker", "pull", copy], env=docker)
        inspected = json.loads(run(["docker", "image", "inspect", copy], env=docker).stdout)[0]
        assert f"{server.host}/engine/app@{digest}" in inspected["RepoDigests"], inspected["RepoDigests"]
        run(["docker", "rmi", copy], env=docker)


def test_tag_moves_reach_destinations_in_order(regions):
    regions.configure([{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}, {"region": "foreign-1", "registryId": FOREIGN_ID}]}])
    pushed = [push_config_image(regions.source, "moves/app", "stable", f"move {i}") for i in range(6)]
    for image in pushed:
        regions.wait_complete("moves/app", image.digest, [EU, FOREIGN])
    for destination in (regions.eu, regions.distribution):
        final = raw_manifest(destination.host, destination.creds, "moves/app:stable")
        assert "sha256:" + hashlib.sha256(final).hexdigest() == pushed[-1].digest


def test_a_region_without_a_destination_fails_visibly_and_errors_have_ecr_shapes(regions):
    regions.configure([{"destinations": [{"region": "sa-east-1", "registryId": REGISTRY_ID}], "repositoryFilters": [
        {"filter": "nowhere", "filterType": "PREFIX_MATCH"}]}])
    image = push_config_image(regions.source, "nowhere/app", "v1", "nowhere")
    deadline = time.monotonic() + 30
    while True:
        statuses = regions.statuses("nowhere/app", image.digest)
        if statuses.get(("sa-east-1", REGISTRY_ID), {}).get("status") == "FAILED":
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)
    assert "no replication destination is configured for region sa-east-1" in statuses[("sa-east-1", REGISTRY_ID)]["failureCode"]
    ecr = regions.ecr()
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        ecr.describe_image_replication_status(repositoryName="nowhere/app", imageId={"imageTag": "missing"})
    assert raised.value.response["Error"]["Code"] == "ImageNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        ecr.describe_image_replication_status(repositoryName="no/such-repository", imageId={"imageTag": "v1"})
    assert raised.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    # A destination that is this registry in its own region is refused.
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        ecr.put_replication_configuration(replicationConfiguration={"rules": [{"destinations": [
            {"region": "us-east-1", "registryId": REGISTRY_ID}]}]})
    assert raised.value.response["Error"]["Code"] == "InvalidParameterException"
    # Failed copies go back to the queue by hand (and fail again: still no such destination).
    assert regions.source.api("POST", "/replication/retry").json()["requeued"] >= 1


def test_wharf_rules_filter_tags_rename_propagate_deletes_and_run_by_hand(regions):
    source, eu, ap = regions.source, regions.eu, regions.ap
    regions.configure([{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}],
                        "repositoryFilters": [{"filter": "unrelated", "filterType": "PREFIX_MATCH"}]}])
    # Refused: an unknown destination, an unknown trigger, a prefix that makes no repository name.
    for body, words in (({"repositories": ["apps/*"], "destinations": ["moon"]}, "no replication destination named 'moon'"),
                        ({"repositories": ["apps/*"], "destinations": ["eu"], "trigger": "sometimes"}, "trigger"),
                        ({"repositories": ["apps/*"], "destinations": ["eu"], "destinationPrefix": "UP/"}, "destinationPrefix")):
        refused = source.api("PUT", "/replication/rules/bad", json=body)
        assert refused.status_code == 400 and words in refused.text, refused.text
    mirror = source.api("PUT", "/replication/rules/mirror", json={
        "repositories": ["apps/*"], "tags": ["v*"], "destinations": ["eu"], "propagateDeletes": True, "destinationPrefix": "dr/"})
    assert mirror.status_code == 200, mirror.text
    assert mirror.json()["trigger"] == "push" and mirror.json()["createdAt"].endswith("Z")
    by_hand = source.api("PUT", "/replication/rules/by-hand", json={"repositories": ["apps/*"], "destinations": ["ap"], "trigger": "manual"})
    assert by_hand.status_code == 200, by_hand.text
    assert [r["name"] for r in source.api("GET", "/replication/rules").json()] == ["by-hand", "mirror"]

    release = push_config_image(source, "apps/web", "v1", "release")
    dev = push_config_image(source, "apps/web", "dev", "development")
    sbom_digest, _ = push_referrer(source, "apps/web", release.digest, release.manifest_size, b'{"spdxVersion": "SPDX-2.3", "name": "web"}')
    regions.wait_complete("apps/web", release.digest, [EU])
    # Renamed by the prefix; the tag filter kept dev at home; the SBOM referrer went with its image
    # (or right after it, when it was pushed after the image had been copied: the rule runs that).
    assert "sha256:" + hashlib.sha256(raw_manifest(eu.host, eu.creds, "dr/apps/web:v1")).hexdigest() == release.digest
    assert requests.get(f"{eu.url}/v2/dr/apps/web/manifests/dev", auth=eu.auth, timeout=10).status_code == 404
    assert requests.get(f"{eu.url}/v2/apps/web/manifests/v1", auth=eu.auth, timeout=10).status_code == 404
    assert source.api("POST", "/replication/rules/mirror/run").status_code == 200
    deadline = time.monotonic() + 30
    while requests.get(f"{eu.url}/v2/dr/apps/web/manifests/{sbom_digest}", auth=eu.auth, timeout=10,
                       headers={"Accept": OCI_MANIFEST}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # The manual rule copied nothing until it was run.
    assert requests.get(f"{ap.url}/v2/apps/web/manifests/v1", auth=ap.auth, timeout=10).status_code == 404
    run_report = source.api("POST", "/replication/rules/by-hand/run").json()
    assert run_report["queued"] >= 2, run_report
    for image in (release, dev):
        deadline = time.monotonic() + 30
        while ("ap-south-1", REGISTRY_ID) not in regions.statuses("apps/web", image.digest) or \
                regions.statuses("apps/web", image.digest)[("ap-south-1", REGISTRY_ID)]["status"] != "COMPLETE":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert "sha256:" + hashlib.sha256(raw_manifest(ap.host, ap.creds, "apps/web:dev")).hexdigest() == dev.digest

    # Deletions follow: a tag, then an image.
    second = push_config_image(source, "apps/web", "v2", "second release")
    regions.wait_complete("apps/web", second.digest, [EU])
    assert requests.delete(f"{source.url}/v2/apps/web/manifests/v2", auth=source.auth, timeout=10).status_code == 202
    assert requests.delete(f"{source.url}/v2/apps/web/manifests/{release.digest}", auth=source.auth, timeout=10).status_code == 202
    deadline = time.monotonic() + 30
    while True:
        tag = requests.get(f"{eu.url}/v2/dr/apps/web/manifests/v2", auth=eu.auth, timeout=10, headers={"Accept": OCI_MANIFEST}).status_code
        image = requests.get(f"{eu.url}/v2/dr/apps/web/manifests/{release.digest}", auth=eu.auth, timeout=10,
                             headers={"Accept": OCI_MANIFEST}).status_code
        if tag == 404 and image == 404:
            break
        assert time.monotonic() < deadline, (tag, image)
        time.sleep(0.2)
    # The untagged image itself stays at eu (only its tag was deleted), and the manual rule's ap copy is left alone.
    assert requests.get(f"{eu.url}/v2/dr/apps/web/manifests/{second.digest}", auth=eu.auth, timeout=10,
                        headers={"Accept": OCI_MANIFEST}).status_code == 200
    assert requests.get(f"{ap.url}/v2/apps/web/manifests/{release.digest}", auth=ap.auth, timeout=10,
                        headers={"Accept": OCI_MANIFEST}).status_code == 200
    tasks = source.api("GET", "/replication/tasks", params={"destination": "eu"}).json()
    assert {(t["action"], t["targetRepository"]) for t in tasks if t["repository"] == "apps/web"} >= {("copy", "dr/apps/web"), ("delete", "dr/apps/web")}
    for name in ("mirror", "by-hand"):
        assert source.api("DELETE", f"/replication/rules/{name}").status_code == 204
    assert source.api("DELETE", "/replication/rules/mirror").status_code == 404


def large_image(server, repository, tag, size):
    """An image with one uncompressed tar layer of `size` random bytes, pushed with requests (streamed from a file)."""
    path = server.data_dir.parent / f"layer-{tag}.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("data.bin")
        info.size = size
        archive.addfile(info, io.BufferedReader(RandomReader(size)))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    layer_digest = "sha256:" + digest.hexdigest()
    layer_size = path.stat().st_size
    location = requests.post(f"{server.url}/v2/{repository}/blobs/uploads/", auth=server.auth, timeout=30).headers["Location"]
    location = location if location.startswith("http") else server.url + location
    with open(path, "rb") as f:
        put = requests.put(f"{location}{'&' if '?' in location else '?'}digest={layer_digest}", data=f, auth=server.auth, timeout=300,
                           headers={"Content-Type": "application/octet-stream", "Content-Length": str(layer_size)})
    assert put.status_code == 201, put.text
    path.unlink()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert requests.post(f"{server.url}/v2/{repository}/blobs/uploads/?digest={config_digest}", data=config, auth=server.auth,
                         timeout=30).status_code == 201
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]}).encode()
    put = requests.put(f"{server.url}/v2/{repository}/manifests/{tag}", data=manifest, auth=server.auth, timeout=30,
                       headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    return put.headers["Docker-Content-Digest"], layer_digest, layer_size


class RandomReader(io.RawIOBase):
    """`size` pseudo-random bytes, generated as read (a 256 MiB layer never sits in memory)."""

    def __init__(self, size):
        self.left = size
        self.counter = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left, 1 << 20)
        if n == 0:
            return 0
        block = b"".join(hashlib.sha512(f"{id(self)}-{self.counter}-{i}".encode()).digest() for i in range((n + 63) // 64))[:n]
        self.counter += 1
        buffer[:n] = block
        self.left -= n
        return n


def blob_sha256(server, repository, digest):
    hasher = hashlib.sha256()
    with requests.get(f"{server.url}/v2/{repository}/blobs/{digest}", auth=server.auth, stream=True, timeout=120) as response:
        assert response.status_code == 200, response.status_code
        for chunk in response.iter_content(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def wait_for_upload(server, at_least, timeout=60):
    """Waits until an upload in progress at the destination holds `at_least` bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        uploads = server.data_dir / "uploads"
        sizes = [p.stat().st_size for p in uploads.iterdir() if p.is_file()] if uploads.exists() else []
        if sizes and max(sizes) >= at_least:
            return
        time.sleep(0.01)
    raise AssertionError(f"no upload of {at_least} bytes at the destination")


def test_killed_destination_and_killed_source_lose_nothing(regions):
    size = 256 << 20
    regions.configure([{"destinations": [{"region": "eu-west-1", "registryId": REGISTRY_ID}],
                        "repositoryFilters": [{"filter": "big", "filterType": "PREFIX_MATCH"}]}])
    source, eu = regions.source, regions.eu

    # The destination dies in the middle of a 256 MiB layer and comes back on the same port.
    first, first_layer, first_size = large_image(source, "big/one", "v1", size)
    wait_for_upload(eu, 16 << 20)
    eu.stop(signal.SIGKILL)
    time.sleep(1.5)
    eu.start()

    regions.wait_complete("big/one", first, [EU], timeout=120)

    # The source dies in the middle of the next one and comes back.
    second, second_layer, second_size = large_image(source, "big/two", "v1", size)
    wait_for_upload(eu, 16 << 20)
    source.stop(signal.SIGKILL)
    restarted = time.monotonic()
    source.start()
    regions.wait_complete("big/two", second, [EU], timeout=120)
    # The restarted source took its own scheduled work back at once (not after its leases expired).
    assert time.monotonic() - restarted < 25

    for repository, manifest, layer in (("big/one", first, first_layer), ("big/two", second, second_layer)):
        assert "sha256:" + hashlib.sha256(raw_manifest(eu.host, eu.creds, f"{repository}:v1")).hexdigest() == manifest
        assert blob_sha256(eu, repository, layer) == layer
    tasks = source.api("GET", "/replication/tasks", params={"destination": "eu", "status": "COMPLETE"}).json()
    done = {t["repository"]: t for t in tasks if t["repository"].startswith("big/")}
    assert set(done) == {"big/one", "big/two"}
    # The copy interrupted by the destination's death was resumed: the attempt that finished sent
    # less than the layer (the chunks the destination had acknowledged stayed there).
    assert done["big/one"]["attempts"] >= 2, done["big/one"]
    assert done["big/one"]["bytesCopied"] < first_size, done["big/one"]
    assert datetime.datetime.fromisoformat(done["big/one"]["completedAt"]).year >= 2026
