"""
How an AOS access token is obtained: credentials, the token request, the token cache.

Nothing here does I/O over the network. A transport (the sync hook, or an async twin) asks a
credential for the form fields of a token request, posts them, and hands the answer to
:func:`parse_token_response`; :class:`TokenCache` keeps the result per scope.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import math
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

log = logging.getLogger(__name__)

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
    :param validity_warning: why the identity service will likely refuse the certificate (expired, not
        yet valid), or None; see :func:`certificate_validity_warning`. Holds no secret.
    """

    client_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    thumbprint: bytes
    lifetime: int = ASSERTION_LIFETIME
    on_assertion: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    validity_warning: str | None = field(default=None, compare=False)

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


def _unescape_pem(text: str) -> str:
    """
    A PEM pasted with literal ``\\n`` escapes, as environment variables and secrets managers often
    hold multi-line values, with its real line breaks back. Base64 never contains a backslash, so
    in a PEM text without any real newline every ``\\n`` can only be an escaped line break.
    """
    if text.startswith("-----BEGIN") and "\\n" in text and "\n" not in text:
        return text.replace("\\r\\n", "\n").replace("\\n", "\n")
    return text


def _refuse_other_der(data: bytes, key_field: str) -> None:
    """Say what a DER file that is not a PKCS#12 bundle is, rather than ask for a passphrase it has not."""
    expected = (
        "certificate auth needs the private key and its certificate: a .pem holding both (or the key in "
        "extra.private_key with extra.certificate), or a .pfx/.p12 bundle"
    )
    try:
        x509.load_der_x509_certificate(data)
    except ValueError:
        pass
    else:
        raise AosConfigError(
            key_field, f"is a DER-encoded certificate (.cer) without a private key; {expected}"
        )
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:  # an encrypted PKCS#8 key: still a DER key, whatever its passphrase
        pass
    except ValueError:
        return
    # Not supported on purpose: a DER key has no room for the certificate we need for its thumbprint.
    raise AosConfigError(
        key_field,
        f"is a DER-encoded private key; {expected}. Convert the key to PEM with "
        "`openssl pkey -inform DER -in <key file> -out key.pem`, or export a .pfx",
    )


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
        _refuse_other_der(data, key_field)
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
        text = _unescape_pem((config.private_key or "").strip())
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
        if not key_blocks and any(kind == "CERTIFICATE" for kind, _ in blocks):
            raise AosConfigError(
                key_field,
                "holds only a certificate (the public .cer) and no PEM private key (-----BEGIN ... PRIVATE "
                "KEY-----); certificate auth needs the key too: a .pem with the key and the certificate, "
                "or a .pfx/.p12 bundle",
            )
        if not key_blocks:
            raise AosConfigError(
                key_field, "holds no PEM private key block (-----BEGIN ... PRIVATE KEY-----)"
            )
        key = _load_pem_key(key_blocks[0], passphrase, key_field)
        cert_blocks = [b for kind, b in blocks if kind == "CERTIFICATE"]
        if config.certificate:
            cert_blocks = [
                b
                for kind, b in _pem_blocks(_unescape_pem(config.certificate.strip()).encode())
                if kind == "CERTIFICATE"
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
    warning = certificate_validity_warning(cert, dt.datetime.now(dt.UTC))
    if warning:
        # A warning, not an error: the identity service decides, and our clock may be the wrong one.
        log.warning("AOS connection %s: %s", config.conn_id, warning)
    return CertificateCredential(
        client_id=config.client_id,
        private_key=key,
        thumbprint=thumbprint,
        on_assertion=on_assertion,
        validity_warning=warning,
    )


def certificate_validity_warning(cert: x509.Certificate, now: dt.datetime) -> str | None:
    """Why the identity service will likely refuse ``cert`` at ``now`` (an aware datetime), or None."""
    subject = cert.subject.rfc4514_string()
    if now > cert.not_valid_after_utc:
        return (
            f"the certificate {subject!r} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M UTC}; the "
            "identity service will likely refuse it. Upload a new certificate to the app registration in "
            "AOS and put it in the connection."
        )
    if now < cert.not_valid_before_utc:
        return (
            f"the certificate {subject!r} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M UTC}; "
            "the identity service will likely refuse it until then (or check this worker's clock)."
        )
    return None


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


DEFAULT_TOKEN_LIFETIME = 3600.0
"""Seconds assumed when ``expires_in`` is missing or not a number: the documented lifetime (auth.md §5)."""
MIN_TOKEN_LIFETIME = 60.0
"""Floor for a shorter ``expires_in``, so that a token is reused for a while, not fetched per request."""


def _token_lifetime(raw: object, token_url: str) -> float:
    """
    Seconds a token lives, from ``expires_in``.

    Tolerant where that is safe: a missing, boolean or unreadable value is taken as the documented
    hour (a 401 evicts the token and fetches a new one if that was wrong). A lifetime below
    :data:`MIN_TOKEN_LIFETIME`, zero or negative included, is raised to it. A non-finite value (NaN,
    Infinity, or a number too large for a float) is refused: it would cache a token forever or never.
    """
    # bool is an int in Python: True would mean a one-second token.
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(raw)  # documented as int; some IdPs send a string ("3599")
    except OverflowError:  # an int beyond any float: as unusable as Infinity
        seconds = math.inf
    except ValueError:
        return DEFAULT_TOKEN_LIFETIME
    if not math.isfinite(seconds):
        raise AosAuthError(
            f"the identity service at {token_url} answered a token whose expires_in is not a finite "
            "number of seconds (NaN, Infinity or out of range); refusing to cache it",
            status=200,
        )
    if seconds < MIN_TOKEN_LIFETIME:
        log.warning(
            "The identity service at %s gave a token lifetime of %.0f s; reusing the token for up to %.0f s",
            token_url,
            seconds,
            MIN_TOKEN_LIFETIME,
        )
        return MIN_TOKEN_LIFETIME
    return seconds


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
        expires_in = _token_lifetime(payload.get("expires_in"), token_url)
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

    Two locks with two jobs. :attr:`lock` is for callers: held around get, fetch and put, it makes
    one thread fetch a missing token while the others wait for it. Every read and change of the
    cache itself happens under a private lock, held for no I/O, so get/put/evict are safe under
    :attr:`lock` or without it, and an eviction never waits for another thread's token request.

    :param clock: wall-clock seconds (``time.time``); injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[str, AccessToken] = {}
        self._mutex = threading.Lock()
        self.lock = threading.Lock()

    def get(self, scope: str) -> AccessToken | None:
        with self._mutex:
            token = self._tokens.get(scope)
        if token is not None and token.fresh(self._clock()):
            return token
        return None

    def put(self, scope: str, token: AccessToken) -> None:
        with self._mutex:
            self._tokens[scope] = token

    def evict(self, scope: str, value: str | None = None) -> None:
        """Forget the token of ``scope``; with ``value``, only if it is still that token (a 401 race)."""
        with self._mutex:  # check and delete as one step: two evictions of one token raced to KeyError
            current = self._tokens.get(scope)
            if current is not None and (value is None or current.value == value):
                del self._tokens[scope]

    def now(self) -> float:
        return self._clock()
