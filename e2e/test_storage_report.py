"""The storage and cost report (issue 19) on a registry the test builds: shared layers across
repositories, an image left untagged by a tag move, a blob no image references. Every figure is
computed here, independently, from what was pushed, and must equal the report's."""

import csv
import datetime
import hashlib
import io
import json
import os
import time

import requests

from conftest import layout_manifest, push_config_image, run, skopeo


def image_sizes(layout_ref):
    _, raw = layout_manifest(layout_ref)
    manifest = json.loads(raw)
    blobs = {manifest["config"]["digest"]: manifest["config"]["size"]}
    blobs.update({layer["digest"]: layer["size"] for layer in manifest["layers"]})
    return len(raw), blobs


def test_report_equals_figures_computed_from_what_was_pushed(wharf, wharf_bin, small_image):
    server = wharf
    manifest_bytes, blobs = image_sizes(small_image)
    for repository in ("report/a", "report/b"):
        skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/{repository}:v1")
    old_manifest, _, old_config = push_config_image(server, "report/a", "moving", "old")
    new_manifest, _, new_config = push_config_image(server, "report/a", "moving", "new")  # "old" is now untagged
    orphan = os.urandom(4096)
    orphan_digest = "sha256:" + hashlib.sha256(orphan).hexdigest()
    assert requests.post(f"{server.url}/v2/report/c/blobs/uploads/?digest={orphan_digest}", data=orphan, auth=server.auth,
                         timeout=30).status_code == 201

    answer = server.api("GET", "/storage/report?staleDays=30")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    image_blob_bytes = sum(blobs.values())
    physical = image_blob_bytes + old_config + new_config + len(orphan)
    logical_a = manifest_bytes + image_blob_bytes + old_manifest + old_config + new_manifest + new_config
    logical_b = manifest_bytes + image_blob_bytes
    registry = report["registry"]
    assert registry["physicalBytes"] == physical
    assert registry["logicalBytes"] == logical_a + logical_b
    assert registry["deduplicationSavedBytes"] == logical_a + logical_b - physical
    assert registry["unreferencedBlobs"] == 1 and registry["unreferencedBytes"] == len(orphan)
    assert abs(registry["monthlyCost"] - physical / 2**30 * 0.10) < 1e-9
    namespace = next(n for n in report["namespaces"] if n["namespace"] == "report")
    assert namespace["physicalBytes"] == physical and namespace["logicalBytes"] == logical_a + logical_b and namespace["images"] == 4

    repositories = {r["repository"]: r for r in report["repositories"]}
    a, b = repositories["report/a"], repositories["report/b"]
    assert (a["images"], a["untaggedImages"], a["logicalBytes"]) == (3, 1, logical_a)
    assert a["physicalBytes"] == image_blob_bytes + old_config + new_config
    assert a["untaggedReclaimableBytes"] == old_config  # the old config is the untagged image's alone
    assert (b["images"], b["untaggedImages"], b["untaggedReclaimableBytes"], b["physicalBytes"]) == (1, 0, 0, image_blob_bytes)
    assert a["staleImages"] == 0 and a["lastPushedAt"].endswith("Z")
    largest = report["largestImages"][0]
    assert largest["bytes"] == manifest_bytes + image_blob_bytes and largest["tags"] == ["v1"]
    assert report["largestLayers"][0]["bytes"] == max(blobs.values()) and report["largestLayers"][0]["repositories"] == 2
    messages = [r["message"] for r in report["recommendations"]]
    assert any(m.startswith("report/a: 1 untagged images") for m in messages), messages
    assert any("1 blobs (4.0 KiB) belong to no image" in m for m in messages), messages

    # CSV: one row per repository with the same figures.
    text = requests.get(f"{server.url}/api/v1/storage/report?format=csv", auth=server.auth, timeout=30)
    assert text.headers["Content-Type"].startswith("text/csv")
    rows = {row["repository"]: row for row in csv.DictReader(io.StringIO(text.text))}
    assert int(rows["report/a"]["logical_bytes"]) == logical_a and int(rows["report/a"]["untagged_reclaimable_bytes"]) == old_config

    # The command line prints the same CSV; only system administrators may read the report.
    env = {**os.environ, "WHARF_SERVER": server.url, "WHARF_PASSWORD": server.auth[1]}
    printed = run([wharf_bin, "admin", "storage", "report", "--csv"], env=env).stdout
    assert list(csv.DictReader(io.StringIO(printed))) == list(csv.DictReader(io.StringIO(text.text)))
    summary = run([wharf_bin, "admin", "storage", "report"], env=env).stdout
    assert "report/a" in summary and "untagged images" in summary
    assert server.api("POST", "/users", json={"name": "reportuser", "password": "reportuser-password-1"}).status_code == 201
    assert server.api("GET", "/storage/report", auth=("reportuser", "reportuser-password-1")).status_code == 403
    assert server.api("GET", "/storage/report?staleDays=0").status_code == 400


def test_egress_and_growth(wharf):
    server = wharf
    content = os.urandom(100_000)
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    assert requests.post(f"{server.url}/v2/egress/app/blobs/uploads/?digest={digest}", data=content, auth=server.auth, timeout=30).status_code == 201
    whole = requests.get(f"{server.url}/v2/egress/app/blobs/{digest}", auth=server.auth, timeout=30)
    assert whole.status_code == 200 and whole.content == content
    part = requests.get(f"{server.url}/v2/egress/app/blobs/{digest}", auth=server.auth, timeout=30, headers={"Range": "bytes=0-999"})
    assert part.status_code == 206 and len(part.content) == 1000
    assert requests.head(f"{server.url}/v2/egress/app/blobs/{digest}", auth=server.auth, timeout=30).status_code == 200  # sends no body
    deadline = time.monotonic() + 30  # served bytes are written in batches every 10 s
    while True:
        report = server.api("GET", "/storage/report").json()
        served = {r["repository"]: r["egressBytes30d"] for r in report["repositories"]}
        if served.get("egress/app") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert served["egress/app"] == 101_000
    assert report["registry"]["egressBytes30d"] >= 101_000
    assert abs(report["registry"]["egressCost30d"] - report["registry"]["egressBytes30d"] / 2**30 * 0.09) < 1e-9
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert report["growth"] and report["growth"][-1]["day"] == today

