"""End-to-end tests: the built `wharf` binary, driven by real clients.

Environment:
  WHARF_BIN        the binary to test (default: .build/debug/wharf)
  WHARF_TESTDATA   the shared test data folder (default: ../shared/testdata next to the repository)
  WHARF_E2E_CACHE  where slow-to-build inputs are kept between runs (default: ~/.cache/wharf-e2e)
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import typing
import uuid
from pathlib import Path

import boto3
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("WHARF_TESTDATA", REPO_ROOT.parent / "shared" / "testdata"))
CACHE = Path(os.environ.get("WHARF_E2E_CACHE", Path.home() / ".cache" / "wharf-e2e"))


def run(args, *, check=True, timeout=900, env=None, input=None, cwd=None):
    """Runs a command; on failure the assertion shows its output."""
    merged = dict(os.environ)
    if env:
        merged.update(env)
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=merged, input=input, cwd=cwd
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def require_testdata(*parts):
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"shared test data is missing: {path} (expected ../shared/testdata next to the repository; "
            f"set WHARF_TESTDATA to its location)"
        )
    return path


ADMIN_PASSWORD = "e2e-admin-password"


class Wharf:
    """A `wharf serve` process on a loopback port with its own data folder.

    Authentication is on (the default); the administrator's password is ADMIN_PASSWORD. The first
    start asks the kernel for a port (`--listen 127.0.0.1:0`) and reads the one it got from the log,
    so no other process can take it between a pick and the bind; restarts keep that port.
    """

    def __init__(self, binary, data_dir, extra_env=None, extra_args=()):
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.port = 0  # learned from the log at the first start
        self.extra_env = {"WHARF_ADMIN_PASSWORD": ADMIN_PASSWORD, **(extra_env or {})}
        self.extra_args = list(extra_args)
        self.process = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        # HTTPS when the server is configured with a certificate; `verify` is then the CA file.
        self.scheme = "http"
        self.verify = True

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{self.scheme}://{self.host}"

    # Credentials in the forms the clients take.
    auth = ("admin", ADMIN_PASSWORD)
    creds = f"admin:{ADMIN_PASSWORD}"

    def api(self, method, path, auth=None, **kwargs):
        """A management API call as the administrator (or `auth`)."""
        return requests.request(method, f"{self.url}/api/v1{path}", auth=auth or self.auth, timeout=30, verify=self.verify, **kwargs)

    def start(self, timeout=60):
        env = dict(os.environ)
        env.update(self.extra_env)
        self.log = open(self.log_path, "ab")
        log_start = self.log.tell()
        self.process = subprocess.Popen(
            [self.binary, "serve", "--listen", self.host, "--data", str(self.data_dir), *self.extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                self.log.close()
                raise AssertionError(f"wharf exited early ({code}):\n{self.log_text()}")
            if self.port == 0:
                self.port = self.bound_port(log_start)
                if self.port == 0:
                    time.sleep(0.05)
                    continue
            try:
                if requests.get(self.url + "/v2/", timeout=1, verify=self.verify).status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        # Not ready: stop it, so a failed start leaves no server behind holding a port and the binary.
        self.process.kill()
        self.process.wait()
        self.process = None
        self.log.close()
        raise AssertionError(f"wharf did not become ready in {timeout}s:\n{self.log_text()}")

    def bound_port(self, offset):
        """The port of "Wharf is listening" in this start's log, or 0 before it is there. (A separate
        metrics listener, when configured, logs "Wharf metrics are served" with its own port.)"""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            # Text lines put the address first; JSON lines (log.format: json) put the message first.
            found = re.search(rb"127\.0\.0\.1:(\d+)[^\n]*Wharf is listening|Wharf is listening[^\n]*127\.0\.0\.1:(\d+)", log.read())
        return int(found.group(1) or found.group(2)) if found else 0

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stops the server; returns its exit status."""
        if self.process is None:
            return None
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
            raise AssertionError(f"wharf did not stop within {timeout}s after {sig!r}:\n{self.log_text()}")
        finally:
            self.process = None
            self.log.close()
        return code

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="session")
def wharf_bin():
    binary = Path(os.environ.get("WHARF_BIN", REPO_ROOT / ".build" / "debug" / "wharf"))
    if not binary.exists():
        pytest.fail(f"wharf binary not found at {binary}: run `swift build` or set WHARF_BIN")
    return str(binary)


@pytest.fixture(scope="module")
def wharf(wharf_bin, tmp_path_factory):
    """One server per test module; tests use their own repository names."""
    server = Wharf(wharf_bin, tmp_path_factory.mktemp("wharf") / "data").start()
    yield server
    code = server.stop()
    assert code == 0, f"wharf exited with {code} after SIGTERM:\n{server.log_text()}"


@pytest.fixture(scope="session")
def docker(tmp_path_factory):
    """A private Docker engine (Debian's docker.io) for the session; its environment for `docker` commands."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (scripts/install-deps.sh installs docker.io)")
    base = tmp_path_factory.mktemp("dockerd")
    socket = base / "docker.sock"
    log = open(base / "dockerd.log", "wb")
    process = subprocess.Popen(
        [
            "dockerd", "--host", f"unix://{socket}", "--data-root", base / "data", "--exec-root", base / "exec",
            "--pidfile", base / "docker.pid", "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--ip-masq=false", "--storage-driver", "vfs", "--containerd-namespace", f"wharf-e2e-{os.getpid()}",
            "--containerd-plugins-namespace", f"wharf-e2e-plugins-{os.getpid()}", "--default-ulimit", "nofile=1024:1024",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )
    env = {"DOCKER_HOST": f"unix://{socket}", "DOCKER_CONFIG": str(base / "config")}
    deadline = time.monotonic() + 60
    while True:
        if run(["docker", "info"], env=env, check=False).returncode == 0:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("dockerd did not start:\n" + (base / "dockerd.log").read_text(errors="replace")[-4000:])
        time.sleep(0.5)
    yield env
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


# ---- Test images -------------------------------------------------------------------------------


def write_tree(root, files):
    for relative, content in files.items():
        path = Path(root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def umoci_image(layout, tag, layers, config_args=()):
    """Builds an OCI image in `layout` with one layer per folder in `layers`, using umoci."""
    if not (Path(layout) / "index.json").exists():
        run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:{tag}"])
    for folder in layers:
        run(["umoci", "insert", "--image", f"{layout}:{tag}", folder, "/"])
    if config_args:
        run(["umoci", "config", "--image", f"{layout}:{tag}", *config_args])
    return f"{layout}:{tag}"


@pytest.fixture(scope="session")
def small_image(tmp_path_factory):
    """A small two-layer OCI image (umoci writes manifests without mediaType)."""
    base = tmp_path_factory.mktemp("small-image")
    one, two = base / "layer1", base / "layer2"
    write_tree(one, {"etc/hello.txt": "hello from layer one\n", "bin/tool": os.urandom(200_000)})
    write_tree(two, {"etc/hello.txt": "layer two overrides\n", "data/blob.bin": os.urandom(300_000)})
    return umoci_image(str(base / "layout"), "v1", [one, two], ["--config.env", "GREETING=hi", "--config.cmd", "/bin/tool"])


@pytest.fixture(scope="session")
def debian_rootfs():
    """A real Debian 12 minbase root filesystem from debootstrap (about 1.5 minutes, cached)."""
    target = CACHE / "debian12-minbase"
    marker = target / ".complete"
    if not marker.exists():
        if os.geteuid() != 0:
            pytest.fail("debootstrap needs root")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        run(["debootstrap", "--variant=minbase", "bookworm", target, "http://deb.debian.org/debian"], timeout=1200)
        marker.write_text("ok")
    return target


@pytest.fixture(scope="session")
def debian_image(tmp_path_factory, debian_rootfs):
    """A three-layer OCI image: the Debian rootfs, an application layer and a config layer."""
    cached = CACHE / "debian-layout"
    if not (cached / ".complete").exists():
        shutil.rmtree(cached, ignore_errors=True)
        work = tmp_path_factory.mktemp("debian-image")
        app, conf = work / "app", work / "conf"
        write_tree(app, {"opt/app/run.sh": "#!/bin/sh\necho wharf e2e\n", "opt/app/data.bin": os.urandom(1_000_000)})
        write_tree(conf, {"etc/app.conf": "mode=test\n"})
        umoci_image(str(cached), "bookworm", [debian_rootfs, app, conf], ["--config.cmd", "/opt/app/run.sh"])
        (cached / ".complete").write_text("ok")
    return f"{cached}:bookworm"


def layout_manifest(layout_ref):
    """The manifest descriptor and bytes of an OCI layout reference `DIR:TAG`."""
    layout, tag = layout_ref.rsplit(":", 1)
    index = json.loads((Path(layout) / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            algorithm, encoded = descriptor["digest"].split(":")
            return descriptor, (Path(layout) / "blobs" / algorithm / encoded).read_bytes()
    raise KeyError(tag)


def skopeo(*args, **kwargs):
    return run(["skopeo", "--insecure-policy", *args], **kwargs)


def inspect_raw(ref, creds):
    return skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, ref).stdout


def free_port():
    """A port nothing listens on right now (for servers that need one named in advance)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PushedImage(typing.NamedTuple):
    manifest_size: int
    digest: str
    config_size: int


def push_config_image(server, repository, tag, marker):
    """The smallest image (a config, no layers), pushed with requests; `marker` makes its digest unique."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "marker": marker, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert requests.post(f"{server.url}/v2/{repository}/blobs/uploads/?digest={config_digest}", data=config, auth=server.auth,
                         timeout=30).status_code == 201
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
                           "layers": []}).encode()
    put = requests.put(f"{server.url}/v2/{repository}/manifests/{tag}", data=manifest, auth=server.auth, timeout=30,
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert put.status_code == 201, put.text
    return PushedImage(len(manifest), put.headers["Docker-Content-Digest"], len(config))


# ---- Services the scripts start (scripts/postgres.sh, scripts/s3.sh) ------------------------------------


@pytest.fixture
def postgres_url():
    admin = os.environ.get("WHARF_TEST_POSTGRES_URL")
    if not admin:
        if os.environ.get("CI") == "true":
            pytest.fail("WHARF_TEST_POSTGRES_URL is not set: scripts/test.sh starts PostgreSQL")
        pytest.skip("no PostgreSQL (run through scripts/test.sh)")
    name = "wharf_e2e_" + uuid.uuid4().hex[:12]
    run(["psql", admin, "-q", "-c", f"CREATE DATABASE {name}"])
    yield admin.rsplit("/", 1)[0] + "/" + name
    run(["psql", admin, "-q", "-c", f"DROP DATABASE {name} WITH (FORCE)"], check=False)


@pytest.fixture
def s3(tmp_path):
    """A fresh bucket on the test S3 server, and the settings that reach it."""
    endpoint = os.environ.get("WHARF_TEST_S3_ENDPOINT")
    if not endpoint:
        if os.environ.get("CI") == "true":
            pytest.fail("WHARF_TEST_S3_ENDPOINT is not set: scripts/test.sh starts the S3 server")
        pytest.skip("no S3 server (run through scripts/test.sh)")
    key, secret = os.environ["WHARF_TEST_S3_ACCESS_KEY"], os.environ["WHARF_TEST_S3_SECRET_KEY"]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret)
    bucket = "wharf-e2e-" + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    return {"client": client, "bucket": bucket, "endpoint": endpoint, "key": key, "secret_file": secret_file}


# ---- CNCF Distribution (Debian's docker-registry) -------------------------------------------------------


class Distribution:
    """A CNCF Distribution (`docker-registry serve`) on a loopback port, with htpasswd auth when
    `user` is given. Restartable on the same port and storage (kill -9 and start again)."""

    def __init__(self, root, user=None, password=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user, self.password = user, password
        self.process = None
        lines = [
            "version: 0.1",
            "log:", "  level: info",
            "storage:", "  filesystem:", f"    rootdirectory: {self.root / 'data'}", "  delete:", "    enabled: true",
            "http:", f"  addr: 127.0.0.1:{self.port}",
        ]
        if user:
            htpasswd = self.root / "htpasswd"
            run(["htpasswd", "-Bbc", htpasswd, user, password])
            lines += ["auth:", "  htpasswd:", "    realm: e2e", f"    path: {htpasswd}"]
        self.config = self.root / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log_path = self.root / "registry.log"

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"http://{self.host}"

    @property
    def auth(self):
        return (self.user, self.password) if self.user else None

    @property
    def creds(self):
        return f"{self.user}:{self.password}"

    def start(self, timeout=30):
        self.process = subprocess.Popen(["docker-registry", "serve", str(self.config)], stdout=open(self.log_path, "ab"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/v2/", timeout=1).status_code in (200, 401):
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError(f"docker-registry did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM):
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
            self.process = None

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
