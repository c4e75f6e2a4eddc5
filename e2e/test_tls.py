"""Wharf serving HTTPS itself (issue 23): a test CA, skopeo verifying the chain (no
--tls-verify=false anywhere), TLS 1.2 and 1.3, and a certificate renewed by SIGHUP without
dropping the connections already open."""

import hashlib
import json
import signal
import socket
import ssl
import time

import pytest
import requests

from conftest import ADMIN_PASSWORD, Wharf, run, skopeo


def make_ca_and_server(folder, name):
    """A CA and a server certificate for 127.0.0.1 / localhost, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    if not ca_crt.exists():
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", "/CN=Wharf test CA", "-keyout", str(ca_key), "-out", str(ca_crt)])
    key, csr, crt = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(csr)])
    extensions = folder / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
         "-extfile", str(extensions), "-out", str(crt)])
    return ca_crt, crt, key


def peer_fingerprint(port, ca, version=None):
    context = ssl.create_default_context(cafile=str(ca))
    if version:
        context.minimum_version = version
        context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest(), tls.version()


@pytest.fixture
def tls_wharf(wharf_bin, tmp_path):
    certs = tmp_path / "certs"
    ca, crt, key = make_ca_and_server(certs, "first")
    served_crt, served_key = certs / "server.crt", certs / "server.key"
    served_crt.write_bytes(crt.read_bytes())
    served_key.write_bytes(key.read_bytes())
    config = tmp_path / "wharf.yml"
    config.write_text(f"tls:\n  certificateFile: {served_crt}\n  keyFile: {served_key}\n")
    wharf = Wharf(wharf_bin, tmp_path / "data", extra_args=["--config", str(config)])
    wharf.scheme, wharf.verify = "https", str(ca)
    yield wharf.start(), ca, certs
    assert wharf.stop() == 0, wharf.log_text()


def test_https_with_a_verified_chain_tls12_and_13(tls_wharf, small_image, tmp_path):
    wharf, ca, certs = tls_wharf
    # Plain HTTP on the TLS port is refused; HTTPS verifies against the test CA.
    base = f"https://{wharf.host}"
    assert requests.get(f"{base}/v2/", verify=str(ca), timeout=10).status_code == 401
    challenge = requests.get(f"{base}/v2/", verify=str(ca), timeout=10).headers["WWW-Authenticate"]
    assert f'realm="https://{wharf.host}/auth/token"' in challenge
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        _, negotiated = peer_fingerprint(wharf.port, ca, version)
        assert negotiated in ("TLSv1.2", "TLSv1.3")
    # skopeo with the CA as its only trust, and verification on.
    cert_dir = tmp_path / "skopeo-certs"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(ca.read_bytes())
    skopeo("copy", "--dest-cert-dir", str(cert_dir), "--dest-creds", f"admin:{ADMIN_PASSWORD}",
           f"oci:{small_image}", f"docker://{wharf.host}/tls/app:1")
    raw = skopeo("inspect", "--raw", "--cert-dir", str(cert_dir), "--creds", f"admin:{ADMIN_PASSWORD}", f"docker://{wharf.host}/tls/app:1").stdout
    assert json.loads(raw)["layers"]
    # Without the CA, the chain does not verify.
    refused = skopeo("inspect", "--raw", "--creds", f"admin:{ADMIN_PASSWORD}", f"docker://{wharf.host}/tls/app:1", check=False)
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower()


def test_sighup_renews_the_certificate_without_dropping_connections(tls_wharf):
    wharf, ca, certs = tls_wharf
    before, _ = peer_fingerprint(wharf.port, ca)
    session = requests.Session()  # keeps its connection open across the renewal
    # verify per request: requests lets REQUESTS_CA_BUNDLE override Session.verify.
    assert session.get(f"https://{wharf.host}/v2/", auth=wharf.auth, timeout=10, verify=str(ca)).status_code == 200
    _, crt, key = make_ca_and_server(certs, "second")
    (certs / "server.crt").write_bytes(crt.read_bytes())
    (certs / "server.key").write_bytes(key.read_bytes())
    wharf.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    after = before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.1)
        after, _ = peer_fingerprint(wharf.port, ca)
    assert after != before, "new connections get the renewed certificate"
    assert after == hashlib.sha256(ssl.PEM_cert_to_DER_cert(crt.read_text())).hexdigest()
    # The connection opened before the renewal still serves.
    assert session.get(f"https://{wharf.host}/v2/", auth=wharf.auth, timeout=10, verify=str(ca)).status_code == 200
    # A broken renewal keeps the current certificate, and says so.
    (certs / "server.key").write_text("not a key\n")
    wharf.process.send_signal(signal.SIGHUP)
    time.sleep(1)
    still, _ = peer_fingerprint(wharf.port, ca)
    assert still == after
    assert "TLS certificate reload failed" in wharf.log_text()
