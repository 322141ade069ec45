"""
How an AOS access token is obtained: credentials, the token request, the token cache.

Nothing here does I/O over the network. A transport (the sync hook, or an async twin) asks a
credential for the form fields of a token request, posts them, and hands the answer to
:func:`parse_token_response`; :class:`TokenCache` keeps the result per scope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from airflow_provider_aos.config import AosConnectionConfig
from airflow_provider_aos.exceptions import AosAuthError, AosConfigError
from airflow_provider_aos.redact import scrub

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300
"""Seconds a client assertion is valid. The IdentityModel samples use 5 minutes; the issue caps it at 10."""


class Credential(Protocol):
    """A way for the app to prove who it is to the identity service (one per auth method)."""

    @property
    def client_id(self) -> str: ...

    def token_form(self, *, scope: str | None, token_endpoint: str, username: str | None) -> dict[str, str]:
        """The form fields of a client-credentials token request (secret values included)."""
        ...


@dataclass(frozen=True)
class ClientSecretCredential:
    """Client secret, sent in the form body as the AOS REST and PowerShell samples do (auth.md §3)."""

    client_id: str
    client_secret: str = field(repr=False)

    def token_form(self, *, scope: str | None, token_endpoint: str, username: str | None) -> dict[str, str]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        if scope:
            form["scope"] = scope
        if username:
            form["username"] = username  # Cloud Governance delegated user (auth.md §7)
        return form


@dataclass(frozen=True)
class CertificateCredential:
    """
    Certificate: an RS256 JWT client assertion signed with the app certificate's private key (RFC 7523).

    :param client_id: application (client) ID.
    :param private_key: the RSA private key matching the certificate uploaded to the app registration.
    :param thumbprint: SHA-1 digest of the certificate's DER encoding.
    :param on_assertion: called with every assertion minted, to register it with the secret masker.
    """

    client_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    thumbprint: bytes
    lifetime: int = ASSERTION_LIFETIME
    on_assertion: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    @property
    def thumbprint_hex(self) -> str:
        """What .NET's ``X509Certificate2.Thumbprint`` prints: uppercase hex, 40 characters."""
        return self.thumbprint.hex().upper()

    @property
    def x5t(self) -> str:
        return base64.urlsafe_b64encode(self.thumbprint).rstrip(b"=").decode()

    def make_assertion(self, audience: str, *, username: str | None = None, now: float | None = None) -> str:
        """Sign a new assertion for ``audience`` (the token endpoint URL)."""
        issued = int(time.time() if now is None else now)
        # Header as the primary .NET sample (X509SigningCredentials) emits it; the identity service's
        # checks are undocumented, so we send both kid (hex) and x5t (base64url) (auth.md §4).
        headers = {"alg": "RS256", "typ": "JWT", "kid": self.thumbprint_hex, "x5t": self.x5t}
        claims: dict[str, object] = {
            "iss": self.client_id,  # RFC 7523 §3: issuer and subject are both the client id
            "sub": self.client_id,
            "aud": audience,  # the token endpoint, as from discovery (IdentityModel samples)
            "jti": str(uuid.uuid4()),  # unique per assertion; servers may reject a replay
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.lifetime,  # short-lived: a leaked assertion is soon worthless
        }
        if username:
            claims["username"] = username  # Cloud Governance delegated user (.NET sample, auth.md §7)
        assertion = jwt.encode(claims, self.private_key, algorithm="RS256", headers=headers)
        if self.on_assertion:
            self.on_assertion(assertion)
        return assertion

    def token_form(self, *, scope: str | None, token_endpoint: str, username: str | None) -> dict[str, str]:
        # No client_id: none of the AOS certificate samples sends it; iss/sub identify the client.
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.make_assertion(token_endpoint, username=username),
        }
        if scope:
            form["scope"] = scope
        if username:
            form["username"] = username  # the PowerShell sample sends it as a form field too
        return form


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode(), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def _load_pem_key(block: bytes, passphrase: bytes | None, key_field: str) -> object:
    try:
        return serialization.load_pem_private_key(block, password=passphrase)
    except TypeError as exc:
        if passphrase is None:
            raise AosConfigError(
                "extra.private_key_passphrase", "the private key is encrypted; set its passphrase"
            ) from None
        if "not encrypted" in str(exc):  # a passphrase for a clear key is harmless: ignore it
            return serialization.load_pem_private_key(block, password=None)
        raise AosConfigError(key_field, "the private key could not be read") from None
    except ValueError:
        if passphrase is not None and b"ENCRYPTED" in block:
            raise AosConfigError(
                "extra.private_key_passphrase", "wrong passphrase: the private key could not be decrypted"
            ) from None
        raise AosConfigError(
            key_field, "the PEM private key could not be read (damaged or unsupported)"
        ) from None


def _load_pkcs12(
    data: bytes, passphrase: bytes | None, key_field: str
) -> tuple[object, x509.Certificate | None]:
    if not data.startswith(b"\x30"):  # a PKCS#12 file is a DER SEQUENCE: this is something else
        raise AosConfigError(key_field, "is neither a PEM private key nor a PKCS#12 (.pfx) bundle")
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(data, passphrase)
    except ValueError:
        if passphrase is not None:
            try:  # a passphrase for a clear bundle is harmless, as it is for a clear PEM key
                key, cert, _ = pkcs12.load_key_and_certificates(data, None)
            except ValueError:
                raise AosConfigError(
                    "extra.private_key_passphrase",
                    f"the PKCS#12 bundle in {key_field} could not be opened: wrong passphrase, or a damaged .pfx",
                ) from None
        else:
            raise AosConfigError(
                "extra.private_key_passphrase",
                f"the PKCS#12 bundle in {key_field} could not be opened without a passphrase; set its passphrase",
            ) from None
    if key is None:
        raise AosConfigError(
            key_field, "the PKCS#12 bundle holds no private key; export the .pfx with its key"
        )
    return key, cert


def load_certificate_credential(
    config: AosConnectionConfig, on_assertion: Callable[[str], None] | None = None
) -> CertificateCredential:
    """
    Read the key and certificate of a connection and check that they belong together.

    Sources, in order: ``certificate_path`` (a .pem with key and certificate, or a .pfx/.p12 file on
    the worker), else ``private_key`` (PEM text, possibly followed by the certificate, or a base64
    PKCS#12 bundle) with ``certificate`` (PEM). Errors name the field and never quote key material.
    """
    passphrase = config.private_key_passphrase.encode() if config.private_key_passphrase else None
    key: object = None
    cert: x509.Certificate | None = None
    if config.certificate_path:
        key_field = "extra.certificate_path"
        path = Path(config.certificate_path).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AosConfigError(
                key_field, f"cannot read {str(path)!r} on this worker: {exc.strerror}"
            ) from None
        pem = data.lstrip().startswith(b"-----BEGIN")
    else:
        key_field = "extra.private_key"
        text = (config.private_key or "").strip()
        pem = text.startswith("-----BEGIN")
        if pem:
            data = text.encode()
        else:
            try:
                data = base64.b64decode("".join(text.split()), validate=True)
            except (binascii.Error, ValueError):
                raise AosConfigError(
                    key_field,
                    "is neither a PEM private key (-----BEGIN ... PRIVATE KEY-----) nor a base64-encoded "
                    "PKCS#12 (.pfx) bundle",
                ) from None
    if pem:
        blocks = _pem_blocks(data)
        key_blocks = [b for kind, b in blocks if kind.endswith("PRIVATE KEY")]
        if not key_blocks:
            raise AosConfigError(
                key_field, "holds no PEM private key block (-----BEGIN ... PRIVATE KEY-----)"
            )
        key = _load_pem_key(key_blocks[0], passphrase, key_field)
        cert_blocks = [b for kind, b in blocks if kind == "CERTIFICATE"]
        if config.certificate:
            cert_blocks = [
                b for kind, b in _pem_blocks(config.certificate.strip().encode()) if kind == "CERTIFICATE"
            ]
            if not cert_blocks:
                raise AosConfigError(
                    "extra.certificate", "is not a PEM certificate (-----BEGIN CERTIFICATE-----)"
                )
        if not cert_blocks:
            raise AosConfigError(
                "extra.certificate",
                "certificate auth with a PEM key also needs the app's certificate (PEM), for its thumbprint; "
                "paste it into extra.certificate, or use a .pfx bundle",
            )
        try:
            cert = x509.load_pem_x509_certificate(cert_blocks[0])
        except ValueError:
            raise AosConfigError("extra.certificate", "the PEM certificate could not be read") from None
    else:
        key, cert = _load_pkcs12(data, passphrase, key_field)
        if cert is None:
            raise AosConfigError(key_field, "the PKCS#12 bundle holds no certificate")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AosConfigError(key_field, "AOS certificate auth signs with RS256 and needs an RSA key")
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise AosConfigError(
            "extra.certificate",
            "the certificate does not match the private key; use the certificate of this key pair "
            f"(certificate subject {cert.subject.rfc4514_string()!r})",
        )
    thumbprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).digest()
    return CertificateCredential(
        client_id=config.client_id, private_key=key, thumbprint=thumbprint, on_assertion=on_assertion
    )


def credential_for(
    config: AosConnectionConfig, on_assertion: Callable[[str], None] | None = None
) -> Credential:
    """The credential a connection describes: a certificate when one is given, else the client secret."""
    if config.uses_certificate:
        return load_certificate_credential(config, on_assertion)
    assert config.client_secret  # AosConnectionConfig guarantees one of the two
    return ClientSecretCredential(config.client_id, config.client_secret)


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it stops being usable. The value never appears in ``repr``."""

    value: str = field(repr=False)
    scope: str
    expires_at: float
    lifetime: float

    def fresh(self, now: float) -> bool:
        # Refresh early: 5 minutes before expiry as MSAL does, or a tenth of a short lifetime.
        return now < self.expires_at - min(300.0, self.lifetime / 10)


_AUTH_HINTS = {
    "invalid_client": (
        "the identity service rejected the client credentials (invalid_client). Check the connection's "
        "Client ID (login), and its client secret (password) or certificate: the certificate must be the one "
        "uploaded to the app registration in AOS, and the secret must not have expired."
    ),
    "invalid_scope": (
        "the app is not granted the requested scope (invalid_scope). Add the service permission to the app "
        "in AOS > Administration > App registrations, or fix extra.scope."
    ),
    "unauthorized_client": "the app may not use the client-credentials grant (unauthorized_client).",
    "invalid_grant": "the identity service rejected the grant or assertion (invalid_grant).",
}


def parse_token_response(
    status: int, body: bytes | str, *, scope: str | None, token_url: str, secrets: Iterable[str], now: float
) -> AccessToken:
    """
    Turn a token-endpoint answer into an :class:`AccessToken`, or raise :class:`AosAuthError`.

    :param secrets: values to scrub from any server text quoted in the error.
    """
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if status == 200 and isinstance(payload.get("access_token"), str) and payload["access_token"]:
        try:
            expires_in = float(payload.get("expires_in", 3600))  # documented as int; some IdPs send a string
        except (TypeError, ValueError):
            expires_in = 3600.0
        granted = payload.get("scope") if isinstance(payload.get("scope"), str) else None
        return AccessToken(
            value=payload["access_token"],
            scope=scope or granted or "",
            expires_at=now + expires_in,
            lifetime=expires_in,
        )
    secrets = list(secrets)
    # Server text is scrubbed before it is shortened, so no part of a secret can survive the cut.
    error = scrub(payload["error"], secrets)[:100] if isinstance(payload.get("error"), str) else None
    description = (
        payload.get("error_description") if isinstance(payload.get("error_description"), str) else None
    )
    if status == 200:
        message = f"the identity service at {token_url} answered 200 without an access_token"
    elif error in _AUTH_HINTS:
        message = _AUTH_HINTS[error]
    else:
        message = f"the identity service at {token_url} refused the token request (HTTP {status}"
        message += f", {error})" if error else ")"
    if error == "invalid_scope" and scope:
        message += f" Requested scope: {scope!r}."
    if description:
        message += f" Server said: {scrub(description, secrets)[:300]}"
    raise AosAuthError(message, error=error, status=status)


class TokenCache:
    """
    Tokens per scope for one connection, reused until shortly before they expire. Thread-safe.

    :param clock: wall-clock seconds (``time.time``); injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[str, AccessToken] = {}
        self.lock = threading.Lock()

    def get(self, scope: str) -> AccessToken | None:
        token = self._tokens.get(scope)
        if token is not None and token.fresh(self._clock()):
            return token
        return None

    def put(self, scope: str, token: AccessToken) -> None:
        self._tokens[scope] = token

    def evict(self, scope: str, value: str | None = None) -> None:
        """Forget the token of ``scope``; with ``value``, only if it is still that token (a 401 race)."""
        current = self._tokens.get(scope)
        if current is not None and (value is None or current.value == value):
            del self._tokens[scope]

    def now(self) -> float:
        return self._clock()
