"""Webhooks (issue 19): a receiver in the test checks every delivery's signature, both body
formats, the order of each repository's events, retries after it answered 500 and after it was
down, redelivery by hand, and that events written before a restart are delivered after it."""

import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import Wharf, free_port, push_config_image, skopeo

SECRET = "e2e-webhook-secret-0123456789"


class Receiver:
    """An HTTP server on 127.0.0.1 that records deliveries and answers `fail_first` of them with 500."""

    def __init__(self, port=0, fail_first=0):
        self.deliveries = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    refuse = receiver.fail_first > 0
                    if refuse:
                        receiver.fail_first -= 1
                    else:
                        receiver.deliveries.append({"headers": dict(self.headers), "body": body, "path": self.path})
                self.send_response(500 if refuse else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count, timeout=60, path=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [d for d in self.deliveries if path is None or d["path"] == path]
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{len(got)} deliveries of {count} after {timeout}s")


def verify_signature(delivery, secret=SECRET):
    header = delivery["headers"]["X-Wharf-Signature"]
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + delivery["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected), "signature does not verify"
    assert abs(time.time() - int(fields["t"])) < 300


@pytest.fixture(scope="module")
def server(wharf_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("webhooks")
    config = base / "wharf.yaml"
    config.write_text("webhooks:\n  firstRetrySeconds: 1\n")
    started = Wharf(wharf_bin, base / "data", extra_args=["--config", str(config)]).start()
    assert started.api("POST", "/namespaces", json={"name": "hooks"}).status_code in (201, 409)
    yield started
    if started.process:
        assert started.stop() == 0, started.log_text()


def create(server, **body):
    response = server.api("POST", "/webhooks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_both_formats_signed_in_order(server, small_image):
    receiver = Receiver()
    try:
        everything = create(server, url=receiver.url("/all"), secret=SECRET, format="distribution", events=["push", "tag", "delete"])
        assert everything["secret"] == SECRET and "secret" not in server.api("GET", f"/webhooks/{everything['id']}").json()
        generated = create(server, namespace="hooks", url=receiver.url("/cloud"), format="cloudevents", events=["push"])
        assert len(generated["secret"]) >= 40

        skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/hooks/app:v1")
        pushed = receiver.wait_for(1, path="/all")[0]
        verify_signature(pushed)
        assert pushed["headers"]["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
        event = json.loads(pushed["body"])["events"][0]
        assert event["action"] == "push" and event["target"]["repository"] == "hooks/app" and event["target"]["tag"] == "v1"
        assert event["target"]["digest"].startswith("sha256:") and event["actor"]["name"] == "admin"

        cloud = receiver.wait_for(1, path="/cloud")[0]
        verify_signature(cloud, generated["secret"])
        assert cloud["headers"]["Content-Type"] == "application/cloudevents+json"
        body = json.loads(cloud["body"])
        assert body["specversion"] == "1.0" and body["type"] == "dev.wharf.image.pushed" and body["id"]
        assert body["subject"] == f"hooks/app@{event['target']['digest']}" and body["data"]["tag"] == "v1"

        # Many events in one repository arrive in the order they happened; a tag move is its own event.
        digests = [push_config_image(server, "hooks/ordered", f"t{index}", index).digest for index in range(6)]
        moved = push_config_image(server, "hooks/ordered", "t0", "moved").digest
        assert requests.delete(f"{server.url}/v2/hooks/ordered/manifests/t1", auth=server.auth, timeout=30).status_code == 202
        received = receiver.wait_for(1 + 6 + 2 + 1, path="/all")
        ordered = [json.loads(d["body"])["events"][0] for d in received if json.loads(d["body"])["events"][0]["target"]["repository"] == "hooks/ordered"]
        assert [(e["action"], e["target"].get("tag")) for e in ordered] == (
            [("push", f"t{index}") for index in range(6)] + [("push", "t0"), ("push", "t0"), ("delete", "t1")])
        assert [e["target"]["digest"] for e in ordered[:6]] == digests and ordered[6]["target"]["digest"] == moved
        for delivery in received:
            verify_signature(delivery)
        # The namespace webhook asked for pushes only.
        assert all(json.loads(d["body"])["type"] == "dev.wharf.image.pushed" for d in receiver.wait_for(8, path="/cloud"))

        log = server.api("GET", f"/webhooks/{everything['id']}/deliveries?limit=1000").json()
        assert len(log) == len(received) and all(entry["status"] == "DELIVERED" and entry["attempts"] == 1 for entry in log)
    finally:
        receiver.stop()
        for hook in server.api("GET", "/webhooks").json():
            server.api("DELETE", f"/webhooks/{hook['id']}")


def test_retries_after_500_and_after_the_receiver_was_down_and_across_a_restart(server):
    flaky = Receiver(fail_first=2)
    down_port = free_port()
    try:
        retried = create(server, url=flaky.url(), secret=SECRET, events=["push"])
        later = create(server, namespace="hooks", url=f"http://127.0.0.1:{down_port}/late", secret=SECRET, events=["push"])
        digest = push_config_image(server, "hooks/retry", "v1", "retry").digest
        delivered = flaky.wait_for(1, timeout=30)[0]
        assert json.loads(delivered["body"])["events"][0]["target"]["digest"] == digest
        entry = server.api("GET", f"/webhooks/{retried['id']}/deliveries").json()[0]
        assert entry["status"] == "DELIVERED" and entry["attempts"] == 3 and entry["lastStatus"] == 204

        # The second receiver is down: the push is not slowed, the delivery waits with the reason.
        started = time.monotonic()
        push_config_image(server, "hooks/retry", "v2", "down")
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 20
        while True:
            pending = [e for e in server.api("GET", f"/webhooks/{later['id']}/deliveries").json() if e.get("lastError")]
            if pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pending and pending[0]["status"] == "PENDING" and pending[0]["attempts"] >= 1

        # Restart with events still undelivered (and one pushed while stopping): nothing is lost.
        push_config_image(server, "hooks/retry", "v3", "before-restart")
        assert server.stop() == 0
        server.start()
        receiver = Receiver(port=down_port)
        try:
            got = receiver.wait_for(3, timeout=90, path="/late")
            tags = [json.loads(d["body"])["events"][0]["target"]["tag"] for d in got]
            assert tags[:3] == ["v1", "v2", "v3"], tags
            # Redelivery by hand sends the same delivery again.
            first = server.api("GET", f"/webhooks/{later['id']}/deliveries").json()[-1]
            assert server.api("POST", f"/webhooks/{later['id']}/deliveries/{first['id']}/redeliver").status_code == 202
            again = receiver.wait_for(4, timeout=30, path="/late")[-1]
            assert again["headers"]["X-Wharf-Delivery"] == str(first["id"])
            verify_signature(again)
        finally:
            receiver.stop()
    finally:
        flaky.stop()


def test_webhook_permissions_and_validation(server):
    assert server.api("POST", "/users", json={"name": "hookdev", "password": "hookdev-password-1"}).status_code == 201
    assert server.api("PUT", "/namespaces/hooks/members/hookdev", json={"role": "developer"}).status_code == 204
    developer = ("hookdev", "hookdev-password-1")
    body = {"url": "http://127.0.0.1:9/x", "events": ["push"]}
    assert server.api("POST", "/webhooks", json=body, auth=developer).status_code == 403
    assert server.api("POST", "/webhooks", json={**body, "namespace": "hooks"}, auth=developer).status_code == 403
    assert server.api("GET", "/webhooks", auth=developer).status_code == 403
    for bad, words in [({"url": "ftp://x/y", "events": ["push"]}, "http or https"), ({"url": "http://h/x", "events": []}, "at least one"),
                       ({"url": "http://h/x", "events": ["pull!"]}, "unknown event"), ({"url": "http://h/x", "events": ["push"], "secret": "short"}, "16 to 256"),
                       ({"url": "http://h/x", "events": ["push"], "format": "xml"}, "distribution or cloudevents")]:
        response = server.api("POST", "/webhooks", json=bad)
        assert response.status_code == 400 and words in response.text, (bad, response.text)
    assert server.api("POST", "/webhooks", json={**body, "namespace": "nowhere"}).status_code == 404
    hook = create(server, namespace="hooks", **body)
    assert server.api("PATCH", f"/webhooks/{hook['id']}", json={"enabled": False}).json()["enabled"] is False
    listed = server.api("GET", "/webhooks?namespace=hooks").json()
    assert hook["id"] in [h["id"] for h in listed] and all(h["namespace"] == "hooks" for h in listed)
    assert server.api("DELETE", f"/webhooks/{hook['id']}").status_code == 204
    assert server.api("GET", f"/webhooks/{hook['id']}").status_code == 404
    actions = [event["action"] for event in server.api("GET", "/audit?namespace=hooks").json()]
    assert {"webhook.create", "webhook.disable", "webhook.delete"} <= set(actions)


def test_scan_events(server):
    receiver = Receiver()
    try:
        hook = create(server, namespace="hooks", url=receiver.url("/scans"), secret=SECRET, format="cloudevents", events=["scan"])
        digest = push_config_image(server, "hooks/scanned", "v1", "scan-me").digest
        assert server.api("POST", "/repositories/hooks/scanned/scan", params={"reference": "v1"}).status_code in (200, 201, 202)
        delivery = receiver.wait_for(1, timeout=60, path="/scans")[0]
        verify_signature(delivery)
        body = json.loads(delivery["body"])
        assert body["type"] == "dev.wharf.image.scanned" and body["subject"] == f"hooks/scanned@{digest}"
        scan = body["data"]["scan"]
        # This server has no vulnerability database, so the scan fails, and the event says why.
        status = server.api("GET", "/repositories/hooks/scanned/scan", params={"reference": "v1"}).json()["status"]
        assert scan["status"] == status and (status == "COMPLETE" or scan["reason"])
        # minimumSeverity needs vulnerability events, and must be a severity.
        bad = server.api("POST", "/webhooks", json={"url": receiver.url(), "events": ["scan"], "minimumSeverity": "HIGH"})
        assert bad.status_code == 400 and "vulnerability" in bad.text
        bad = server.api("POST", "/webhooks", json={"url": receiver.url(), "events": ["vulnerability"], "minimumSeverity": "SEVERE"})
        assert bad.status_code == 400 and "CRITICAL" in bad.text
        assert create(server, url=receiver.url(), events=["vulnerability"])["minimumSeverity"] == "HIGH"
        server.api("DELETE", f"/webhooks/{hook['id']}")
    finally:
        receiver.stop()
        for hook in server.api("GET", "/webhooks").json():
            server.api("DELETE", f"/webhooks/{hook['id']}")


def test_quota_alerts_fire_and_resolve(wharf_bin, tmp_path):
    config = tmp_path / "wharf.yaml"
    config.write_text("metrics:\n  sampleIntervalSeconds: 1\nalerts:\n  quotaShare: 0.5\n")
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    receiver = Receiver()
    try:
        assert server.api("POST", "/namespaces", json={"name": "full"}).status_code == 201
        create(server, namespace="full", url=receiver.url("/alerts"), secret=SECRET, format="cloudevents", events=["alert"])
        content = os.urandom(60_000)
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        assert server.api("PUT", "/namespaces/full/quota", json={"quotaBytes": 100_000}).status_code == 200
        assert requests.post(f"{server.url}/v2/full/app/blobs/uploads/?digest={digest}", data=content, auth=server.auth, timeout=30).status_code == 201
        firing = receiver.wait_for(1, timeout=30, path="/alerts")[0]
        verify_signature(firing)
        alert = json.loads(firing["body"])
        assert alert["type"] == "dev.wharf.alert"
        detail = alert["data"]["alert"]
        assert (detail["alert"], detail["state"], detail["namespace"], detail["usedBytes"], detail["quotaBytes"]) == (
            "quota", "firing", "full", 60_000, 100_000)
        # Raising the quota resolves it, once.
        assert server.api("PUT", "/namespaces/full/quota", json={"quotaBytes": 1_000_000}).status_code == 200
        resolved = receiver.wait_for(2, timeout=30, path="/alerts")[1]
        assert json.loads(resolved["body"])["data"]["alert"]["state"] == "resolved"
        time.sleep(3)
        assert len(receiver.deliveries) == 2
    finally:
        receiver.stop()
        assert server.stop() == 0
