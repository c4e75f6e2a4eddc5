"""Blobs in S3: a real S3 API (moto's server, started by scripts/test.sh with signature checking on).
Real clients push and pull; the bucket is inspected directly with boto3 to prove where every byte is."""

import hashlib
import json
import os
import subprocess
import threading
import time

import boto3
import pytest
import requests

from conftest import Wharf, free_port, layout_manifest, run, skopeo


def s3_config(tmp_path, s3, extra="", prefix="registry", secret_file=None):
    config = tmp_path / "s3.yml"
    config.write_text(
        "storage:\n  s3:\n"
        f"    bucket: {s3['bucket']}\n    endpoint: {s3['endpoint']}\n    pathStyle: true\n    prefix: {prefix}\n"
        f"    accessKeyId: {s3['key']}\n    secretAccessKeyFile: {secret_file or s3['secret_file']}\n    partSizeMiB: 5\n" + extra)
    return config


def manifest_of(layout_ref):
    return json.loads(layout_manifest(layout_ref)[1])


def bucket_objects(s3, prefix=""):
    objects = {}
    for page in s3["client"].get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"], Prefix=prefix):
        for item in page.get("Contents", []):
            objects[item["Key"]] = item["Size"]
    return objects


def blob_key(digest, prefix="registry"):
    algorithm, hexdigest = digest.split(":")
    return f"{prefix}/blobs/{algorithm}/{hexdigest[:2]}/{hexdigest}"


def test_skopeo_push_and_pull_through_s3_with_every_byte_in_the_bucket(wharf_bin, tmp_path, s3, small_image):
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(s3_config(tmp_path, s3))]).start()
    try:
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/s3/app:1")
        out = tmp_path / "pulled"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", server.creds, f"docker://{server.host}/s3/app:1", f"oci:{out}:x")
        pushed, pulled = manifest_of(small_image), manifest_of(f"{out}:x")
        assert [layer["digest"] for layer in pulled["layers"]] == [layer["digest"] for layer in pushed["layers"]]
        assert pulled["config"]["digest"] == pushed["config"]["digest"]
        # Each blob is one object at its content address, and its bytes hash to it.
        objects = bucket_objects(s3)
        for blob in [pushed["config"]] + pushed["layers"]:
            key = blob_key(blob["digest"])
            assert objects.get(key) == blob["size"], (key, objects)
            body = s3["client"].get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
            assert "sha256:" + hashlib.sha256(body).hexdigest() == blob["digest"]
        # Nothing else: no upload objects left behind, nothing outside the prefix.
        assert set(objects) == {blob_key(b["digest"]) for b in [pushed["config"]] + pushed["layers"]}, objects
        # And no blob went to the local disk.
        assert not (tmp_path / "data" / "blobs").exists() or not any((tmp_path / "data" / "blobs").rglob("*/*/*"))
    finally:
        assert server.stop() == 0


def test_chunked_upload_across_parts_and_range_reads(wharf_bin, tmp_path, s3):
    config = s3_config(tmp_path, s3, extra="    storageClass: STANDARD_IA\n")
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        blob = os.urandom(13 * 1024 * 1024 + 11)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        session = requests.Session()
        session.auth = server.auth
        location = session.post(f"{server.url}/v2/s3/big/blobs/uploads/").headers["Location"]
        cuts = [0, 3 * 1024 * 1024, 9 * 1024 * 1024 + 5, len(blob)]
        for start, end in [(cuts[0], cuts[1]), (cuts[1], cuts[2])]:
            response = session.patch(server.url + location if location.startswith("/") else location, data=blob[start:end],
                                     headers={"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"})
            assert response.status_code == 202, response.text
            assert response.headers["Range"] == f"0-{end - 1}"
            location = response.headers["Location"]
        # While the upload is open its bytes are part-sized objects under uploads/.
        upload_objects = bucket_objects(s3, "registry/uploads/")
        assert sum(upload_objects.values()) == cuts[2] and max(upload_objects.values()) <= 5 * 1024 * 1024
        url = server.url + location if location.startswith("/") else location
        response = session.put(url, params={"digest": digest}, data=blob[cuts[2]:],
                               headers={"Content-Range": f"{cuts[2]}-{len(blob) - 1}", "Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text
        assert bucket_objects(s3, "registry/uploads/") == {}
        assert bucket_objects(s3)[blob_key(digest)] == len(blob)
        # Published (by a multipart copy) in the configured storage class.
        assert s3["client"].head_object(Bucket=s3["bucket"], Key=blob_key(digest)).get("StorageClass") == "STANDARD_IA"
        got = session.get(f"{server.url}/v2/s3/big/blobs/{digest}")
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == digest.split(":")[1]
        ranged = session.get(f"{server.url}/v2/s3/big/blobs/{digest}", headers={"Range": "bytes=5242870-5242900"})
        assert ranged.status_code == 206 and ranged.content == blob[5242870:5242901]
        # A digest that does not match leaves nothing visible and no upload bytes behind.
        location = session.post(f"{server.url}/v2/s3/big/blobs/uploads/").headers["Location"]
        url = server.url + location if location.startswith("/") else location
        bad = session.put(url, params={"digest": "sha256:" + "0" * 64}, data=b"not these bytes", headers={"Content-Type": "application/octet-stream"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert bucket_objects(s3, "registry/uploads/") == {}
        assert blob_key("sha256:" + "0" * 64) not in bucket_objects(s3)
    finally:
        assert server.stop() == 0


def test_gc_and_fsck_work_against_s3(wharf_bin, tmp_path, s3, small_image):
    config = s3_config(tmp_path, s3)
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/s3/gc:1")
        manifest = manifest_of(small_image)
        digest = requests.head(f"{server.url}/v2/s3/gc/manifests/1", auth=server.auth,
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).headers["Docker-Content-Digest"]
        assert requests.delete(f"{server.url}/v2/s3/gc/manifests/{digest}", auth=server.auth).status_code == 202
        report = requests.post(f"{server.url}/api/v1/gc?graceSeconds=0", auth=server.auth, timeout=120).json()
        assert report["errors"] == [], report
        objects = bucket_objects(s3)
        for blob in [manifest["config"]] + manifest["layers"]:
            assert blob_key(blob["digest"]) not in objects, f"{blob['digest']} survived garbage collection"
        assert bucket_objects(s3, "registry/trash/") == {}
        # A blob in the bucket the database does not know is an orphan fsck reports.
        s3["client"].put_object(Bucket=s3["bucket"], Key=blob_key("sha256:" + hashlib.sha256(b"stray").hexdigest()), Body=b"stray")
    finally:
        assert server.stop() == 0
    fsck = run([wharf_bin, "fsck", "--data", str(tmp_path / "data"), "--config", str(config), "--json"], check=False)
    result = json.loads(fsck.stdout)
    assert result["orphanFiles"] == ["sha256:" + hashlib.sha256(b"stray").hexdigest()], fsck.stdout
    assert result["missingBlobs"] == [] and result["corruptBlobs"] == []


def test_bad_credentials_stop_the_start_with_the_reason(wharf_bin, tmp_path, s3):
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    wrong.chmod(0o600)
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(s3_config(tmp_path, s3, secret_file=wrong))])
    with pytest.raises(AssertionError, match="SignatureDoesNotMatch"):
        server.start()
    # A secret other users can read is refused before any request is made.
    wrong.chmod(0o644)
    server = Wharf(wharf_bin, tmp_path / "data2", extra_args=["--config", str(s3_config(tmp_path, s3, secret_file=wrong))])
    with pytest.raises(AssertionError, match="readable by other users"):
        server.start()


def botocore_presigned_signature(location, key, secret, expires):
    """The signature botocore (AWS's reference signer) gives the same GET at the same instant."""
    import datetime
    from unittest import mock
    from urllib.parse import parse_qs, urlparse

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    parsed = urlparse(location)
    when = datetime.datetime.strptime(parse_qs(parsed.query)["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    request = AWSRequest(method="GET", url=f"{parsed.scheme}://{parsed.netloc}{parsed.path}")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        botocore.auth.S3SigV4QueryAuth(Credentials(key, secret), "s3", "us-east-1", expires=expires).add_auth(request)
    return parse_qs(urlparse(request.url).query)["X-Amz-Signature"][0]


def test_redirect_sends_clients_to_presigned_urls(wharf_bin, tmp_path, s3, small_image):
    config = s3_config(tmp_path, s3, extra="    redirect: true\n    redirectExpirySeconds: 300\n")
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/s3/redirect:1")
        layer = manifest_of(small_image)["layers"][0]
        response = requests.get(f"{server.url}/v2/s3/redirect/blobs/{layer['digest']}", auth=server.auth, allow_redirects=False)
        assert response.status_code == 307, response.text
        location = response.headers["Location"]
        assert location.startswith(f"{s3['endpoint']}/{s3['bucket']}/{blob_key(layer['digest'])}?")
        assert "X-Amz-Expires=300" in location and response.headers["Docker-Content-Digest"] == layer["digest"]
        # Signed exactly as AWS's own signer signs that GET (moto cannot check presigned URLs while
        # it checks signatures, so botocore is the referee here).
        secret = s3["secret_file"].read_text().strip()
        assert location.rsplit("X-Amz-Signature=", 1)[1] == botocore_presigned_signature(location, s3["key"], secret, 300)
        # HEAD is answered by Wharf itself.
        head = requests.head(f"{server.url}/v2/s3/redirect/blobs/{layer['digest']}", auth=server.auth, allow_redirects=False)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer["size"]
    finally:
        assert server.stop() == 0


def test_clients_follow_the_redirect_to_the_bucket(wharf_bin, tmp_path, small_image):
    """skopeo pulls through presigned URLs from a second S3 server (moto without signature checks,
    the only way moto serves presigned GETs)."""
    port = free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="open", aws_secret_access_key="open")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="redirects")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        secret = tmp_path / "secret"
        secret.write_text("open\n")
        secret.chmod(0o600)
        s3 = {"bucket": "redirects", "endpoint": endpoint, "key": "open", "secret_file": secret, "client": client}
        config = s3_config(tmp_path, s3, extra="    redirect: true\n")
        server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
        try:
            skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/s3/follow:1")
            out = tmp_path / "pulled"
            skopeo("copy", "--src-tls-verify=false", "--src-creds", server.creds, f"docker://{server.host}/s3/follow:1", f"oci:{out}:x")
            assert manifest_of(f"{out}:x")["layers"] == manifest_of(small_image)["layers"]
            layer = manifest_of(small_image)["layers"][1]
            got = requests.get(f"{server.url}/v2/s3/follow/blobs/{layer['digest']}", auth=server.auth)
            assert got.history and got.history[0].status_code == 307
            assert "sha256:" + hashlib.sha256(got.content).hexdigest() == layer["digest"]
        finally:
            assert server.stop() == 0
    finally:
        moto.terminate()
        moto.wait(timeout=30)


class FaultyS3:
    """A proxy in front of the S3 server that fails on purpose: every third request is answered
    503 SlowDown without reaching S3, and the first GET of each object is cut off halfway through
    its body. Headers pass unchanged, so S3 still checks Wharf's signatures."""

    def __init__(self, upstream):
        import http.client
        import http.server
        import socketserver
        from urllib.parse import urlparse

        target = urlparse(upstream)
        state = {"requests": 0, "throttled": 0, "cut": 0, "cut_keys": set(), "throttle_every": 3, "fail_upload_puts": 0, "failed": 0,
                 "cut_downloads": True}
        lock = threading.Lock()
        self.state = state

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                with lock:
                    state["requests"] += 1
                    throttle = state["throttle_every"] > 0 and state["requests"] % state["throttle_every"] == 0
                    if self.command == "PUT" and "/uploads/" in self.path and state["fail_upload_puts"] > 0:
                        state["fail_upload_puts"] -= 1
                        state["failed"] += 1
                        throttle = True
                    path_only = self.path.split("?")[0]
                    cut = state["cut_downloads"] and not throttle and self.command == "GET" and "?" not in self.path and "/blobs/" in path_only and path_only not in state["cut_keys"]
                    if cut:
                        state["cut_keys"].add(path_only)
                if throttle:
                    state["throttled"] += 1
                    answer = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                connection.request(self.command, self.path, body=body or None, headers={k: v for k, v in self.headers.items()})
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                # A HEAD answer has no body but the object's length.
                self.send_header("Content-Length", response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if cut and len(data) > 1:
                    state["cut"] += 1
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_throttling_and_broken_downloads_are_retried_and_resumed(wharf_bin, tmp_path, s3, small_image):
    faulty = FaultyS3(s3["endpoint"])
    try:
        config = s3_config(tmp_path, {**s3, "endpoint": faulty.endpoint}, extra="    maximumAttempts: 4\n")
        server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
        try:
            skopeo("copy", "--dest-tls-verify=false", "--dest-creds", server.creds, f"oci:{small_image}", f"docker://{server.host}/s3/faults:1")
            blob = os.urandom(12 * 1024 * 1024)
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            session = requests.Session()
            session.auth = server.auth
            location = session.post(f"{server.url}/v2/s3/faults/blobs/uploads/").headers["Location"]
            response = session.patch(server.url + location, data=blob[:7 * 1024 * 1024], headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 202, response.text
            response = session.put(server.url + response.headers["Location"], params={"digest": digest}, data=blob[7 * 1024 * 1024:],
                                   headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 201, response.text
            # Every byte comes back intact although the first download of each blob broke halfway.
            got = session.get(f"{server.url}/v2/s3/faults/blobs/{digest}")
            assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == digest[7:]
            out = tmp_path / "pulled"
            skopeo("copy", "--src-tls-verify=false", "--src-creds", server.creds, f"docker://{server.host}/s3/faults:1", f"oci:{out}:x")
            assert manifest_of(f"{out}:x")["layers"] == manifest_of(small_image)["layers"]
            assert faulty.state["throttled"] >= 10 and faulty.state["cut"] >= 2, faulty.state
            assert "S3 request failed; retrying" in server.log_text() and "S3 download interrupted; resuming" in server.log_text()
            # Nothing half-written is visible: the bucket holds whole blobs and no upload leftovers.
            assert bucket_objects(s3, "registry/uploads/") == {}
            for key, size in bucket_objects(s3, "registry/blobs/").items():
                body = s3["client"].get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
                assert len(body) == size and hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1]
        finally:
            assert server.stop() == 0
    finally:
        faulty.close()


def test_a_part_that_cannot_be_stored_loses_no_acknowledged_byte(wharf_bin, tmp_path, s3):
    """S3 refuses a part for good (one attempt allowed): the PATCH fails, and the bytes acknowledged
    before it are still there for the client's retry (the writer must not put later bytes at the
    failed part's offset, over the acknowledged tail it was rewriting)."""
    faulty = FaultyS3(s3["endpoint"])
    faulty.state["throttle_every"] = 0
    faulty.state["cut_downloads"] = False
    try:
        config = s3_config(tmp_path, {**s3, "endpoint": faulty.endpoint}, extra="    maximumAttempts: 1\n")
        server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
        try:
            blob = os.urandom(9 * 1024 * 1024)
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            session = requests.Session()
            session.auth = server.auth
            location = session.post(f"{server.url}/v2/s3/refused/blobs/uploads/").headers["Location"]
            third = 3 * 1024 * 1024
            response = session.patch(server.url + location, data=blob[:third], headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 202, response.text
            location = response.headers["Location"]
            # The next PATCH rewrites the 3 MiB tail together with new bytes as a 5 MiB part: refused.
            faulty.state["fail_upload_puts"] = 1
            failed = session.patch(server.url + location, data=blob[third:2 * third], headers={"Content-Type": "application/octet-stream"})
            assert failed.status_code >= 500 and faulty.state["failed"] == 1, failed.text
            status = session.get(server.url + location)
            assert status.status_code == 204 and status.headers["Range"] == f"0-{third - 1}", status.headers
            response = session.patch(server.url + location, data=blob[third:2 * third], headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 202, response.text
            response = session.put(server.url + response.headers["Location"], params={"digest": digest}, data=blob[2 * third:],
                                   headers={"Content-Type": "application/octet-stream"})
            assert response.status_code == 201, response.text
            assert hashlib.sha256(session.get(f"{server.url}/v2/s3/refused/blobs/{digest}").content).hexdigest() == digest[7:]
        finally:
            assert server.stop() == 0
    finally:
        faulty.close()
