#!/usr/bin/env python3
"""What signed-only pulls cost (issue 17): manifest GET by tag in a namespace whose signature policy
is enforced (the image carries a valid cosign signature) against the same GET in a namespace with no
policy, on one Wharf, interleaved rounds, with ApacheBench (`ab`, Debian's apache2-utils). The
verdict is computed once and cached, so the ratio should stay at or above 0.9.

    python3 bench/signed_pulls.py --wharf .build/release/wharf [--seconds 10] [--rounds 3] [--connections 32]
"""

import argparse
import base64
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from test_signatures import attach, simple_signing  # noqa: E402  (the tests' independent cosign signer)

PASSWORD = "bench-admin-password"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


class Server:
    url = ""
    auth = ("admin", PASSWORD)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def push_image(server, repository, tag):
    from test_artifact_formats import push_image as push

    digest, body, _ = push(server, repository, tag)
    return digest, len(body)


def ab(url, token, seconds, connections):
    result = subprocess.run(["ab", "-q", "-t", str(seconds), "-n", "10000000", "-c", str(connections),
                             "-H", f"Authorization: Bearer {token}", "-H", f"Accept: {ACCEPT}", url],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"ab failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    out = result.stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if failed or non2xx:
        raise SystemExit(f"errors during the run:\n{out}")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wharf", default=".build/release/wharf")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wharf-signed-pulls-") as scratch:
        port = free_port()
        server = Server()
        server.url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen([options.wharf, "serve", "--listen", f"127.0.0.1:{port}", "--data", f"{scratch}/data"],
                                   env={**os.environ, "WHARF_ADMIN_PASSWORD": PASSWORD}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    if requests.get(server.url + "/v2/", timeout=1).status_code == 401:
                        break
                except requests.RequestException:
                    time.sleep(0.1)
            push_image(server, "plain/app", "v1")
            digest, size = push_image(server, "signed/app", "v1")
            key = ec.generate_private_key(ec.SECP256R1())
            payload = simple_signing(digest, "bench/signed/app")
            attach(server, "signed/app", digest, size, payload, key.sign(payload, ec.ECDSA(hashes.SHA256())))
            pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            policy = {"mode": "enforce", "keys": [{"name": "bench", "publicKey": pem}]}
            assert requests.put(f"{server.url}/api/v1/namespaces/signed/signature-policy", json=policy, auth=server.auth, timeout=30).ok
            token = requests.get(f"{server.url}/auth/token", auth=server.auth, timeout=30, params=[
                ("service", "wharf"), ("scope", "repository:plain/app:pull"), ("scope", "repository:signed/app:pull")]).json()["token"]
            results = {"plain": [], "signed": []}
            for _ in range(options.rounds):
                for name in ("plain", "signed"):
                    results[name].append(ab(f"{server.url}/v2/{name}/app/manifests/v1", token, options.seconds, options.connections))
            plain, signed = statistics.median(results["plain"]), statistics.median(results["signed"])
            print(json.dumps({"rounds": results, "plain_median_rps": plain, "signed_median_rps": signed,
                              "ratio": round(signed / plain, 3)}, indent=2))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
