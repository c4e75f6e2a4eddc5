"""The server on PostgreSQL: one node, then two nodes sharing the database and the storage folder."""

import json
import time

import requests

from conftest import Wharf, inspect_raw, skopeo


def test_two_nodes_share_postgres_and_storage(wharf_bin, tmp_path, postgres_url, small_image):
    storage = tmp_path / "shared-storage"
    config = tmp_path / "node.yml"
    # Short cache lifetime: another node's tag move shows up within a second.
    # Nodes of one registry share the master key that seals the database's secrets.
    config.write_text(f"database:\n  url: {postgres_url}\nstorage:\n  filesystem:\n    path: {storage}\nregistry:\n  cacheTTLSeconds: 1\n"
                      f"secrets:\n  masterKeyFile: {tmp_path / 'master.key'}\n")
    first = Wharf(wharf_bin, tmp_path / "node1", extra_args=["--config", str(config)]).start()
    second = Wharf(wharf_bin, tmp_path / "node2", extra_args=["--config", str(config)]).start()
    try:
        # Push through one node, pull through the other.
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", first.creds, f"oci:{small_image}", f"docker://{first.host}/pg/app:1")
        raw = inspect_raw(f"docker://{second.host}/pg/app:1", second.creds)
        assert json.loads(raw)["layers"]
        skopeo("copy", "--src-tls-verify=false", "--src-creds", second.creds, f"docker://{second.host}/pg/app:1", f"oci:{tmp_path / 'out'}:x")
        # Both nodes share users and signing keys: a token from one works on the other.
        token = requests.get(f"{first.url}/auth/token", params={"service": "wharf", "scope": "repository:pg/app:pull"}, auth=first.auth).json()["token"]
        assert requests.get(f"{second.url}/v2/pg/app/manifests/1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # A tag moved on node 2 is seen by node 1 after the cache lifetime.
        before = requests.get(f"{first.url}/v2/pg/app/manifests/1", auth=first.auth).headers["Docker-Content-Digest"]
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", second.creds, "--format", "v2s2", f"oci:{small_image}", f"docker://{second.host}/pg/app:1")
        # Polled (the cache lifetime is 1 s here), with a deadline, instead of one fixed sleep.
        deadline = time.monotonic() + 30
        while True:
            after = requests.get(f"{first.url}/v2/pg/app/manifests/1", auth=first.auth, timeout=30).headers["Docker-Content-Digest"]
            if after != before or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert after != before, "node 1 still serves the old tag 30 s after node 2 moved it"
        tags = requests.get(f"{second.url}/v2/pg/app/tags/list", auth=second.auth).json()["tags"]
        assert tags == ["1"]
    finally:
        assert first.stop() == 0
        assert second.stop() == 0
