"""Monitoring (issue 19): a real Prometheus scrapes Wharf with the metrics token and sees request
counts and storage figures move after pushes and pulls; the storage figures equal what the test
computes from the images it pushed; `promtool check metrics` finds nothing to fix; probes, request
ids and the separate metrics listener behave as documented."""

import json
import os
import subprocess
import time

import pytest
import requests

from conftest import Wharf, free_port, layout_manifest, skopeo

TOKEN = "e2e-metrics-token-0123456789abcdef"


def image_sizes(layout_ref):
    """(manifest bytes, config + layer bytes) of an OCI layout image, read from the layout itself."""
    _, raw = layout_manifest(layout_ref)
    manifest = json.loads(raw)
    return len(raw), manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


def push(server, image, reference):
    skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{image}", f"docker://{server.host}/{reference}")


def scrape(url, **kwargs):
    response = requests.get(url, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.text


def sample(exposition, name, **labels):
    """The value of one series in a Prometheus text exposition (None when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in exposition.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


@pytest.fixture(scope="module")
def monitored(wharf_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("monitored")
    token_file = base / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = base / "wharf.yaml"
    config.write_text(f"metrics:\n  tokenFile: {token_file}\n  sampleIntervalSeconds: 1\n")
    server = Wharf(wharf_bin, base / "data", extra_args=["--config", str(config)]).start()
    yield server
    assert server.stop() == 0, server.log_text()


@pytest.fixture(scope="module")
def prometheus(monitored, tmp_path_factory):
    base = tmp_path_factory.mktemp("prometheus")
    (base / "token").write_text(TOKEN)
    port = free_port()
    (base / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: wharf\n    metrics_path: /metrics\n"
        f"    authorization:\n      credentials_file: {base / 'token'}\n"
        f"    static_configs:\n      - targets: ['{monitored.host}']\n")
    log = open(base / "prometheus.log", "wb")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    else:
        raise AssertionError("prometheus did not start:\n" + (base / "prometheus.log").read_text())
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def query(prometheus, expression):
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=10).json()
    assert answer["status"] == "success", answer
    results = answer["data"]["result"]
    return float(results[0]["value"][1]) if results else None


def wait_for(prometheus, expression, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = query(prometheus, expression)
        if value is not None and predicate(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{expression} = {value} after {timeout}s")


def test_prometheus_scrapes_wharf_and_sees_pushes_and_pulls(monitored, prometheus, small_image):
    server = monitored
    wait_for(prometheus, 'up{job="wharf"}', lambda value: value == 1)
    assert query(prometheus, "wharf_storage_blob_bytes") == 0

    manifest_bytes, blob_bytes = image_sizes(small_image)
    push(server, small_image, "mon/app:v1")
    for _ in range(3):
        skopeo("inspect", "--raw", "--tls-verify=false", "--creds", server.creds, f"docker://{server.host}/mon/app:v1")
    pulls = wait_for(prometheus, 'sum(wharf_http_requests_total{route="v2_manifest",method="GET",code="200"})', lambda value: value >= 3)
    assert pulls >= 3
    wait_for(prometheus, 'sum(wharf_http_requests_total{route="v2_blob_upload",code="201"})', lambda value: value >= 3)
    # Storage figures equal what the test pushed: the config and the layers, once.
    wait_for(prometheus, "wharf_storage_blob_bytes", lambda value: value == blob_bytes)
    # The namespace gauges may be set by the sampler after the totals a scrape already saw: waited for too.
    wait_for(prometheus, 'wharf_namespace_physical_bytes{namespace="mon"}', lambda value: value == blob_bytes)
    assert query(prometheus, 'wharf_namespace_logical_bytes{namespace="mon"}') == blob_bytes + manifest_bytes
    assert query(prometheus, "wharf_repositories") == 1

    # The same image in a second repository: logical bytes double, physical bytes do not move.
    push(server, small_image, "mon/copy:v1")
    wait_for(prometheus, 'wharf_namespace_logical_bytes{namespace="mon"}', lambda value: value == 2 * (blob_bytes + manifest_bytes))
    # The namespace gauges may be set by the sampler after the totals a scrape already saw: waited for too.
    wait_for(prometheus, 'wharf_namespace_physical_bytes{namespace="mon"}', lambda value: value == blob_bytes)
    assert query(prometheus, "wharf_storage_blob_bytes") == blob_bytes
    # Body bytes in cover at least the blobs uploaded once (the second push mounted or skipped them).
    assert query(prometheus, "wharf_http_received_body_bytes_total") >= blob_bytes
    assert query(prometheus, 'wharf_auth_attempts_total{scheme="bearer",result="success"}') >= 1
    # The in-memory manifest cache answered the repeated pulls.
    assert query(prometheus, 'wharf_manifest_cache_requests_total{result="hit"}') >= 2

    exposition = scrape(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", (lint.stdout, lint.stderr)
    # No repository name reaches a request series.
    assert "mon/app" not in exposition


def test_metrics_need_the_token_or_an_administrator(monitored):
    server = monitored
    url = f"{server.url}/metrics"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer not-the-token-0123456789"}, timeout=10).status_code == 401
    assert server.api("POST", "/users", json={"name": "watcher", "password": "watcher-password-1"}).status_code == 201
    assert requests.get(url, auth=("watcher", "watcher-password-1"), timeout=10).status_code == 401
    assert requests.get(url, auth=server.auth, timeout=10).status_code == 200
    assert requests.get(url, auth=("watcher", "a-wrong-password"), timeout=10).status_code == 401
    text = scrape(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert sample(text, "wharf_auth_attempts_total", scheme="basic", result="failure") >= 1
    assert sample(text, "wharf_auth_attempts_total", scheme="bearer", result="failure") >= 1
    assert sample(text, "wharf_http_requests_total", route="metrics", method="GET", code="401") >= 3


def test_probes_and_request_ids(monitored):
    server = monitored
    alive = requests.get(f"{server.url}/healthz", timeout=10)
    assert alive.status_code == 200 and alive.json() == {"status": "alive"}
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": {"status": "ok"}, "storage": {"status": "ok"}, "disk": {"status": "ok"}}}
    # The probe's write left no upload file behind.
    assert not [name for name in os.listdir(server.data_dir / "uploads") if name.startswith("readyz-")]

    echoed = requests.get(f"{server.url}/v2/", headers={"X-Request-Id": "ci-build-42.step:7"}, timeout=10)
    assert echoed.status_code == 401 and echoed.headers["X-Request-Id"] == "ci-build-42.step:7"
    for hostile in ["has spaces in it", "x" * 200, "new\u00e9line"]:
        replaced = requests.get(f"{server.url}/v2/", headers={"X-Request-Id": hostile.encode("utf-8")}, timeout=10)
        assert replaced.headers["X-Request-Id"] != hostile and len(replaced.headers["X-Request-Id"]) == 36
    assert len({requests.get(f"{server.url}/healthz", timeout=10).headers["X-Request-Id"] for _ in range(5)}) == 5


def test_readiness_fails_when_the_disk_is_below_the_minimum(wharf_bin, tmp_path):
    config = tmp_path / "wharf.yaml"
    config.write_text("storage:\n  minimumFreeMiB: 1000000000\n")  # far more than any test disk has free
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready" and body["checks"]["disk"]["status"] == "failed"
        assert body["checks"]["database"] == {"status": "ok"}
        assert str(tmp_path) not in ready.text  # the probe needs no credentials: it names no path
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0


def test_separate_metrics_listener_and_refusals(wharf_bin, tmp_path):
    port = free_port()
    server = Wharf(wharf_bin, tmp_path / "data", extra_env={"WHARF_METRICS_LISTEN": f"127.0.0.1:{port}"}).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                text = scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert "wharf_start_time_seconds" in text
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        # The main listener no longer serves metrics, and the metrics listener serves nothing else.
        assert requests.get(f"{server.url}/metrics", auth=server.auth, timeout=10).status_code == 404
        assert requests.get(f"http://127.0.0.1:{port}/v2/", timeout=10).status_code == 404
    finally:
        assert server.stop() == 0

    # A token file others can read is refused at start, with the reason.
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    config = tmp_path / "wharf.yaml"
    config.write_text(f"metrics:\n  tokenFile: {token}\n")
    result = subprocess.run([wharf_bin, "serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "data2"), "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "WHARF_ADMIN_PASSWORD": "e2e-admin-password"})
    assert result.returncode != 0 and "readable by other users" in result.stdout + result.stderr, result.stdout + result.stderr


def test_ecr_calls_share_the_request_id_and_count_signature_checks(monitored):
    import boto3
    import botocore.exceptions

    server = monitored
    key = server.api("POST", "/users/admin/access-keys", json={"description": "monitoring"}).json()
    ecr = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])
    answer = ecr.describe_repositories()
    metadata = answer["ResponseMetadata"]
    assert metadata["RequestId"] == metadata["HTTPHeaders"]["x-request-id"]
    forged = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=key["accessKeyId"], aws_secret_access_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError):
        forged.describe_repositories()
    text = scrape(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert sample(text, "wharf_auth_attempts_total", scheme="sigv4", result="success") >= 1
    assert sample(text, "wharf_auth_attempts_total", scheme="sigv4", result="failure") >= 1
    assert sample(text, "wharf_http_requests_total", route="ecr", method="POST", code="200") >= 1


def test_json_log_lines_carry_the_request_id(wharf_bin, tmp_path):
    server = Wharf(wharf_bin, tmp_path / "data", extra_env={"WHARF_LOG_FORMAT": "json", "WHARF_LOG_LEVEL": "debug"}).start()
    try:
        assert requests.get(f"{server.url}/v2/", headers={"X-Request-Id": "json-log-7"}, timeout=10).status_code == 401
        download = requests.get(f"{server.url}/ecr/layers/secret-download-token", timeout=10)
        assert download.status_code in (400, 403, 404)
    finally:
        assert server.stop() == 0
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "source", "message"} <= record.keys() for record in records)
    answered = [record for record in records if record.get("requestId") == "json-log-7"]
    assert answered and answered[0]["message"] == "request answered" and answered[0]["status"] == "401"
    assert answered[0]["path"] == "/v2/" and answered[0]["method"] == "GET"
    # A layer download URL is a credential: its path is never logged.
    assert "secret-download-token" not in server.log_path.read_text()


def test_audit_events_name_the_request_that_caused_them(monitored):
    server = monitored
    created = requests.post(f"{server.url}/api/v1/users", auth=server.auth, timeout=10, headers={"X-Request-Id": "create-user-77"},
                            json={"name": "traced", "password": "traced-password-1"})
    assert created.status_code == 201 and created.headers["X-Request-Id"] == "create-user-77"
    deadline = time.monotonic() + 30  # the audit log is written in batches
    while True:
        events = server.api("GET", "/audit", params={"requestId": "create-user-77"}).json()
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(e["action"], e["target"], e["requestId"]) for e in events] == [("user.create", "traced", "create-user-77")]
