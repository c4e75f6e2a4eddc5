"""`wharf scan` and `wharf advisories` against real images: a debootstrapped Debian 12, the Alpine
images of ../shared/testdata, and a site-packages tree of old wheels from PyPI. Results are checked
against independent oracles: dpkg-query over the same root filesystem, Python's `packaging` over the
same OSV records, and the CycloneDX and SPDX libraries' own validators."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import CACHE, require_testdata, run, umoci_image, write_tree


# Runs a command from a small fresh Python and prints its peak RSS (KiB) last on stderr. Measured from
# pytest itself, the child's ru_maxrss starts at pytest's own high-water mark (a vfork'd child shares
# its parent's memory until exec, and the kernel carries that peak across exec): late in a full run
# pytest holds about 200 MiB, which a 50 MiB scan then "used".
PEAK_RSS = [sys.executable, "-c", (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(usage.ru_maxrss, file=sys.stderr)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n")]


def wharf_json(wharf_bin, *args):
    output = run([wharf_bin, *args]).stdout
    return json.loads(output)


@pytest.fixture(scope="module")
def advisory_db(wharf_bin, tmp_path_factory):
    path = tmp_path_factory.mktemp("advisories") / "osv.sqlite"
    osv, secdb = require_testdata("osv"), require_testdata("alpine-secdb")
    started = time.perf_counter()
    result = run([wharf_bin, "advisories", "import", str(osv), str(secdb), "--db", str(path)])
    print(f"import of the test advisories: {time.perf_counter() - started:.2f} s\n{result.stdout}")
    return path


def test_debian_packages_match_dpkg_query(wharf_bin, debian_image, debian_rootfs, advisory_db):
    """Every installed package dpkg knows, with its version and source, and nothing else."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.run([*PEAK_RSS, wharf_bin, "scan", f"oci:{debian_image}", "--format", "json", "--db", str(advisory_db)],
                                 stdout=output, stderr=subprocess.PIPE)
        assert process.returncode == 0, process.stderr.decode()
        peak = int(process.stderr.decode().strip().splitlines()[-1])
        output.seek(0)
        report = json.loads(output.read())
    elapsed = time.perf_counter() - started
    inventory = report["inventory"]
    assert inventory["operatingSystem"]["id"] == "debian"
    assert inventory["operatingSystem"]["versionID"] == "12"
    found = {(p["name"], p["version"], p.get("sourceName"), p.get("sourceVersion"))
             for p in inventory["packages"] if p["kind"] == "dpkg"}
    listing = run(["dpkg-query", f"--admindir={debian_rootfs}/var/lib/dpkg", "-W",
                   "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${source:Package}\t${source:Version}\n"]).stdout
    expected = set()
    for line in listing.splitlines():
        status, name, version, source, source_version = line.split("\t")
        if status.startswith("ii"):
            expected.add((name, version, source, source_version))
    assert len(expected) > 80
    assert found == expected
    # A stock Debian holds no secrets: the detector must not cry wolf on a real operating system.
    assert inventory["secrets"] == []
    print(f"Debian 12 minbase: {len(found)} packages, scan {elapsed:.2f} s (debug build), peak RSS {peak / 1024:.0f} MiB")
    # The scan keeps only catalog files in memory (a bound on streaming, not a speed figure).
    assert peak / 1024 < 200


def test_alpine_images_against_secdb(wharf_bin, advisory_db):
    for name, release in (("alpine-310.tar.gz", "3.10.4"), ("alpine-311.tar.gz", "3.11.5")):
        archive = require_testdata("images", name)
        report = wharf_json(wharf_bin, "scan", f"docker-archive:{archive}", "--format", "json", "--db", str(advisory_db))
        assert report["inventory"]["operatingSystem"]["versionID"] == release
        assert len(report["inventory"]["packages"]) == 14
        # ../shared/testdata/README.md: nothing is vulnerable (two packages sit exactly at the fix).
        assert report["findings"] == []
        assert report["inventory"]["secrets"] == []
    table = run([wharf_bin, "scan", f"docker-archive:{require_testdata('images', 'alpine-310.tar.gz')}", "--db", str(advisory_db)]).stdout
    assert "alpine 3.10.4, 14 packages" in table and "0 vulnerabilities" in table


OLD_WHEELS = ["requests==2.19.0", "urllib3==1.24.1", "idna==2.7", "chardet==3.0.4", "certifi==2018.4.16", "Jinja2==2.10"]


@pytest.fixture(scope="module")
def python_image(tmp_path_factory):
    """An image whose only content is a site-packages tree of old wheels installed by pip."""
    cached = CACHE / "python-wheels-layout"
    if not (cached / ".complete").exists():
        work = tmp_path_factory.mktemp("wheels")
        wheels = work / "wheels"
        run(["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *OLD_WHEELS], timeout=600)
        root = work / "root"
        site = root / "usr/local/lib/python3.11/site-packages"
        run(["python3", "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--root-user-action=ignore",
             "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))])
        write_tree(root, {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n'})
        umoci_image(str(cached), "wheels", [root])
        (cached / ".complete").write_text("ok")
    return f"{cached}:wheels"


def osv_affects(record, name, version):
    """OSV's evaluation in Python with `packaging`: an independent oracle for the matcher."""
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    installed = Version(version)
    for affected in record.get("affected", []):
        package = affected.get("package", {})
        if package.get("ecosystem") != "PyPI" or canonicalize_name(package.get("name", "")) != canonicalize_name(name):
            continue
        if any(_equal(v, installed) for v in affected.get("versions", [])):
            return True
        for rng in affected.get("ranges", []):
            if rng["type"] != "ECOSYSTEM":
                continue
            events = sorted(rng["events"], key=lambda e: (Version("0") if e.get("introduced") == "0" else
                                                          _version(next(iter(e.values()))) or Version("0")))
            inside = False
            for event in events:
                try:
                    if "introduced" in event and (event["introduced"] == "0" or installed >= Version(event["introduced"])):
                        inside = True
                    elif "fixed" in event and installed >= Version(event["fixed"]):
                        inside = False
                    elif "last_affected" in event and installed > Version(event["last_affected"]):
                        inside = False
                except InvalidVersion:
                    continue
            if inside:
                return True
    return False


def _version(text):
    from packaging.version import InvalidVersion, Version
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _equal(text, installed):
    v = _version(text)
    return v is not None and v == installed


def test_python_wheels_findings_match_the_oracle(wharf_bin, python_image, advisory_db):
    report = wharf_json(wharf_bin, "scan", f"oci:{python_image}", "--format", "json", "--db", str(advisory_db))
    packages = {(p["name"].lower(), p["version"]) for p in report["inventory"]["packages"] if p["kind"] == "python"}
    assert packages == {tuple(w.lower().split("==")) for w in OLD_WHEELS}
    reported = {}
    for finding in report["findings"]:
        for identifier in [finding["id"], *finding["aliases"]]:
            reported[(finding["packageName"].lower(), identifier)] = finding
    expected = set()
    for path in sorted(require_testdata("osv", "PyPI").glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("withdrawn"):
            continue
        for name, version in packages:
            if osv_affects(record, name, version):
                expected.add((name, record["id"]))
    assert len(expected) >= 5, expected
    # No false negative: every record the oracle says applies is reported (under its id or as an alias).
    missing = expected - set(reported)
    assert not missing, f"not reported: {sorted(missing)}"
    # Every positive explained: each finding carries at least one record the oracle agrees with.
    for finding in report["findings"]:
        identifiers = {(finding["packageName"].lower(), i) for i in [finding["id"], *finding["aliases"]]}
        assert identifiers & expected, f"unexplained finding {finding['id']} in {finding['packageName']}"
    requests_findings = [f for f in report["findings"] if f["packageName"].lower() == "requests"]
    assert any(f["id"] == "CVE-2018-18074" and f["fixedVersion"] == "2.20.0" for f in requests_findings), requests_findings
    # --fail-on: exit status 3 when a finding reaches the threshold.
    status = subprocess.run([wharf_bin, "scan", f"oci:{python_image}", "--db", str(advisory_db), "--fail-on", "low"],
                            capture_output=True, text=True).returncode
    assert status == 3


def test_sboms_validate_with_the_formats_own_libraries(wharf_bin, python_image, advisory_db, tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    cyclonedx = run([wharf_bin, "scan", f"oci:{python_image}", "--format", "cyclonedx", "--db", str(advisory_db)]).stdout
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(cyclonedx)
    assert errors is None, errors
    document = json.loads(cyclonedx)
    purls = {c.get("purl") for c in document["components"]}
    assert "pkg:pypi/requests@2.19.0" in purls
    assert any(v["id"] == "CVE-2018-18074" for v in document["vulnerabilities"])

    spdx_path = tmp_path / "image.spdx.json"
    spdx_path.write_text(run([wharf_bin, "scan", f"oci:{python_image}", "--format", "spdx"]).stdout)
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    messages = validate_full_spdx_document(parse_file(str(spdx_path)))
    assert messages == [], [m.validation_message for m in messages]


def test_malformed_inputs_get_clear_errors(wharf_bin, tmp_path):
    bogus = tmp_path / "not-an-archive.tar"
    bogus.write_bytes(b"\x00" * 2048)
    result = subprocess.run([wharf_bin, "scan", f"docker-archive:{bogus}", "--packages-only"], capture_output=True, text=True)
    assert result.returncode != 0 and "no manifest.json" in result.stderr
    result = subprocess.run([wharf_bin, "scan", f"oci:{tmp_path}/missing:tag", "--packages-only"], capture_output=True, text=True)
    assert result.returncode != 0 and "index.json" in result.stderr
    result = subprocess.run([wharf_bin, "scan", f"docker-archive:{require_testdata('images', 'alpine-310.tar.gz')}",
                             "--db", str(tmp_path / "none.sqlite")], capture_output=True, text=True)
    assert result.returncode != 0 and "wharf advisories import" in result.stderr


def test_secrets_in_layers_and_config_are_reported_redacted(wharf_bin, tmp_path):
    key_id = "AKIA" + "IOSFODNN7" + "EXAMPLE"
    secret = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
    base, top = tmp_path / "base", tmp_path / "top"
    write_tree(base, {"root/.aws/credentials": f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n",
                      "etc/os-release": "ID=alpine\nVERSION_ID=3.19.1\n"})
    write_tree(top, {"srv/app.txt": "nothing here\n"})
    (top / "root" / ".aws").mkdir(parents=True)
    layout = umoci_image(str(tmp_path / "layout"), "leaky", [base, top], ["--config.env", f"GITHUB_TOKEN=ghp_{'a1B2c3D4e5' * 3}F6g7H8"])
    # The credentials file is deleted in a later build step, but its layer still ships it.
    run(["umoci", "raw", "add-layer", "--image", layout, str(_whiteout_tar(tmp_path))])
    report = wharf_json(wharf_bin, "scan", f"oci:{layout}", "--format", "json", "--packages-only")
    assert report["inventory"]["secrets"] == []  # --packages-only skips secret detection
    result = subprocess.run([wharf_bin, "scan", f"oci:{layout}", "--format", "json", "--db", "/nonexistent", "--no-secrets"],
                            capture_output=True, text=True)
    assert result.returncode != 0  # a vulnerability scan needs the database
    table = run([wharf_bin, "scan", f"oci:{layout}", "--packages-only"]).stdout
    assert key_id not in table
    full = subprocess.run([wharf_bin, "scan", f"oci:{layout}", "--format", "json", "--db", str(tmp_path / "empty.sqlite")],
                          capture_output=True, text=True)
    assert "wharf advisories import" in full.stderr
    # With a database (even an empty one), secrets and vulnerabilities are reported together.
    empty_source = tmp_path / "no-advisories"
    empty_source.mkdir()
    run([wharf_bin, "advisories", "import", str(empty_source), "--db", str(tmp_path / "empty.sqlite")])
    report = wharf_json(wharf_bin, "scan", f"oci:{layout}", "--format", "json", "--db", str(tmp_path / "empty.sqlite"))
    found = {(s["location"], s["rule"]) for s in report["inventory"]["secrets"]}
    assert found == {("/root/.aws/credentials", "aws-access-key-id"), ("/root/.aws/credentials", "aws-secret-access-key"),
                     ("config:Env", "github-token")}
    text = json.dumps(report)
    assert key_id not in text and secret not in text
    status = subprocess.run([wharf_bin, "scan", f"oci:{layout}", "--db", str(tmp_path / "empty.sqlite"), "--fail-on", "critical"],
                            capture_output=True, text=True).returncode
    assert status == 3


def _whiteout_tar(tmp_path):
    """A layer deleting /root/.aws/credentials with a whiteout file."""
    import tarfile
    path = tmp_path / "whiteout.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("root/.aws/.wh.credentials")
        tar.addfile(info)
    return path


# ---- Scanning inside the registry -----------------------------------------------------------------


@pytest.fixture(scope="module")
def scanning_wharf(wharf_bin, tmp_path_factory, advisory_db):
    """A server whose scanner uses the test advisories, plus a record the test adds for musl."""
    from conftest import Wharf

    base = tmp_path_factory.mktemp("scanning")
    extra = base / "musl.json"
    extra.write_text(json.dumps({
        "id": "WHARF-TEST-MUSL", "modified": "2026-01-01T00:00:00Z", "aliases": ["CVE-2099-0002"],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
        "affected": [{"package": {"ecosystem": "Alpine:v3.10", "name": "musl"},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1.22-r4"}]}]}],
    }))
    database = base / "osv.sqlite"
    run([wharf_bin, "advisories", "import", str(require_testdata("alpine-secdb")), str(extra), "--db", str(database)])
    config = base / "wharf.yml"
    config.write_text(f"scanner:\n  database: {database}\n  workers: 2\n")
    server = Wharf(wharf_bin, base / "data", extra_args=["--config", str(config)]).start()
    yield server
    assert server.stop() == 0, server.log_text()


def wait_for_scan(server, repository, reference, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = server.api("GET", f"/repositories/{repository}/scan", params={"reference": reference})
        if response.status_code == 200 and response.json()["status"] in ("COMPLETE", "FAILED"):
            return response.json()
        time.sleep(0.5)
    raise AssertionError(f"the scan of {repository}:{reference} did not finish: {response.status_code} {response.text}")


def push_alpine(server, tmp_path, name, repository, tag):
    archive = tmp_path / name.replace(".gz", "")
    archive.write_bytes(subprocess.run(["gzip", "-dc", str(require_testdata("images", name))], capture_output=True, check=True).stdout)
    run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
         f"docker-archive:{archive}", f"docker://{server.host}/{repository}:{tag}"])


def test_scan_on_demand_through_the_api(scanning_wharf, tmp_path):
    server = scanning_wharf
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "scan/alpine", "3.10")
    push_alpine(server, tmp_path, "alpine-311.tar.gz", "scan/alpine", "3.11")
    assert server.api("GET", "/repositories/scan/alpine/scan", params={"reference": "3.10"}).status_code == 404
    for tag in ("3.10", "3.11"):
        response = server.api("POST", "/repositories/scan/alpine/scan", params={"reference": tag})
        assert response.status_code == 202, response.text
        assert response.json()["status"] in ("PENDING", "IN_PROGRESS", "COMPLETE")
    old = wait_for_scan(server, "scan/alpine", "3.10")
    assert old["status"] == "COMPLETE", old
    platform = old["result"]["platforms"][0]
    assert platform["inventory"]["operatingSystem"]["versionID"] == "3.10.4"
    assert len(platform["inventory"]["packages"]) == 14
    # The test's record: musl and musl-utils (both from origin musl) at 1.1.22-r3, fixed in -r4.
    assert sorted(f["packageName"] for f in platform["findings"]) == ["musl", "musl-utils"]
    assert all(f["id"] == "CVE-2099-0002" and f["fixedVersion"] == "1.1.22-r4" for f in platform["findings"])
    assert old["severityCounts"] == {"CRITICAL": 2}
    new = wait_for_scan(server, "scan/alpine", "3.11")
    assert new["status"] == "COMPLETE" and new["result"]["platforms"][0]["findings"] == []
    # Errors: unknown references and repositories, a missing reference parameter.
    assert server.api("POST", "/repositories/scan/alpine/scan", params={"reference": "nope"}).status_code == 404
    assert server.api("POST", "/repositories/scan/alpine/scan").status_code == 400
    assert server.api("GET", "/repositories/scan/alpine/scan", params={"reference": "3.10"}, auth=("nobody", "x")).status_code == 401


def test_scan_on_push_from_the_ecr_setting(scanning_wharf, tmp_path):
    import boto3

    server = scanning_wharf
    key = server.api("POST", "/users/admin/access-keys", json={"description": "scan"}).json()
    ecr = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])
    ecr.create_repository(repositoryName="scan/onpush", imageScanningConfiguration={"scanOnPush": True})
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "scan/onpush", "v1")
    result = wait_for_scan(server, "scan/onpush", "v1")
    assert result["status"] == "COMPLETE" and result["severityCounts"] == {"CRITICAL": 2}
    # Pushing the same image again (another tag) keeps the completed result rather than reading it again.
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "scan/onpush", "v1-again")
    again = server.api("GET", "/repositories/scan/onpush/scan", params={"reference": "v1-again"}).json()
    assert again["status"] == "COMPLETE" and again["completedAt"] == result["completedAt"]
    # Without the setting nothing is queued (results are per digest, so this image must be new).
    ecr.create_repository(repositoryName="scan/manual")
    fresh = tmp_path / "fresh"
    write_tree(fresh, {"etc/os-release": "ID=alpine\nVERSION_ID=3.10.4\n", "unique": os.urandom(64)})
    layout = umoci_image(str(tmp_path / "layout"), "v1", [fresh])
    run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
         f"oci:{layout}", f"docker://{server.host}/scan/manual:v1"])
    # Scan on push queues the job inside the push itself, so once the push is acknowledged, none is queued.
    assert server.api("GET", "/repositories/scan/manual/scan", params={"reference": "v1"}).status_code == 404

    # ECR's scan operations, as boto3 and its waiter use them.
    import botocore.exceptions
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        ecr.describe_image_scan_findings(repositoryName="scan/manual", imageId={"imageTag": "v1"})
    assert raised.value.response["Error"]["Code"] == "ScanNotFoundException"
    started = ecr.start_image_scan(repositoryName="scan/manual", imageId={"imageTag": "v1"})
    assert started["imageScanStatus"]["status"] == "IN_PROGRESS"
    ecr.get_waiter("image_scan_complete").wait(repositoryName="scan/onpush", imageId={"imageTag": "v1"},
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ecr.get_waiter("image_scan_complete").wait(repositoryName="scan/manual", imageId={"imageTag": "v1"},
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    with pytest.raises(botocore.exceptions.ClientError) as raised:  # ECR's rescan quota
        ecr.start_image_scan(repositoryName="scan/onpush", imageId={"imageTag": "v1"})
    assert raised.value.response["Error"]["Code"] == "LimitExceededException"
    findings = ecr.describe_image_scan_findings(repositoryName="scan/onpush", imageId={"imageTag": "v1"}, maxResults=1)
    assert findings["imageScanStatus"]["status"] == "COMPLETE"
    assert findings["imageScanFindings"]["findingSeverityCounts"] == {"CRITICAL": 2}
    assert len(findings["imageScanFindings"]["findings"]) == 1 and "nextToken" in findings
    first = findings["imageScanFindings"]["findings"][0]
    assert first["name"] == "CVE-2099-0002" and first["severity"] == "CRITICAL"
    attributes = {a["key"]: a["value"] for a in first["attributes"]}
    assert attributes["package_version"] == "1.1.22-r3" and attributes["fixed_version"] == "1.1.22-r4"
    rest = ecr.describe_image_scan_findings(repositoryName="scan/onpush", imageId={"imageTag": "v1"}, nextToken=findings["nextToken"])
    assert len(rest["imageScanFindings"]["findings"]) == 1 and "nextToken" not in rest
    # The repository also holds the image's SBOM artifacts (untagged referrers): ask for the tag.
    detail = ecr.describe_images(repositoryName="scan/onpush", imageIds=[{"imageTag": "v1"}])["imageDetails"][0]
    assert detail["imageScanStatus"]["status"] == "COMPLETE"
    assert detail["imageScanFindingsSummary"]["findingSeverityCounts"] == {"CRITICAL": 2}
    clean = ecr.describe_image_scan_findings(repositoryName="scan/manual", imageId={"imageTag": "v1"})
    assert clean["imageScanFindings"]["findings"] == [] and clean["imageScanFindings"]["findingSeverityCounts"] == {}


def test_scan_without_a_database_fails_clearly(wharf, tmp_path):
    """The default server has no vulnerability database: the scan is FAILED with the reason."""
    push_alpine(wharf, tmp_path, "alpine-311.tar.gz", "nodb/alpine", "v1")
    assert wharf.api("POST", "/repositories/nodb/alpine/scan", params={"reference": "v1"}).status_code == 202
    result = wait_for_scan(wharf, "nodb/alpine", "v1")
    assert result["status"] == "FAILED" and "wharf advisories import" in result["description"]


def test_sbom_download_from_the_api(scanning_wharf, tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    server = scanning_wharf
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "scan/sbom", "v1")
    assert server.api("GET", "/repositories/scan/sbom/sbom", params={"reference": "v1"}).status_code in (200, 404)
    server.api("POST", "/repositories/scan/sbom/scan", params={"reference": "v1"})
    assert wait_for_scan(server, "scan/sbom", "v1")["status"] == "COMPLETE"
    response = server.api("GET", "/repositories/scan/sbom/sbom", params={"reference": "v1"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/vnd.cyclonedx+json"
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(response.text) is None
    document = response.json()
    assert len([c for c in document["components"] if c["type"] == "library"]) == 14
    assert {v["id"] for v in document["vulnerabilities"]} == {"CVE-2099-0002"}
    spdx = server.api("GET", "/repositories/scan/sbom/sbom", params={"reference": "v1", "format": "spdx"})
    assert spdx.status_code == 200 and spdx.headers["Content-Type"] == "application/spdx+json"
    path = tmp_path / "sbom.spdx.json"
    path.write_text(spdx.text)
    assert validate_full_spdx_document(parse_file(str(path))) == []
    assert server.api("GET", "/repositories/scan/sbom/sbom", params={"reference": "v1", "format": "xml"}).status_code == 400


def _pull(server, reference, creds, tmp_path):
    """skopeo copy out of the registry, as a deployment would pull; returns the completed process."""
    target = tmp_path / f"out-{time.monotonic_ns()}"
    return subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", creds,
                           f"docker://{server.host}/{reference}", f"oci:{target}:x"], capture_output=True, text=True, timeout=120)


def test_pull_gate_refuses_vulnerable_and_unscanned_images(scanning_wharf, tmp_path):
    import requests

    server = scanning_wharf
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "gate/app", "old")   # 2 CRITICAL (the test's musl record)
    push_alpine(server, tmp_path, "alpine-311.tar.gz", "gate/app", "new")   # clean
    fresh = tmp_path / "unscanned"
    write_tree(fresh, {"etc/os-release": "ID=alpine\nVERSION_ID=3.11.5\n", "unique": os.urandom(64)})
    run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
         f"oci:{umoci_image(str(tmp_path / 'layout'), 'v1', [fresh])}", f"docker://{server.host}/gate/app:unscanned"])
    for tag in ("old", "new"):
        server.api("POST", "/repositories/gate/app/scan", params={"reference": tag})
        assert wait_for_scan(server, "gate/app", tag)["status"] == "COMPLETE"
    assert _pull(server, "gate/app:old", server.creds, tmp_path).returncode == 0  # no policy yet

    # Bad policies are refused with the reason; only the namespace's admins may set one.
    assert server.api("GET", "/namespaces/gate/pull-policy").status_code == 404
    for body, words in [({"severity": "SEVERE"}, "severity"), ({}, "blocks nothing"), ({"severity": "INFORMATIONAL"}, "CRITICAL, HIGH"),
                        ({"severity": "HIGH", "allowlist": [{"id": "CVE-1", "expiresAt": "next week"}]}, "expiresAt"),
                        ({"severity": "HIGH", "allowlist": [{"id": " "}]}, "empty id")]:
        response = server.api("PUT", "/namespaces/gate/pull-policy", json=body)
        assert response.status_code == 400 and words in response.text, (body, response.text)
    assert server.api("POST", "/users", json={"name": "gatedev", "password": "gatedev-password-1"}).status_code == 201
    assert server.api("PUT", "/namespaces/gate/members/gatedev", json={"role": "developer"}).status_code == 204
    dev = ("gatedev", "gatedev-password-1")
    assert server.api("PUT", "/namespaces/gate/pull-policy", json={"severity": "LOW"}, auth=dev).status_code == 403

    policy = {"severity": "HIGH", "blockUnscanned": True}
    response = server.api("PUT", "/namespaces/gate/pull-policy", json=policy)
    assert response.status_code == 200 and response.json() == {**policy, "allowlist": []}
    assert server.api("GET", "/namespaces/gate/pull-policy", auth=dev).json()["severity"] == "HIGH"

    # The vulnerable image: skopeo fails with the policy's words; the raw response is OCI's DENIED.
    refused = _pull(server, "gate/app:old", "gatedev:gatedev-password-1", tmp_path)
    assert refused.returncode != 0 and "2 CRITICAL" in refused.stderr and "namespace 'gate'" in refused.stderr, refused.stderr
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"}
    raw = requests.get(f"{server.url}/v2/gate/app/manifests/old", auth=server.auth, headers=accept, timeout=30)
    assert raw.status_code == 403
    error = raw.json()["errors"][0]
    assert error["code"] == "DENIED" and "refuses HIGH or worse" in error["message"]
    detail = json.loads(error["detail"])
    assert detail == {"policy": "namespace:gate", "reason": "vulnerabilities", "severity": "HIGH", "blockUnscanned": True,
                      "counts": {"CRITICAL": 2}, "allowlisted": 0}
    # ECR's BatchGetImage obeys the same gate (ECR's own failure code for an image that cannot be read).
    import boto3
    key = server.api("POST", "/users/admin/access-keys", json={"description": "gate"}).json()
    ecr = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])
    batch = ecr.batch_get_image(repositoryName="gate/app", imageIds=[{"imageTag": "old"}, {"imageTag": "new"}])
    assert [i["imageId"]["imageTag"] for i in batch["images"]] == ["new"]
    assert batch["failures"][0]["failureCode"] == "ImageInaccessible" and "2 CRITICAL" in batch["failures"][0]["failureReason"]
    # HEAD is not a pull: clients may still check what a tag points to.
    assert requests.head(f"{server.url}/v2/gate/app/manifests/old", auth=server.auth, headers=accept, timeout=30).status_code == 200
    # The clean image passes; the unscanned one is refused as such.
    assert _pull(server, "gate/app:new", server.creds, tmp_path).returncode == 0
    unscanned = _pull(server, "gate/app:unscanned", server.creds, tmp_path)
    assert unscanned.returncode != 0 and "has not been scanned" in unscanned.stderr, unscanned.stderr

    # Robots with the scan or replicate permission pass the gate; a pull-only robot does not.
    robots = {}
    for name, actions in [("gate-scanner", ["pull", "scan"]), ("gate-replicator", ["pull", "replicate"]), ("gate-puller", ["pull"])]:
        created = server.api("POST", "/robots", json={"name": name, "permissions": [{"scope": "namespace", "name": "gate", "actions": actions}]})
        assert created.status_code == 201, created.text
        robots[name] = f"{created.json()['name']}:{created.json()['secret']}"
    assert _pull(server, "gate/app:old", robots["gate-scanner"], tmp_path).returncode == 0
    assert _pull(server, "gate/app:unscanned", robots["gate-replicator"], tmp_path).returncode == 0
    assert _pull(server, "gate/app:old", robots["gate-puller"], tmp_path).returncode != 0

    # An allowlist entry lets the image through until it expires; an expired one counts for nothing.
    future, past = "2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z"
    policy["allowlist"] = [{"id": "cve-2099-0002", "expiresAt": future, "reason": "musl is not reachable"}]
    assert server.api("PUT", "/namespaces/gate/pull-policy", json=policy).status_code == 200
    assert _pull(server, "gate/app:old", server.creds, tmp_path).returncode == 0
    policy["allowlist"][0]["expiresAt"] = past
    assert server.api("PUT", "/namespaces/gate/pull-policy", json=policy).status_code == 200
    expired = _pull(server, "gate/app:old", server.creds, tmp_path)
    assert expired.returncode != 0 and "2 CRITICAL" in expired.stderr

    # Refusals are in the audit log; deleting the policy opens the gate.
    events = server.api("GET", "/audit", params={"namespace": "gate", "action": "pull", "limit": 200}).json()
    assert any(e["result"] == "denied" and json.loads(e["detail"])["reason"] == "not-scanned" for e in events)
    assert server.api("DELETE", "/namespaces/gate/pull-policy", auth=dev).status_code == 403
    assert server.api("DELETE", "/namespaces/gate/pull-policy").status_code == 204
    assert _pull(server, "gate/app:old", server.creds, tmp_path).returncode == 0


def test_garbage_collection_removes_scans_of_deleted_images(scanning_wharf, tmp_path):
    server = scanning_wharf
    fresh = tmp_path / "doomed"
    write_tree(fresh, {"etc/os-release": "ID=alpine\nVERSION_ID=3.11.5\n", "unique": os.urandom(64)})
    run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
         f"oci:{umoci_image(str(tmp_path / 'layout'), 'v1', [fresh])}", f"docker://{server.host}/gc/doomed:v1"])
    server.api("POST", "/repositories/gc/doomed/scan", params={"reference": "v1"})
    digest = wait_for_scan(server, "gc/doomed", "v1")["digest"]
    run(["skopeo", "delete", "--tls-verify=false", "--creds", server.creds, f"docker://{server.host}/gc/doomed@{digest}"])
    report = server.api("POST", "/gc", params={"graceSeconds": "0"}).json()
    assert report["deletedScans"] >= 1, report


def test_sboms_are_attached_as_referrers(scanning_wharf, tmp_path):
    """What `oras discover` reads: the referrers API lists one CycloneDX and one SPDX SBOM per
    scanned image; a rescan of the same image keeps them, not piles up new ones."""
    import requests
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    server = scanning_wharf
    push_alpine(server, tmp_path, "alpine-311.tar.gz", "scan/referred", "v1")
    server.api("POST", "/repositories/scan/referred/scan", params={"reference": "v1"})
    digest = wait_for_scan(server, "scan/referred", "v1")["digest"]

    def referrers(**params):
        response = requests.get(f"{server.url}/v2/scan/referred/referrers/{digest}", auth=server.auth, params=params, timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
        return response.json()["manifests"]

    deadline = time.monotonic() + 30
    while len(referrers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    found = referrers()
    assert sorted(m["artifactType"] for m in found) == ["application/spdx+json", "application/vnd.cyclonedx+json"]
    assert all(m["annotations"]["dev.wharf.sbom.generator"] == "wharf" for m in found)
    assert [m["artifactType"] for m in referrers(artifactType="application/spdx+json")] == ["application/spdx+json"]
    cyclonedx = next(m for m in found if m["artifactType"] == "application/vnd.cyclonedx+json")
    manifest = requests.get(f"{server.url}/v2/scan/referred/manifests/{cyclonedx['digest']}", auth=server.auth, timeout=30,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert manifest["subject"]["digest"] == digest
    layer = manifest["layers"][0]
    document = requests.get(f"{server.url}/v2/scan/referred/blobs/{layer['digest']}", auth=server.auth, timeout=30)
    assert document.status_code == 200 and JsonStrictValidator(SchemaVersion.V1_5).validate_str(document.text) is None
    assert len([c for c in document.json()["components"] if c["type"] == "library"]) == 14
    # skopeo, a real client, reads the artifact too.
    assert json.loads(run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", server.creds,
                           f"docker://{server.host}/scan/referred@{cyclonedx['digest']}"]).stdout)["artifactType"] == \
        "application/vnd.cyclonedx+json"

    # A rescan right after a scan against the same database is refused (it would find the same),
    # unless a namespace admin forces it; the forced rescan of an unchanged image keeps the two SBOMs.
    before = sorted(m["digest"] for m in found)
    refused = server.api("POST", "/repositories/scan/referred/scan", params={"reference": "v1"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "TOOMANYREQUESTS" and "would find the same" in refused.text
    # The 202 comes after the job is queued (PENDING), and COMPLETE is written after the SBOMs are
    # attached: the next COMPLETE seen is the rescan's, with its SBOMs final.
    assert server.api("POST", "/repositories/scan/referred/scan", params={"reference": "v1", "force": "true"}).status_code == 202
    assert wait_for_scan(server, "scan/referred", "v1")["status"] == "COMPLETE"
    assert sorted(m["digest"] for m in referrers()) == before


MUSL_RECORD = {
    "id": "WHARF-TEST-MUSL", "modified": "2026-01-01T00:00:00Z", "aliases": ["CVE-2099-0002"],
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    "affected": [{"package": {"ecosystem": "Alpine:v3.10", "name": "musl"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1.22-r4"}]}]}],
}
HARMLESS_RECORD = {
    "id": "WHARF-TEST-OTHER", "modified": "2026-01-01T00:00:00Z",
    "affected": [{"package": {"ecosystem": "Alpine:v3.10", "name": "not-installed"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0-r0"}]}]}],
}


def database_state(server):
    response = server.api("GET", "/scanner/database")
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class AdvisoryServer:
    """A plain HTTP server on 127.0.0.1 serving a folder, counting 200 and 304 answers."""

    def __init__(self, folder):
        import functools
        import http.server
        import threading

        counts = self.counts = {"200": 0, "304": 0}

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                counts[str(int(code))] = counts.get(str(int(code)), 0) + 1

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_database_updates_from_urls_and_stored_results_are_rematched(wharf_bin, tmp_path):
    from conftest import Wharf

    folder = tmp_path / "feed"
    folder.mkdir()
    record = folder / "alpine-extra.json"
    record.write_text(json.dumps(HARMLESS_RECORD))
    feed = AdvisoryServer(folder)
    config = tmp_path / "wharf.yml"
    config.write_text(f"scanner:\n  database: {tmp_path / 'db' / 'osv.sqlite'}\n  updateURLs: ['{feed.url}/alpine-extra.json']\n"
                      "  updateIntervalSeconds: 1\n  publishDatabase: security/advisories:latest\n")
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        # The first check builds the database from the feed.
        first = wait_until(lambda: (database_state(server).get("summary") or {}).get("version") and database_state(server), 30, "the first import")
        assert first["summary"]["records"] == 1 and first["update"].get("lastError") is None
        assert first["summary"]["sources"] == [f"{feed.url}/alpine-extra.json"]

        def published():
            import hashlib
            import requests
            response = requests.get(f"{server.url}/v2/security/advisories/manifests/latest", auth=server.auth, timeout=30,
                                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            if response.status_code != 200:
                return None
            manifest = response.json()
            layer = requests.get(f"{server.url}/v2/security/advisories/blobs/{manifest['layers'][0]['digest']}", auth=server.auth, timeout=30)
            assert layer.status_code == 200 and f"sha256:{hashlib.sha256(layer.content).hexdigest()}" == manifest["layers"][0]["digest"]
            assert manifest["artifactType"] == "application/vnd.wharf.advisories.v1"
            return manifest["annotations"]["dev.wharf.advisories.version"]

        # The online side publishes each database it builds, for offline Wharfs to mirror.
        wait_until(lambda: published() == first["summary"]["version"], 30, "the published artifact")
        push_alpine(server, tmp_path, "alpine-310.tar.gz", "feed/alpine", "3.10")
        server.api("POST", "/repositories/feed/alpine/scan", params={"reference": "3.10"})
        scanned = wait_for_scan(server, "feed/alpine", "3.10")
        assert scanned["status"] == "COMPLETE" and scanned["severityCounts"] == {}

        # Unchanged: conditional requests answered 304, the database is not rebuilt.
        wait_until(lambda: feed.counts["304"] >= 3, 20, "three conditional checks")
        assert database_state(server)["summary"]["version"] == first["summary"]["version"]

        # The feed publishes the musl advisory: the database is rebuilt and the stored result re-matched,
        # without reading the image again.
        record.write_text(json.dumps([HARMLESS_RECORD, MUSL_RECORD][1]))
        os.utime(record, (time.time() + 5, time.time() + 5))
        updated = wait_until(lambda: (s := database_state(server))["summary"]["version"] != first["summary"]["version"] and s, 30, "the update")
        assert updated["summary"]["records"] == 1
        rematched = wait_until(lambda: (r := wait_for_scan(server, "feed/alpine", "3.10"))["severityCounts"] == {"CRITICAL": 2} and r, 30,
                               "the re-match")
        assert rematched["completedAt"] == scanned["completedAt"]
        assert rematched["result"]["rematchedAt"] and rematched["result"]["databaseVersion"] == updated["summary"]["version"]
        assert rematched["result"]["scannedAt"] == scanned["result"]["scannedAt"]
        wait_until(lambda: published() == updated["summary"]["version"], 30, "the newer published artifact")

        # A broken feed keeps the last good database and says why.
        record.write_text("{ not json")
        os.utime(record, (time.time() + 10, time.time() + 10))
        failed = wait_until(lambda: (s := database_state(server))["update"].get("lastError") and s, 30, "the failed update")
        assert "import" in failed["update"]["lastError"] and failed["summary"]["version"] == updated["summary"]["version"]
    finally:
        feed.close()
        assert server.stop() == 0, server.log_text()


def test_database_artifact_is_mirrored_in_and_installed(wharf_bin, tmp_path):
    """The air-gapped flow: export the database as an OCI artifact, copy it with skopeo into a Wharf
    that watches that tag; it installs the database and re-matches stored results."""
    from conftest import Wharf

    secdb = require_testdata("alpine-secdb")
    initial = tmp_path / "db" / "osv.sqlite"
    run([wharf_bin, "advisories", "import", str(secdb), "--db", str(initial)])
    config = tmp_path / "wharf.yml"
    config.write_text(f"scanner:\n  database: {initial}\n  databaseArtifact: security/advisories:latest\n")
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        push_alpine(server, tmp_path, "alpine-310.tar.gz", "mirror/alpine", "3.10")
        server.api("POST", "/repositories/mirror/alpine/scan", params={"reference": "3.10"})
        scanned = wait_for_scan(server, "mirror/alpine", "3.10")
        assert scanned["severityCounts"] == {}
        before = database_state(server)["summary"]["version"]

        # The connected side: a newer database, exported and pushed as an artifact.
        (tmp_path / "musl.json").write_text(json.dumps(MUSL_RECORD))
        newer = tmp_path / "newer" / "osv.sqlite"
        run([wharf_bin, "advisories", "import", str(secdb), str(tmp_path / "musl.json"), "--db", str(newer)])
        exported = run([wharf_bin, "advisories", "export", "--db", str(newer), "--oci", f"{tmp_path / 'layout'}:v2"]).stdout
        version = exported.split("version ")[1].split(")")[0]
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
             f"oci:{tmp_path / 'layout'}:v2", f"docker://{server.host}/security/advisories:latest"])
        installed = wait_until(lambda: (s := database_state(server))["summary"]["version"] == version and s, 40, "the installation")
        assert installed["summary"]["version"] != before and "security/advisories:latest@sha256:" in installed["update"]["installedArtifact"]
        rematched = wait_until(lambda: (r := wait_for_scan(server, "mirror/alpine", "3.10"))["severityCounts"] == {"CRITICAL": 2} and r, 30,
                               "the re-match")
        assert rematched["result"]["databaseVersion"] == version

        # An artifact whose layer is not a database is refused; the installed one stays.
        bogus = tmp_path / "bogus"
        blobs = bogus / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        import hashlib

        def blob(data):
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return f"sha256:{digest}", len(data)

        layer, layer_size = blob(os.urandom(4096))
        config_digest, config_size = blob(b"{}")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "artifactType": "application/vnd.wharf.advisories.v1",
                               "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": config_size},
                               "layers": [{"mediaType": "application/vnd.wharf.advisories.sqlite.v1", "digest": layer, "size": layer_size}]}).encode()
        manifest_digest, manifest_size = blob(manifest)
        (bogus / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (bogus / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
             "annotations": {"org.opencontainers.image.ref.name": "bad"}}]}))
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
             f"oci:{bogus}:bad", f"docker://{server.host}/security/advisories:latest"])
        refused = wait_until(lambda: (s := database_state(server))["update"].get("lastError") and s, 40, "the refusal")
        assert "security/advisories:latest" in refused["update"]["lastError"]
        assert refused["summary"]["version"] == version
        assert wait_for_scan(server, "mirror/alpine", "3.10")["severityCounts"] == {"CRITICAL": 2}
    finally:
        assert server.stop() == 0, server.log_text()


def test_wharf_scan_reads_images_from_a_registry(wharf_bin, scanning_wharf, advisory_db, tmp_path):
    """`wharf scan docker://…` against a real registry (Wharf with bearer tokens) gives what the same
    image gives from an OCI layout; bad references and missing credentials fail with the reason."""
    server = scanning_wharf
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "cli/alpine", "3.10")
    remote = wharf_json(wharf_bin, "scan", f"docker://{server.host}/cli/alpine:3.10", "--creds", server.creds,
                        "--db", str(advisory_db), "--format", "json")
    layout = tmp_path / "layout"
    run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", server.creds,
         f"docker://{server.host}/cli/alpine:3.10", f"oci:{layout}:x"])
    local = wharf_json(wharf_bin, "scan", f"oci:{layout}:x", "--db", str(advisory_db), "--format", "json")
    assert len(remote["inventory"]["packages"]) == 14
    assert remote["inventory"]["packages"] == local["inventory"]["packages"]
    assert remote["findings"] == local["findings"]
    assert remote["inventory"]["operatingSystem"]["versionID"] == "3.10.4"
    # By digest too, and through the environment's credentials.
    digest = json.loads(run(["skopeo", "inspect", "--tls-verify=false", "--creds", server.creds,
                             f"docker://{server.host}/cli/alpine:3.10"]).stdout)["Digest"]
    by_digest = subprocess.run([wharf_bin, "scan", f"docker://{server.host}/cli/alpine@{digest}", "--db", str(advisory_db),
                                "--format", "json"], capture_output=True, text=True, env={**os.environ, "WHARF_SCAN_CREDS": server.creds})
    assert by_digest.returncode == 0, by_digest.stderr
    assert json.loads(by_digest.stdout)["inventory"]["packages"] == local["inventory"]["packages"]
    for arguments, words in [
        ([f"docker://{server.host}/cli/alpine:3.10"], "--creds"),
        ([f"docker://{server.host}/cli/alpine:nope", "--creds", server.creds], "HTTP 404"),
        ([f"docker://{server.host}/cli/alpine:3.10", "--creds", "admin:wrong"], "refused"),
        (["docker://UPPER/case"], "expected docker://[HOST/]REPOSITORY"),
    ]:
        failed = subprocess.run([wharf_bin, "scan", *arguments, "--db", str(advisory_db)], capture_output=True, text=True)
        assert failed.returncode != 0 and words in failed.stderr, (arguments, failed.stderr)


def test_multi_platform_index_is_scanned_and_gated_per_platform(scanning_wharf, tmp_path):
    """An index of two platforms: each gets its own result (and SBOMs), and the pull gate judges the
    platform a client pulls, not the index."""
    import hashlib

    server = scanning_wharf
    layout = tmp_path / "multi"
    for name, arch in [("alpine-310.tar.gz", "amd64"), ("alpine-311.tar.gz", "arm64")]:
        archive = tmp_path / name.replace(".gz", "")
        archive.write_bytes(subprocess.run(["gzip", "-dc", str(require_testdata("images", name))], capture_output=True, check=True).stdout)
        run(["skopeo", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{layout}:{arch}"])
    index = json.loads((layout / "index.json").read_text())
    children = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d["digest"], "size": d["size"],
                 "platform": {"architecture": d["annotations"]["org.opencontainers.image.ref.name"], "os": "linux"}}
                for d in index["manifests"]]
    image_index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}).encode()
    (layout / "blobs" / "sha256" / hashlib.sha256(image_index).hexdigest()).write_bytes(image_index)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "size": len(image_index),
                               "digest": f"sha256:{hashlib.sha256(image_index).hexdigest()}",
                               "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(index))
    run(["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", "--dest-creds", server.creds,
         f"oci:{layout}:multi", f"docker://{server.host}/multi/app:latest"])

    assert server.api("POST", "/repositories/multi/app/scan", params={"reference": "latest"}).status_code == 202
    result = wait_for_scan(server, "multi/app", "latest")
    platforms = {p["platform"]: p for p in result["result"]["platforms"]}
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    assert {f["id"] for f in platforms["linux/amd64"]["findings"]} == {"CVE-2099-0002"} and platforms["linux/arm64"]["findings"] == []
    by_arch = {c["platform"]["architecture"]: c["digest"] for c in children}
    for arch, counts in [("amd64", {"CRITICAL": 2}), ("arm64", {})]:
        child = wait_for_scan(server, "multi/app", by_arch[arch])
        assert child["status"] == "COMPLETE" and child["severityCounts"] == counts and len(child["result"]["platforms"]) == 1
        import requests
        # The SBOMs are attached right after the results are stored: wait for them.
        wait_until(lambda: len(requests.get(f"{server.url}/v2/multi/app/referrers/{by_arch[arch]}", auth=server.auth,
                                            timeout=30).json()["manifests"]) == 2, 30, f"the {arch} SBOMs")

    assert server.api("PUT", "/namespaces/multi/pull-policy", json={"severity": "HIGH"}).status_code == 200
    clean = subprocess.run(["skopeo", "--override-arch", "arm64", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", server.creds,
                            f"docker://{server.host}/multi/app:latest", f"oci:{tmp_path / 'arm'}:x"], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    vulnerable = subprocess.run(["skopeo", "--override-arch", "amd64", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", server.creds,
                                 f"docker://{server.host}/multi/app:latest", f"oci:{tmp_path / 'amd'}:x"], capture_output=True, text=True)
    assert vulnerable.returncode != 0 and "2 CRITICAL" in vulnerable.stderr, vulnerable.stderr


def _push_vex_referrer(server, repository, subject_digest, subject_size, document):
    """An OpenVEX document attached to an image as `oras attach --artifact-type application/vnd.openvex+json` does."""
    from test_artifact_formats import descriptor, push_blob, push_manifest

    body = json.dumps(document).encode()
    empty = b"{}"
    push_blob(server, repository, body)
    push_blob(server, repository, empty)
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.openvex+json",
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor("application/vnd.openvex+json", body)],
        "subject": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": subject_digest, "size": subject_size},
    }
    digest = "sha256:" + hashlib.sha256(json.dumps(manifest, separators=(",", ":")).encode()).hexdigest()
    return push_manifest(server, repository, digest, manifest)


def test_vex_suppresses_exactly_what_it_names_for_the_gate_ecr_and_the_api(scanning_wharf, tmp_path):
    """OpenVEX attached to the image and CycloneDX VEX set for the namespace (issue 22)."""
    import boto3
    import requests

    server = scanning_wharf
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "vex/app", "old")   # musl and musl-utils: CVE-2099-0002, CRITICAL
    push_alpine(server, tmp_path, "alpine-310.tar.gz", "vex/other", "old")  # the same image in another repository
    for repository in ("vex/app", "vex/other"):
        server.api("POST", f"/repositories/{repository}/scan", params={"reference": "old"})
        assert wait_for_scan(server, repository, "old")["status"] == "COMPLETE"
    assert server.api("PUT", "/namespaces/vex/pull-policy", json={"severity": "HIGH"}).status_code == 200
    assert _pull(server, "vex/app:old", server.creds, tmp_path).returncode != 0
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    head = requests.head(f"{server.url}/v2/vex/app/manifests/old", auth=server.auth, headers=accept, timeout=30)
    digest, size = head.headers["Docker-Content-Digest"], int(head.headers["Content-Length"])

    # Attached to the image: not_affected for musl only (the subcomponent), so musl-utils still counts.
    encoded = digest.replace(":", "%3A")
    _push_vex_referrer(server, "vex/app", digest, size, {
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex/app-1", "author": "platform team",
        "timestamp": "2026-12-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": "WHARF-TEST-MUSL", "aliases": ["CVE-2099-0002"]},
                        "products": [{"@id": f"pkg:oci/app@{encoded}", "subcomponents": [{"@id": "pkg:apk/alpine/musl"}]}],
                        "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path"}]})
    # Pushing a referrer drops the gate's cached verdict on its subject: the change is immediate.
    scan = server.api("GET", "/repositories/vex/app/scan", params={"reference": "old"}).json()
    findings = {f["packageName"]: f for f in scan["result"]["platforms"][0]["findings"]}
    assert findings["musl"]["vex"]["status"] == "not_affected" and "app-1" in findings["musl"]["vex"]["source"]
    assert "vex" not in findings["musl-utils"]
    assert scan["severityCounts"] == {"CRITICAL": 1} and scan["suppressedCount"] == 1
    still = _pull(server, "vex/app:old", server.creds, tmp_path)
    assert still.returncode != 0 and "1 CRITICAL" in still.stderr, still.stderr
    # The referrer belongs to vex/app: the same image in vex/other is untouched.
    other = server.api("GET", "/repositories/vex/other/scan", params={"reference": "old"}).json()
    assert other["severityCounts"] == {"CRITICAL": 2} and other.get("suppressedCount", 0) == 0

    # For the namespace: a CycloneDX VEX resolving the vulnerability in musl-utils. Bad ones are refused.
    assert server.api("POST", "/users", json={"name": "vexdev", "password": "vexdev-password-1"}).status_code == 201
    assert server.api("PUT", "/namespaces/vex/members/vexdev", json={"role": "developer"}).status_code == 204
    cyclonedx = {"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
                 "serialNumber": "urn:uuid:0b7a3a55-5a5c-4bd4-9a43-43f3b9ae1f5e",
                 "vulnerabilities": [{"id": "CVE-2099-0002", "analysis": {"state": "resolved", "detail": "patched in our build"},
                                      "affects": [{"ref": "pkg:apk/alpine/musl-utils@1.1.22-r3"}]}]}
    assert server.api("PUT", "/namespaces/vex/vex/musl", json=cyclonedx, auth=("vexdev", "vexdev-password-1")).status_code == 403
    bad = server.api("PUT", "/namespaces/vex/vex/musl", json={"@context": "https://openvex.dev/ns/v0.2.0",
                                                              "statements": [{"vulnerability": {"name": "CVE-1"}, "status": "not_affected"}]})
    assert bad.status_code == 400 and "needs a justification" in bad.text, bad.text
    assert server.api("PUT", "/namespaces/vex/vex/bad name", json=cyclonedx).status_code in (400, 404)
    stored = server.api("PUT", "/namespaces/vex/vex/musl", json=cyclonedx)
    assert stored.status_code == 200 and stored.json()["statements"] == 1, stored.text
    listed = server.api("GET", "/namespaces/vex/vex", auth=("vexdev", "vexdev-password-1"))
    assert [d["name"] for d in listed.json()] == ["musl"]
    assert _pull(server, "vex/app:old", server.creds, tmp_path).returncode == 0
    scan = server.api("GET", "/repositories/vex/app/scan", params={"reference": "old"}).json()
    assert scan["severityCounts"] == {} and scan["suppressedCount"] == 2
    # vex/other: the namespace document covers musl-utils there too, but not musl.
    assert server.api("GET", "/repositories/vex/other/scan", params={"reference": "old"}).json()["severityCounts"] == {"CRITICAL": 1}

    # ECR reports what the gate counts; the audit log says why the pull passed.
    key = server.api("POST", "/users/admin/access-keys", json={"description": "vex"}).json()
    ecr = boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"])
    findings = ecr.describe_image_scan_findings(repositoryName="vex/app", imageId={"imageTag": "old"})["imageScanFindings"]
    assert findings["findings"] == [] and findings["findingSeverityCounts"] == {}
    other = ecr.describe_image_scan_findings(repositoryName="vex/other", imageId={"imageTag": "old"})["imageScanFindings"]
    assert [f["attributes"][0]["value"] for f in other["findings"]] == ["musl"]
    events = server.api("GET", "/audit", params={"namespace": "vex", "limit": 200}).json()
    passed = [json.loads(e["detail"]) for e in events if e["action"] == "pull" and e["result"] == "success" and e.get("detail")]
    assert passed and passed[0]["reason"] == "allowed-by-vex"
    assert {s["status"] for s in passed[0]["suppressed"]} == {"not_affected", "fixed"}
    assert {e["action"] for e in events} >= {"vex.set"}

    # Removing the document closes the gate again.
    assert server.api("DELETE", "/namespaces/vex/vex/musl").status_code == 204
    assert server.api("DELETE", "/namespaces/vex/vex/musl").status_code == 404
    assert _pull(server, "vex/app:old", server.creds, tmp_path).returncode != 0


def test_a_restart_loses_no_scan_jobs(wharf_bin, debian_image, tmp_path):
    """Jobs are rows: one killed mid-scan (SIGKILL) and those still waiting all complete after a restart."""
    import signal
    import sqlite3

    from conftest import Wharf

    database = tmp_path / "osv.sqlite"
    run([wharf_bin, "advisories", "import", str(require_testdata("alpine-secdb")), "--db", str(database)])
    config = tmp_path / "wharf.yml"
    config.write_text(f"scanner:\n  database: {database}\n  workers: 1\n  secrets: false\n  attachSBOMs: false\n")
    server = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", server.creds,
             f"oci:{debian_image}", f"docker://{server.host}/jobs/debian:12"])
        push_alpine(server, tmp_path, "alpine-310.tar.gz", "jobs/alpine", "3.10")
        push_alpine(server, tmp_path, "alpine-311.tar.gz", "jobs/alpine", "3.11")
        for repository, tag in (("jobs/debian", "12"), ("jobs/alpine", "3.10"), ("jobs/alpine", "3.11")):
            assert server.api("POST", f"/repositories/{repository}/scan", params={"reference": tag}).status_code == 202
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        # What the kill interrupted, read from the database itself: the Debian scan takes seconds.
        with sqlite3.connect(f"file:{tmp_path / 'data' / 'wharf.db'}?mode=ro", uri=True) as connection:
            states = [row[0] for row in connection.execute("SELECT status FROM image_scans")]
        assert len(states) == 3 and any(state in ("PENDING", "IN_PROGRESS") for state in states), states
        server.start()
        for repository, tag in (("jobs/debian", "12"), ("jobs/alpine", "3.10"), ("jobs/alpine", "3.11")):
            assert wait_for_scan(server, repository, tag, timeout=180)["status"] == "COMPLETE"
    finally:
        server.stop()
