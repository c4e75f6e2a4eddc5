"""README sentences that had no test (issue 24): `Expect: 100-continue` uploads,
`gc.deleteUntaggedManifests`, and `wharf gc --dry-run` deleting nothing."""

import json
import socket
import subprocess

import requests

from conftest import ADMIN_PASSWORD, Wharf
from test_artifact_formats import push_image, sha256


def test_expect_100_continue_upload(wharf):
    """curl and Docker send `Expect: 100-continue` on large PUTs: Wharf answers 100 before the body."""
    start = requests.post(f"{wharf.url}/v2/claims/expect/blobs/uploads/", auth=wharf.auth, timeout=30)
    assert start.status_code == 202
    location = start.headers["Location"]
    path = location if location.startswith("/") else "/" + location.split("/", 3)[3]
    body = b"expect-continue " * 4096
    separator = "&" if "?" in path else "?"
    token = requests.auth._basic_auth_str(*wharf.auth)
    with socket.create_connection(("127.0.0.1", wharf.port), timeout=30) as connection:
        head = (f"PUT {path}{separator}digest={sha256(body)} HTTP/1.1\r\nHost: {wharf.host}\r\nAuthorization: {token}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n")
        connection.sendall(head.encode())
        interim = connection.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        connection.sendall(body)
        final = b""
        while b"\r\n\r\n" not in final:
            final += connection.recv(4096)
        assert final.startswith(b"HTTP/1.1 201"), final
    stored = requests.get(f"{wharf.url}/v2/claims/expect/blobs/{sha256(body)}", auth=wharf.auth, timeout=30)
    assert stored.status_code == 200 and stored.content == body


def retag_and_collect(server, repository, tmp_path, dry_run):
    """Pushes two images to one tag (the first becomes untagged) and runs `wharf gc` on the server."""
    first, _, _ = push_image(server, repository, "v1")
    push_image(server, repository, "v1")
    password = tmp_path / "password"
    password.write_text(ADMIN_PASSWORD)
    command = ["gc", "--server", server.url, "--password-file", str(password), "--grace-seconds", "0", "--json"]
    result = subprocess.run([server.binary, *command, *(["--dry-run"] if dry_run else [])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return first, json.loads(result.stdout)


def manifest_status(server, repository, digest):
    return requests.get(f"{server.url}/v2/{repository}/manifests/{digest}", auth=server.auth, timeout=30,
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code


def test_gc_keeps_untagged_manifests_unless_configured_and_dry_run_deletes_nothing(wharf_bin, tmp_path):
    keeping = Wharf(wharf_bin, tmp_path / "keeping").start()
    try:
        first, report = retag_and_collect(keeping, "claims/keep", tmp_path, dry_run=False)
        assert manifest_status(keeping, "claims/keep", first) == 200  # the default keeps untagged manifests
    finally:
        assert keeping.stop() == 0
    config = tmp_path / "wharf.yml"
    config.write_text("gc:\n  deleteUntaggedManifests: true\n")
    deleting = Wharf(wharf_bin, tmp_path / "deleting", extra_args=["--config", str(config)]).start()
    try:
        first, report = retag_and_collect(deleting, "claims/delete", tmp_path, dry_run=True)
        assert report["dryRun"] is True and report["deletedManifests"] >= 1, report
        assert manifest_status(deleting, "claims/delete", first) == 200  # a dry run deletes nothing
        result = subprocess.run([wharf_bin, "gc", "--server", deleting.url, "--password-file", str(tmp_path / "password"),
                                 "--grace-seconds", "0", "--json"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and json.loads(result.stdout)["deletedManifests"] >= 1, result.stdout + result.stderr
        assert manifest_status(deleting, "claims/delete", first) == 404
        assert requests.get(f"{deleting.url}/v2/claims/delete/manifests/v1", auth=deleting.auth, timeout=30,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code == 200
    finally:
        assert deleting.stop() == 0


def test_http10_connections_close_after_the_response_unless_kept_alive(wharf):
    """RFC 9112 §9.3: ApacheBench, health checks and probes speak HTTP/1.0 and wait for the close."""

    def exchange(request, reads_until_close):
        with socket.create_connection(("127.0.0.1", wharf.port), timeout=5) as connection:
            connection.sendall(request)
            received = b""
            try:
                while True:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return received, True
                    received += chunk
                    if not reads_until_close and b"\r\n\r\n" in received and received.endswith(b"}"):
                        return received, False
            except socket.timeout:
                return received, False

    response, closed = exchange(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", reads_until_close=True)
    assert response.startswith(b"HTTP/1.1 401") and closed, response
    response, closed = exchange(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", reads_until_close=False)
    assert response.startswith(b"HTTP/1.1 401") and not closed, response
    with socket.create_connection(("127.0.0.1", wharf.port), timeout=5) as connection:  # HTTP/1.0 keep-alive: two requests
        for _ in range(2):
            connection.sendall(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
            received = b""
            while not received.endswith(b"}"):
                received += connection.recv(4096)
            assert received.startswith(b"HTTP/1.1 401"), received
