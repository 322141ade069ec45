"""
Shared fixtures: a live AOS emulator, connections pointing at it, and throwaway certificates.

Airflow reads AIRFLOW_HOME at import time, so it is set here before any test module imports Airflow.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="aos-test-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig


@pytest.fixture
def emulator() -> Iterator[AosEmulator]:
    """A fresh emulator: 20,000 records over Oct-Nov 2026, 100 per page, no faults."""
    with AosEmulator(EmulatorConfig(records=20_000, page_size=100)) as emu:
        yield emu


@pytest.fixture
def aos_connection(monkeypatch: pytest.MonkeyPatch, emulator: AosEmulator) -> Callable[..., str]:
    """
    Create an ``aos`` connection (as an AIRFLOW_CONN_* variable) pointing at the emulator.

    ``aos_connection(conn_id="aos_test", password=..., extra={...}, host=...)``; defaults: the
    emulator's demo client and secret. Returns the conn id.
    """

    def make(conn_id: str = "aos_test", **fields: Any) -> str:
        extra = {"identity_url": emulator.identity_url, **fields.pop("extra", {})}
        conn = {
            "conn_type": "aos",
            "host": emulator.graph_url,
            "login": emulator.config.client_id,
            "password": emulator.config.client_secret,
            "extra": extra,
            **fields,
        }
        conn = {k: v for k, v in conn.items() if v is not None}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return make


@dataclass(frozen=True)
class CertBundle:
    """A key pair and self-signed certificate in every form a connection accepts."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    key_pem: str  # unencrypted PKCS#8
    cert_pem: str
    thumbprint: bytes  # SHA-1 of the DER certificate

    def encrypted_key_pem(self, passphrase: str) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        ).decode()

    def pfx(self, passphrase: str | None) -> bytes:
        encryption = (
            serialization.BestAvailableEncryption(passphrase.encode())
            if passphrase
            else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(b"aos", self.key, self.cert, None, encryption)

    def pfx_b64(self, passphrase: str | None) -> str:
        return base64.b64encode(self.pfx(passphrase)).decode()


def self_signed_certificate(key: Any, common_name: str) -> x509.Certificate:
    """A certificate for ``key`` (RSA or EC), valid from yesterday for a year."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )


def make_cert_bundle(common_name: str = "aos-test") -> CertBundle:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = self_signed_certificate(key, common_name)
    return CertBundle(
        key=key,
        cert=cert,
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        thumbprint=hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest(),  # noqa: S324 - a thumbprint
    )


@pytest.fixture(scope="session")
def cert_bundle() -> CertBundle:
    """A certificate for the app under test (2048-bit RSA, generated once per session)."""
    return make_cert_bundle("aos-test-app")


@pytest.fixture(scope="session")
def other_cert_bundle() -> CertBundle:
    """A second, unrelated key pair (for mismatch tests)."""
    return make_cert_bundle("aos-other")
