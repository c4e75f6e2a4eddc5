#!/usr/bin/env python3
"""The scanner's Java benchmark (issue 22): a Spring Boot image of about 300 MB whose fat jar holds
150 nested jars (Gradle-style manifests, no pom.properties, incompressible class data), scanned with
a warm advisory database. Prints wall time and peak RSS of `wharf scan` over several rounds.

    python3 bench/scan_java.py --wharf .build/release/wharf [--jars 150] [--jar-mib 2] [--rounds 3]

Needs umoci (Debian's package). Not part of the test suite: timings belong here, not in tests.
"""

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def jar(entries, method=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def library(index, size):
    artifact, version = f"spring-lib{index:03d}", f"5.3.{index}"
    manifest = (f"Manifest-Version: 1.0\r\nImplementation-Title: {artifact}\r\nImplementation-Version: {version}\r\n"
                f"Automatic-Module-Name: spring.lib{index:03d}\r\n\r\n")
    classes = {f"org/springframework/lib{index}/C{n}.class": os.urandom(size // 16) for n in range(16)}
    return f"BOOT-INF/lib/{artifact}-{version}.jar", jar({"META-INF/MANIFEST.MF": manifest, **classes})


def build_image(work, jars, jar_mib):
    root = work / "root"
    (root / "app").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    entries = {"META-INF/MANIFEST.MF": "Manifest-Version: 1.0\r\nImplementation-Title: demo\r\nImplementation-Version: 1.0\r\n\r\n"}
    entries["BOOT-INF/lib/spring-beans-5.3.17.jar"] = jar({"META-INF/MANIFEST.MF": (
        "Manifest-Version: 1.0\r\nImplementation-Title: spring-beans\r\nImplementation-Version: 5.3.17\r\n\r\n")})
    for index in range(jars - 1):
        name, content = library(index, jar_mib << 20)
        entries[name] = content
    (root / "app/demo.jar").write_bytes(jar(entries, zipfile.ZIP_STORED))
    layout = work / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:demo"], check=True)
    subprocess.run(["umoci", "insert", "--image", f"{layout}:demo", str(root), "/"], check=True, stdout=subprocess.DEVNULL)
    return f"{layout}:demo", (root / "app/demo.jar").stat().st_size


def build_database(wharf, work):
    folder = work / "osv"
    folder.mkdir()
    record = {"schema_version": "1.6.0", "id": "GHSA-36p3-wjmg-h94x", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2022-22965"],
              "database_specific": {"severity": "CRITICAL"},
              "affected": [{"package": {"ecosystem": "Maven", "name": "org.springframework:spring-beans"},
                            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "5.3.0"}, {"fixed": "5.3.18"}]}]}]}
    (folder / "spring4shell.json").write_text(json.dumps(record))
    database = work / "osv.sqlite"
    subprocess.run([wharf, "advisories", "import", str(folder), "--db", str(database)], check=True, stdout=subprocess.DEVNULL)
    return database


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wharf", default=".build/release/wharf")
    parser.add_argument("--jars", type=int, default=150)
    parser.add_argument("--jar-mib", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wharf-scan-java-") as scratch:
        work = Path(scratch)
        image, jar_size = build_image(work, options.jars, options.jar_mib)
        database = build_database(options.wharf, work)
        print(f"image: one fat jar of {jar_size / 2**20:.0f} MiB holding {options.jars} nested jars")
        command = [options.wharf, "scan", f"oci:{image}", "--db", str(database), "--format", "json", "--no-secrets"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # warm the page cache and the database
        for round_number in range(options.rounds):
            started = time.perf_counter()
            process = subprocess.Popen(["/usr/bin/time", "-f", "%M", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            output, errors = process.communicate()
            elapsed = time.perf_counter() - started
            report = json.loads(output)
            peak_kib = int(errors.decode().strip().splitlines()[-1])
            packages = len(report["inventory"]["packages"])
            findings = [f["id"] for f in report["findings"]]
            print(f"round {round_number + 1}: {elapsed:.2f} s, peak RSS {peak_kib / 1024:.0f} MiB, {packages} packages, findings {findings}")
            if packages != options.jars + 1 or findings != ["CVE-2022-22965"]:
                print("unexpected result", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
