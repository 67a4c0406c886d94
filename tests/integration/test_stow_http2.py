"""``--stow_http2``: STOW-RS over HTTP/2 (TLS with ALPN, and cleartext prior knowledge)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.http import HttpSettings
from common.status import Status
from tests.integration.test_import_store import pynetdicom_store
from tests.support.adapters import running_import_adapter
from tests.support.components import require
from tests.support.ports import free_port, wait_for_port
from tests.support.samples import make_corpus


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


@pytest.fixture(params=["https", "http"])
def h2_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path | None]]:
    require(
        subprocess.run([sys.executable, "-c", "import hypercorn"], check=False).returncode == 0,
        "hypercorn is not installed",
    )
    port = free_port()
    args = [sys.executable, "-m", "hypercorn", "tests.support.h2_sink:app",
            "--bind", f"127.0.0.1:{port}"]
    cert: Path | None = None
    if request.param == "https":
        cert, key = _self_signed(tmp_path)
        args += ["--certfile", str(cert), "--keyfile", str(key)]
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout=15)
        host = "localhost" if cert else "127.0.0.1"
        yield f"{request.param}://{host}:{port}", cert
    finally:
        process.terminate()
        process.wait(timeout=10)


def _seen(base: str, cert: Path | None) -> list[dict[str, str]]:
    import ssl

    context = ssl.create_default_context(cafile=str(cert)) if cert else None
    with urllib.request.urlopen(f"{base}/seen", context=context, timeout=5) as response:
        return list(json.loads(response.read()))


def test_stow_over_http2(h2_sink: tuple[str, Path | None], tmp_path: Path) -> None:
    base, cert = h2_sink
    corpus = make_corpus(tmp_path / "c", 3)
    http = HttpSettings(ca_bundle=str(cert) if cert else None)
    with running_import_adapter(f"{base}/dicom-web", stow_http2=True, http=http) as running:
        for sample in corpus:
            assert pynetdicom_store(running.server.port, sample.path) == Status.SUCCESS
    seen = _seen(base, cert)
    assert [s["sop_instance_uid"] for s in seen] == [s.sop_instance_uid for s in corpus]
    assert {s["http_version"] for s in seen} == {"2"}


def test_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "tests.support.h2_sink:app", "--bind",
         f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=15)
        corpus = make_corpus(tmp_path / "c", 1)
        for http2 in (True, False):
            with running_import_adapter(f"https://localhost:{port}/dicom-web", stow_http2=http2) as running:
                # No CA bundle given: the self-signed certificate must not be trusted. TLS
                # failures are connection failures: the retries make the store "known down".
                assert pynetdicom_store(running.server.port, corpus[0].path) == Status.OUT_OF_RESOURCES
    finally:
        process.terminate()
        process.wait(timeout=10)
