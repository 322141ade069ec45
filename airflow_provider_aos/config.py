"""
From an Airflow connection to validated AOS settings.

Transport-free on purpose: the sync hook and its async twin (triggers) both build an
:class:`AosConnectionConfig` from a connection and share every rule written here.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_aos.exceptions import AosConfigError

log = logging.getLogger(__name__)

COMMERCIAL_IDENTITY = "https://identity.avepointonlineservices.com"
GOV_IDENTITY = "https://identity-gov.avepointonlineservices.com"
AOS2_IDENTITY = "https://identity-aos2.avepointonlineservices.com"
FEDRAMP_IDENTITY = "https://identity.online15.net"

# auth.md §1 / endpoints.md §1. The docs never print the Graph-host/identity-host pairs; they follow
# from the environment names (commercial, U.S. Government, AOS2, FedRAMP).
_COMMERCIAL_DATA_CENTERS = (
    "us", "au", "sg", "ca", "ne", "we", "fr", "de", "jp", "kr", "ch", "uk", "uae", "za", "qa",
    "gcp-au", "gcp-jp", "gcp-us", "gcp-we", "gcp-kr",
)  # fmt: skip
DATA_CENTERS: dict[str, tuple[str, str]] = {
    **{
        dc: (f"https://graph-{dc}.avepointonlineservices.com", COMMERCIAL_IDENTITY)
        for dc in _COMMERCIAL_DATA_CENTERS
    },
    "gov": ("https://graph-gov.avepointonlineservices.com", GOV_IDENTITY),
    "aos2": ("https://graph-aos2.avepointonlineservices.com", AOS2_IDENTITY),
    "fedramp": ("https://graphusgovapi.online15.net", FEDRAMP_IDENTITY),
}
"""data_center -> (Graph API base URL, identity service URL)."""

# Identity service for a Graph (or Cloud Governance API) host given in `host` without `identity_url`.
_IDENTITY_BY_HOST: dict[str, str] = {urlsplit(api).hostname or "": idp for api, idp in DATA_CENTERS.values()}
_IDENTITY_BY_HOST["graph.avepointonlineservices.com"] = COMMERCIAL_IDENTITY  # Elements
_IDENTITY_BY_HOST["go-api.avepointonlineservices.com"] = COMMERCIAL_IDENTITY  # Cloud Governance
_IDENTITY_BY_HOST["governance-api-us-gov.avepointonlineservices.com"] = GOV_IDENTITY

# Connection extras this provider reads. Anything else is reported (by name only) as a likely typo.
EXTRA_FIELDS = (
    "data_center",
    "identity_url",
    "scope",
    "private_key",
    "certificate",
    "private_key_passphrase",
    "certificate_path",
    "username",
)


class ConnectionLike(Protocol):
    """The parts of an Airflow ``Connection`` we read (both the SDK and the 2.x model have them)."""

    conn_id: str
    host: str | None
    port: int | None
    login: str | None
    password: str | None


def is_loopback(hostname: str | None) -> bool:
    """True for ``localhost`` and loopback IP literals: the only hosts allowed over plain http."""
    if not hostname:
        return False
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_url(value: str, *, field: str, port: int | None = None) -> str:
    """
    Validate a base URL: https, or http to a loopback host only; no user info, query or fragment.

    A value without a scheme is taken as https (Airflow URIs cannot carry one in ``host``). Error
    messages never quote the value, at most its host name: the rest may hold a password.
    """
    raw = value.strip()
    if "://" not in raw:
        raw = "https://" + raw
    example = "expected e.g. https://graph-us.avepointonlineservices.com"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - parsed lazily; raises ValueError for a bad port
    except ValueError:
        raise AosConfigError(field, f"is not a valid URL (bad host or port); {example}") from None
    if "@" in parts.netloc:
        # requests would send user:password as Basic auth in place of our bearer token, and the URL
        # would show up wherever the host is printed (test_connection, logs).
        raise AosConfigError(
            field,
            "must not contain a user name or password (user:password@host): the client ID and secret go "
            "in the connection's login and password. Remove everything up to the '@'.",
        )
    if parts.scheme not in ("http", "https"):
        raise AosConfigError(field, f"is not an http(s) URL; {example}")
    if not parts.hostname:
        raise AosConfigError(field, f"has no host name; {example}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise AosConfigError(
            field,
            f"plain http is refused for {parts.hostname!r}: tokens would travel unencrypted. "
            "Use https:// (http is allowed only for loopback hosts such as the local emulator).",
        )
    if parts.query or parts.fragment:
        raise AosConfigError(field, "must be a base URL without query string or fragment")
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, with the default port filled in, for same-origin checks."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def read_extras(extra: Mapping[str, Any], conn_type: str = "aos") -> dict[str, Any]:
    """
    Pick our fields out of a connection's extras, by name only (never forward extras blindly).

    Accepts the ``extra__aos__<name>`` spelling that older Airflow connection forms saved, and treats
    blank strings (what a cleared form field saves) as unset.
    """
    prefix = f"extra__{conn_type}__"
    picked: dict[str, Any] = {}
    for name in EXTRA_FIELDS:
        value = extra.get(name)
        if value is None:
            value = extra.get(prefix + name)
        value = _blank_to_none(value)
        if value is not None:
            picked[name] = value
    unknown = sorted(k for k in extra if k not in EXTRA_FIELDS and k.removeprefix(prefix) not in EXTRA_FIELDS)
    if unknown:
        log.warning(
            "Ignoring unknown extra field(s) %s of the AOS connection; known: %s", unknown, EXTRA_FIELDS
        )
    return picked


@dataclass(frozen=True)
class AosConnectionConfig:
    """
    Everything needed to talk to one AOS tenant, validated. Secret fields never appear in ``repr``.

    :param conn_id: the Airflow connection id.
    :param client_id: application (client) ID of the app registration (connection ``login``).
    :param api_url: Graph API base URL (``host``, else from ``data_center``).
    :param identity_url: identity service base URL (``identity_url``, else from ``data_center``/host).
    :param scope: default scope(s), space-separated (``scope``).
    :param client_secret: client secret (connection ``password``).
    :param private_key: PEM private key, or base64 PKCS#12 bundle (``private_key``).
    :param certificate: PEM certificate (``certificate``).
    :param private_key_passphrase: passphrase of the key or bundle (``private_key_passphrase``).
    :param certificate_path: a .pem or .pfx file on the worker (``certificate_path``).
    :param username: delegated user for Cloud Governance (``username``).
    """

    conn_id: str
    client_id: str
    api_url: str
    identity_url: str
    data_center: str | None = None
    scope: str | None = None
    username: str | None = None
    certificate_path: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    certificate: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)

    @property
    def uses_certificate(self) -> bool:
        return bool(self.private_key or self.certificate_path)

    @property
    def auth_method(self) -> str:
        return "certificate" if self.uses_certificate else "client_secret"

    def secrets(self) -> list[str]:
        """The secret values of this config, for scrubbing text that a server sends back."""
        return [s for s in (self.client_secret, self.private_key, self.private_key_passphrase) if s]

    @classmethod
    def from_connection(cls, conn: ConnectionLike, extra: Mapping[str, Any]) -> AosConnectionConfig:
        """
        Validate a connection. Every problem raises :class:`AosConfigError` naming the field to fix.

        :param conn: the Airflow connection.
        :param extra: its parsed extras (``extra_dejson``; async callers pass ``get_async_extra_dejson``).
        """
        ex = read_extras(extra)
        client_id = (conn.login or "").strip()
        if not client_id:
            raise AosConfigError(
                "login",
                f"connection {conn.conn_id!r} has no client ID. Put the application (client) ID of the "
                "app registered in AOS (Administration > App registrations) in the Client ID (login) field.",
            )
        # Stripped like the login: a secret pasted with a trailing newline would be refused as invalid_client.
        secret = (conn.password or "").strip() or None
        if not (secret or ex.get("private_key") or ex.get("certificate_path")):
            raise AosConfigError(
                "password",
                f"connection {conn.conn_id!r} has neither a client secret (password) nor a certificate "
                "(extra private_key or certificate_path). Add the app's client secret, or its certificate.",
            )

        data_center = ex.get("data_center")
        if data_center is not None:
            data_center = str(data_center).strip().lower()
            if data_center not in DATA_CENTERS:
                raise AosConfigError(
                    "extra.data_center",
                    f"unknown data center {data_center!r}; use one of {', '.join(DATA_CENTERS)}.",
                )
        host = _blank_to_none(conn.host)
        if host:
            api_url = normalize_url(host, field="host", port=conn.port)
        elif data_center:
            api_url = DATA_CENTERS[data_center][0]
        else:
            raise AosConfigError(
                "extra.data_center",
                "set the data center of your AOS tenant (e.g. 'us', 'we', 'jp', 'gov'), or the Graph API "
                f"base URL in host. Data centers: {', '.join(DATA_CENTERS)}.",
            )

        if ex.get("identity_url"):
            identity_url = normalize_url(str(ex["identity_url"]), field="extra.identity_url")
        elif data_center:
            identity_url = DATA_CENTERS[data_center][1]
        else:
            host_name = urlsplit(api_url).hostname or ""
            if host_name in _IDENTITY_BY_HOST:
                identity_url = _IDENTITY_BY_HOST[host_name]
            elif is_loopback(host_name):
                raise AosConfigError(
                    "extra.identity_url",
                    "a loopback host needs its identity service URL too (the emulator prints it)",
                )
            else:
                # A custom host (e.g. a Cloud Governance insider host): AOS commercial is the usual issuer.
                identity_url = COMMERCIAL_IDENTITY
                log.info("No identity_url or data_center on %s; using %s", conn.conn_id, identity_url)

        scope = ex.get("scope")
        return cls(
            conn_id=conn.conn_id,
            client_id=client_id,
            api_url=api_url,
            identity_url=identity_url,
            data_center=data_center,
            scope=" ".join(str(scope).split()) if scope else None,
            username=ex.get("username"),
            certificate_path=ex.get("certificate_path"),
            client_secret=secret,
            private_key=ex.get("private_key"),
            certificate=ex.get("certificate"),
            private_key_passphrase=ex.get("private_key_passphrase"),
        )
