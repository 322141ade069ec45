"""The emulated AOS identity service: registered clients, minted tokens, assertion checks.

The rules follow auth.md §3-5. Where the real service is undocumented (which JWT header fields
it checks), the emulator is deliberately strict so a client that passes here sends exactly what
the primary .NET sample sends.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

# Every scope of the AOS registration table (auth.md §6), spelled as registered.
ALL_SCOPES: tuple[str, ...] = (
    "audit.read.all",
    "autodiscovery.readwrite.all",
    "dynamics.readwrite.all",
    "platformbackup.readwrite.all",
    "microsoft365backup.jobInfo.read.all",
    "microsoft365backup.subscriptionInfo.read.all",
    "microsoft365backup.settings.read.all",
    "microsoft365backup.unusualActivity.read.all",
    "microsoft365backup.restore.readwrite.all",
    "gsuite.graph.read.all",
    "salesforce.public.read.all",
    "records.readwrite.all",
    "enpower.data.read.all",
    "insights.graph.readwrite.all",
    "confide.graph.readwrite.all",
    "dmso.graph.readwrite.all",
    "fly.graph.readwrite.all",
    "cloudgovernance.fullcontrol.all",
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = 60  # seconds tolerated on exp/nbf/iat, as IdentityServer does by default
MAX_ASSERTION_LIFETIME = 3600  # seconds; the .NET sample uses exactly one hour


class TokenError(Exception):
    """An OAuth error answer of the token endpoint: 400 with {error, error_description}."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, object]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class Client:
    """A registered app: a secret and/or a certificate, and the scopes it may request."""

    client_id: str
    secret: str | None
    public_key: RSAPublicKey | None
    kid: str | None  # SHA-1 thumbprint, uppercase hex (X509Certificate2.Thumbprint)
    x5t: str | None  # base64url of the SHA-1 thumbprint bytes, no padding
    scopes: tuple[str, ...]

    def canonical_scope(self, requested: str) -> str | None:
        """The registered spelling of a requested scope (case-insensitive), or None."""
        wanted = requested.lower()
        return next((s for s in self.scopes if s.lower() == wanted), None)


@dataclass(frozen=True)
class TokenInfo:
    """What a minted access token stands for."""

    client_id: str
    scopes: frozenset[str]  # lower case, for case-insensitive checks by the Graph side
    expires_at: float  # time.time() seconds
    username: str | None


def load_certificate(certificate_pem: str | bytes) -> x509.Certificate:
    """PEM, or DER as a fallback since AOS uploads are `.cer` files that may be either."""
    data = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def make_client(
    client_id: str,
    *,
    secret: str | None,
    certificate_pem: str | bytes | None,
    scopes: Iterable[str],
) -> Client:
    if not client_id:
        raise ValueError("client_id must not be empty")
    if secret is None and certificate_pem is None:
        raise ValueError("a client needs a secret, a certificate, or both")
    public_key = kid = x5t = None
    if certificate_pem is not None:
        cert = load_certificate(certificate_pem)
        key = cert.public_key()
        if not isinstance(key, RSAPublicKey):
            raise ValueError("the certificate must hold an RSA key (assertions are RS256)")
        thumbprint = cert.fingerprint(hashes.SHA1())  # noqa: S303 - X.509 thumbprints are SHA-1
        public_key = key
        kid = thumbprint.hex().upper()
        x5t = base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode()
    return Client(client_id, secret, public_key, kid, x5t, tuple(scopes))


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1 Basic: base64("urlencoded(id):urlencoded(secret)")."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise TokenError("invalid_client", "malformed Basic authorization header") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise TokenError("invalid_client", "malformed Basic authorization header")
    return unquote_plus(client_id), unquote_plus(secret)


class IdentityService:
    """Clients, tokens and the token-request log, all guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}
        self._tokens: dict[str, TokenInfo] = {}
        self._issued: list[str] = []
        self._seen_jti: set[tuple[str, str]] = set()
        self._forms: list[dict[str, str]] = []
        self._assertions: list[str] = []

    # -- registration and test accessors ---------------------------------------------------

    def register(self, client: Client) -> None:
        with self._lock:
            self._clients[client.client_id] = client

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()

    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    def received_assertions(self) -> list[str]:
        with self._lock:
            return list(self._assertions)

    def received_forms(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(f) for f in self._forms]

    def record_request(self, form: Mapping[str, str]) -> None:
        """Log a token request as received, before faults or validation, for tests."""
        with self._lock:
            self._forms.append(dict(form))
            assertion = form.get("client_assertion")
            if assertion is not None:
                self._assertions.append(assertion)

    def lookup(self, token: str) -> TokenInfo | None:
        """The live token's info; None when unknown, revoked or expired."""
        with self._lock:
            info = self._tokens.get(token)
        if info is None or time.time() >= info.expires_at:
            return None
        return info

    # -- the token endpoint ----------------------------------------------------------------

    def issue(
        self, form: Mapping[str, str], authorization: str | None, token_url: str, ttl: int
    ) -> dict[str, object]:
        """Validate a client_credentials request and mint a token; raises TokenError."""
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            raise TokenError(
                "unsupported_grant_type",
                f"grant_type must be client_credentials, got {grant_type!r}",
            )
        client, claims_username = self._authenticate(form, authorization, token_url)
        granted = self._grant_scopes(client, form.get("scope"))
        token = "emu." + secrets.token_urlsafe(32)
        info = TokenInfo(
            client_id=client.client_id,
            scopes=frozenset(s.lower() for s in granted),
            expires_at=time.time() + ttl,
            username=form.get("username") or claims_username,
        )
        with self._lock:
            self._tokens[token] = info
            self._issued.append(token)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": " ".join(granted),
        }

    def _client(self, client_id: str) -> Client:
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            raise TokenError("invalid_client", "unknown client")
        return client

    def _authenticate(
        self, form: Mapping[str, str], authorization: str | None, token_url: str
    ) -> tuple[Client, str | None]:
        """Exactly one of: form secret, Basic header, JWT assertion (RFC 6749 §2.3)."""
        basic = _basic_credentials(authorization)
        has_secret = "client_secret" in form
        has_assertion = "client_assertion" in form or "client_assertion_type" in form
        if sum((basic is not None, has_secret, has_assertion)) > 1:
            raise TokenError("invalid_request", "more than one client authentication method used")
        if has_assertion:
            return self._authenticate_assertion(form, token_url)
        if basic is not None:
            client_id, secret = basic
            if form.get("client_id", client_id) != client_id:
                raise TokenError("invalid_client", "client_id differs from the Basic credentials")
        elif has_secret:
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        else:
            raise TokenError("invalid_client", "no client authentication supplied")
        client = self._client(client_id)
        # Constant-time compare; the description never repeats the secret.
        if client.secret is None or not secrets.compare_digest(client.secret.encode(), secret.encode()):
            raise TokenError("invalid_client", "invalid client secret")
        return client, None

    def _authenticate_assertion(self, form: Mapping[str, str], token_url: str) -> tuple[Client, str | None]:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise TokenError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_client", "client_assertion is not a well-formed JWT") from exc
        if header.get("alg") != "RS256":
            raise TokenError("invalid_client", "assertion alg must be RS256")
        iss, sub = unverified.get("iss"), unverified.get("sub")
        if not isinstance(iss, str) or iss != sub:
            raise TokenError("invalid_client", "assertion iss and sub must both be the client id")
        if form.get("client_id", iss) != iss:
            raise TokenError("invalid_client", "client_id differs from the assertion iss")
        client = self._client(iss)
        if client.public_key is None:
            raise TokenError("invalid_client", "client has no registered certificate")
        self._check_key_id(header, client)
        try:
            # Only the signature is checked by PyJWT; claims are checked below with exact messages.
            claims = jwt.decode(
                assertion,
                key=client.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "verify_iss": False},
            )  # fmt: skip
        except jwt.InvalidSignatureError as exc:
            raise TokenError("invalid_client", "assertion signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_client", f"assertion rejected: {exc}") from exc
        self._check_claims(claims, token_url)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise TokenError("invalid_client", "assertion jti missing")
        with self._lock:
            if (client.client_id, jti) in self._seen_jti:
                raise TokenError("invalid_client", "jti replayed")
            self._seen_jti.add((client.client_id, jti))
        username = claims.get("username")  # Cloud Governance delegated user, as a claim
        return client, username if isinstance(username, str) else None

    @staticmethod
    def _check_key_id(header: Mapping[str, object], client: Client) -> None:
        # Strict on purpose: the real service's rule is undocumented, and this is what the primary
        # .NET sample (X509SigningCredentials) sends. A base64url kid (PowerShell sample) fails.
        kid, x5t = header.get("kid"), header.get("x5t")
        if kid is None and x5t is None:
            raise TokenError("invalid_client", "assertion header needs kid or x5t")
        if kid is not None and kid != client.kid:
            raise TokenError(
                "invalid_client", "kid must be the certificate SHA-1 thumbprint in uppercase hex"
            )
        if x5t is not None and x5t != client.x5t:
            raise TokenError(
                "invalid_client", "x5t must be the base64url SHA-1 thumbprint of the certificate"
            )

    @staticmethod
    def _check_claims(claims: Mapping[str, object], token_url: str) -> None:
        aud = claims.get("aud")
        # RFC 7523 allows an audience list; its entries must still match the URL exactly.
        if not (aud == token_url or (isinstance(aud, list) and token_url in aud)):
            raise TokenError("invalid_client", f"assertion aud must be {token_url}")
        now = time.time()
        times: dict[str, float] = {}
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TokenError("invalid_client", f"assertion {name} must be a number")
            times[name] = float(value)
        if "exp" not in times:
            raise TokenError("invalid_client", "assertion exp missing")
        if times["exp"] <= now - CLOCK_SKEW:
            raise TokenError("invalid_client", "assertion expired")
        if times.get("nbf", now) > now + CLOCK_SKEW:
            raise TokenError("invalid_client", "assertion not yet valid (nbf in the future)")
        if times.get("iat", now) > now + CLOCK_SKEW:
            raise TokenError("invalid_client", "assertion issued in the future (iat)")
        issued = times.get("nbf", times.get("iat", now))
        if times["exp"] - issued > MAX_ASSERTION_LIFETIME:
            raise TokenError("invalid_client", f"assertion lifetime exceeds {MAX_ASSERTION_LIFETIME} seconds")

    @staticmethod
    def _grant_scopes(client: Client, scope: str | None) -> list[str]:
        requested = (scope or "").split()
        if not requested:
            return list(client.scopes)
        granted: list[str] = []
        for item in requested:
            canonical = client.canonical_scope(item)
            if canonical is None:
                raise TokenError("invalid_scope", f"scope {item!r} is not granted to this client")
            if canonical not in granted:
                granted.append(canonical)
        return granted
