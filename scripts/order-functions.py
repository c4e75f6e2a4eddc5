#!/usr/bin/env python3
"""Writes generated/hot-functions.order: the functions a release Wharf runs to start and to
serve the common requests, for lld's --symbol-ordering-file (see the `wharf` target in Package.swift).

Why: a 220 MB static binary's code is mapped from the file, and the kernel maps 64 KiB around every
page a process touches. With the functions it runs spread over 39 MB of .text, an idle Wharf had
20-24 MB of code resident; packed together first, they take a few MB.

How: the binary runs under valgrind's callgrind (DWARF stripped first: valgrind 3.19 cannot read
lld's), once with authentication off and once on, through start-up, a first administrator request,
pushes (monolithic, chunked, cross-repository mount), pulls by tag and digest, HEADs, tag lists,
the catalog, a token and bearer requests, and the usual errors. Every function callgrind saw and
the binary defines is written once: what start-up ran first (an idle server touches only that
part), then the administrator request, then the request paths. Names that later disappear from the code
are skipped by the linker, so a stale file costs only locality; rerun this after large changes:

    scripts/order-functions.sh [path/to/release/wharf]
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench  # noqa: E402  (the benchmark's helpers: free ports, the small test image, the password)

OUTPUT = ROOT / "generated" / "hot-functions.order"


def wait_ready(url):
    deadline = time.monotonic() + 300
    while True:
        try:
            requests.get(url + "/v2/", timeout=10)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def first_user(url):
    """An administrator's first request: the user the other requests are made as."""
    line = subprocess.run(["htpasswd", "-nbB", "bench", bench.PASSWORD], capture_output=True, text=True, check=True).stdout.strip()
    response = requests.post(f"{url}/api/v1/users", auth=("admin", bench.PASSWORD),
                             json={"name": "bench", "passwordHash": line.split(":", 1)[1], "admin": True})
    assert response.status_code == 201, response.text


def drive(url, auth):
    """The requests every deployment serves; asserts each answer so a broken run cannot pass."""
    session = requests.Session()
    if auth:
        session.auth = ("bench", bench.PASSWORD)
    digest, manifest = bench.push_small_image(session, url, "order/app", "v1", "x")
    accept = {"Accept": bench.OCI_MANIFEST}
    for reference in ("v1", digest):
        assert session.get(f"{url}/v2/order/app/manifests/{reference}", headers=accept).status_code == 200
        assert session.head(f"{url}/v2/order/app/manifests/{reference}", headers=accept).status_code == 200
    layer = json.loads(manifest)["layers"][0]["digest"]
    assert session.get(f"{url}/v2/order/app/blobs/{layer}").status_code == 200
    assert session.head(f"{url}/v2/order/app/blobs/{layer}").status_code == 200

    blob = os.urandom(3 * bench.MiB)
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    def absolute(location):
        return location if location.startswith("http") else url + location

    location = session.post(f"{url}/v2/order/app/blobs/uploads/").headers["Location"]
    for i in range(3):
        chunk = blob[i * bench.MiB:(i + 1) * bench.MiB]
        response = session.patch(absolute(location), data=chunk, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{i * bench.MiB}-{(i + 1) * bench.MiB - 1}"})
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
    response = session.put(absolute(location) + ("&" if "?" in location else "?") + f"digest={blob_digest}")
    assert response.status_code == 201, response.text
    assert session.get(f"{url}/v2/order/app/blobs/{blob_digest}").status_code == 200
    assert session.post(f"{url}/v2/order/other/blobs/uploads/?mount={blob_digest}&from=order/app").status_code == 201
    assert session.put(f"{url}/v2/order/app/manifests/{digest}?tag=v2&tag=v3", data=manifest,
                       headers={"Content-Type": bench.OCI_MANIFEST}).status_code == 201
    for path in ("/v2/order/app/tags/list", "/v2/order/app/tags/list?n=1", "/v2/_catalog", "/v2/_catalog?n=1"):
        assert session.get(url + path).status_code == 200
    assert session.get(f"{url}/v2/order/app/manifests/missing", headers=accept).status_code == 404
    assert session.get(f"{url}/v2/order/app/blobs/sha256:{'0' * 64}").status_code == 404
    assert session.delete(f"{url}/v2/order/app/manifests/v3").status_code == 202
    if auth:
        token = requests.get(f"{url}/auth/token", params={"service": "wharf", "scope": "repository:order/app:pull,push"},
                             auth=("bench", bench.PASSWORD)).json()["token"]
        bearer = requests.Session()
        bearer.headers["Authorization"] = f"Bearer {token}"
        assert bearer.get(f"{url}/v2/order/app/manifests/v1", headers=accept).status_code == 200
        assert bearer.get(f"{url}/v2/order/app/blobs/{layer}").status_code == 200
        assert requests.get(f"{url}/v2/order/app/tags/list").status_code == 401
        assert requests.get(f"{url}/v2/order/app/tags/list", auth=("bench", "wrong")).status_code == 401


def profile(binary, work, auth):
    """Runs the binary under callgrind through start-up, `first_user` and `drive`; returns the
    function names callgrind saw in each of these stages."""
    port = bench.free_port()
    output = work / f"callgrind-{auth}.out"
    config = work / "wharf.yml"
    config.write_text("log:\n  level: error\n")
    env = dict(os.environ, WHARF_ADMIN_PASSWORD=bench.PASSWORD, WHARF_AUTH_ENABLED="true" if auth else "false")
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no", "--compress-pos=no",
         f"--callgrind-out-file={output}", binary, "serve", "--listen", f"127.0.0.1:{port}",
         "--data", work / f"data-{auth}", "--config", config],
        stdout=subprocess.DEVNULL, stderr=open(work / f"valgrind-{auth}.log", "w"), env=env)
    url = f"http://127.0.0.1:{port}"

    def dump():  # callgrind writes what ran so far to <output>.<n> and starts counting afresh
        subprocess.run(["callgrind_control", "--dump", str(process.pid)], capture_output=True, check=True)

    try:
        wait_ready(url)
        dump()
        if auth:
            first_user(url)
            dump()
        drive(url, auth)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    stages = []
    for path in sorted(work.glob(f"callgrind-{auth}.out.*"), key=lambda p: int(p.suffix[1:])) + [output]:
        # callgrind marks recursion depth as name'2
        stages.append([line[3:].split("'", 1)[0] for line in path.read_text().splitlines() if line.startswith("fn=")])
    return stages


def main():
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".build" / "release" / "wharf").resolve()
    with tempfile.TemporaryDirectory(prefix="wharf-order-") as directory:
        work = Path(directory)
        stripped = work / "wharf"
        subprocess.run(["objcopy", "--strip-debug", binary, stripped], check=True)
        defined = set()
        for line in subprocess.run(["nm", "--defined-only", stripped], capture_output=True, text=True, check=True).stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tTwW":
                defined.add(parts[2])
        ordered, seen = [], set()
        on, off = profile(stripped, work, True), profile(stripped, work, False)
        # Start-up of both modes first (what an idle server keeps resident), then the first
        # administrator request, then the request paths.
        for names in (on[0], off[0], on[1], on[2], off[1]):
            for name in names:
                if name in defined and name not in seen:
                    seen.add(name)
                    ordered.append(name)
    assert len(ordered) > 1000, f"only {len(ordered)} functions seen: is this a release Wharf?"
    OUTPUT.write_text("\n".join(ordered) + "\n")
    print(f"{OUTPUT.relative_to(ROOT)}: {len(ordered)} functions")


if __name__ == "__main__":
    main()
