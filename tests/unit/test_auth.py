"""Unit tests of credentials, client assertions, token responses and the token cache."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_provider_aos.auth import (
    AccessToken,
    CertificateCredential,
    ClientSecretCredential,
    TokenCache,
    certificate_validity_warning,
    credential_for,
    load_certificate_credential,
    parse_token_response,
)
from airflow_provider_aos.config import AosConnectionConfig
from airflow_provider_aos.exceptions import AosAuthError, AosConfigError
from airflow_provider_aos.hooks.aos import token_endpoint_from_discovery
from tests.conftest import CertBundle, self_signed_certificate

CLIENT_ID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
IDENTITY = "https://identity.avepointonlineservices.com"
TOKEN_URL = f"{IDENTITY}/connect/token"
PASSPHRASE = "correct horse battery staple"


def config(**fields: Any) -> AosConnectionConfig:
    return AosConnectionConfig(
        conn_id="aos_test",
        client_id=CLIENT_ID,
        api_url="https://graph-us.avepointonlineservices.com",
        identity_url=IDENTITY,
        **fields,
    )


def sha1(cert: x509.Certificate) -> bytes:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).digest()


def key_lines(pem: str) -> list[str]:
    """The lines of a PEM text that carry key material (not the BEGIN/END markers)."""
    return [line for line in pem.splitlines() if line.strip() and not line.startswith("-----")]


def assert_no_key_material(text: str, pem: str, *secrets: str) -> None:
    for line in key_lines(pem):
        assert line not in text
    for secret in secrets:
        assert secret not in text


def config_error(cfg: AosConnectionConfig) -> AosConfigError:
    with pytest.raises(AosConfigError) as exc_info:
        load_certificate_credential(cfg)
    return exc_info.value


# -- loading a certificate credential ----------------------------------------------------------


@pytest.fixture(
    params=[
        "pem-key-and-cert",
        "encrypted-pem",
        "pem-key-with-cert-appended",
        "clear-pem-with-harmless-passphrase",
        "pfx-b64-with-passphrase",
        "pfx-b64-without-passphrase",
        "pem-file",
        "pfx-file",
    ]
)
def certificate_config(
    request: pytest.FixtureRequest, cert_bundle: Any, tmp_path: Path
) -> AosConnectionConfig:
    """Every form in which a connection can hold the app's key and certificate."""
    b = cert_bundle
    if request.param == "pem-key-and-cert":
        return config(private_key=b.key_pem, certificate=b.cert_pem)
    if request.param == "encrypted-pem":
        return config(
            private_key=b.encrypted_key_pem(PASSPHRASE),
            certificate=b.cert_pem,
            private_key_passphrase=PASSPHRASE,
        )
    if request.param == "pem-key-with-cert-appended":
        return config(private_key=b.key_pem + "\n" + b.cert_pem)
    if request.param == "clear-pem-with-harmless-passphrase":
        return config(private_key=b.key_pem, certificate=b.cert_pem, private_key_passphrase=PASSPHRASE)
    if request.param == "pfx-b64-with-passphrase":
        return config(private_key=b.pfx_b64(PASSPHRASE), private_key_passphrase=PASSPHRASE)
    if request.param == "pfx-b64-without-passphrase":
        return config(private_key=b.pfx_b64(None))
    if request.param == "pem-file":
        path = tmp_path / "app.pem"
        path.write_text(b.key_pem + b.cert_pem)
        return config(certificate_path=str(path))
    path = tmp_path / "app.pfx"
    path.write_bytes(b.pfx(PASSPHRASE))
    return config(certificate_path=str(path), private_key_passphrase=PASSPHRASE)


def test_certificate_credential_loads(certificate_config: AosConnectionConfig, cert_bundle: Any) -> None:
    credential = load_certificate_credential(certificate_config)

    assert credential.client_id == CLIENT_ID
    assert credential.thumbprint == cert_bundle.thumbprint
    assert credential.thumbprint == sha1(cert_bundle.cert)
    assert credential.private_key.private_numbers() == cert_bundle.key.private_numbers()


def test_credential_for_picks_the_certificate(
    certificate_config: AosConnectionConfig, cert_bundle: Any
) -> None:
    credential = credential_for(certificate_config)
    assert isinstance(credential, CertificateCredential)
    assert credential.thumbprint == cert_bundle.thumbprint


def test_credential_for_falls_back_to_the_secret() -> None:
    credential = credential_for(config(client_secret="the-secret"))
    assert credential == ClientSecretCredential(CLIENT_ID, "the-secret")


def test_credential_for_prefers_a_certificate_over_a_secret(cert_bundle: Any) -> None:
    credential = credential_for(
        config(client_secret="s", private_key=cert_bundle.key_pem, certificate=cert_bundle.cert_pem)
    )
    assert isinstance(credential, CertificateCredential)


def test_separate_certificate_field_wins_over_one_appended_to_the_key(
    cert_bundle: Any, other_cert_bundle: Any
) -> None:
    """extra.certificate is the certificate to use, even when the key text carries another."""
    error = config_error(
        config(private_key=cert_bundle.key_pem + cert_bundle.cert_pem, certificate=other_cert_bundle.cert_pem)
    )
    assert error.field == "extra.certificate"


# -- load errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        "this is not a key",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----",
        base64.b64encode(b"not a pfx file, just text").decode(),
    ],
    ids=["text", "damaged-pem", "base64-not-pfx"],
)
def test_unreadable_key_names_private_key(garbage: str) -> None:
    error = config_error(config(private_key=garbage))
    assert error.field == "extra.private_key"
    assert "bm90IGEga2V5" not in str(error)


def test_cert_only_in_private_key_names_private_key(cert_bundle: Any) -> None:
    error = config_error(config(private_key=cert_bundle.cert_pem))
    assert error.field == "extra.private_key"
    assert "PRIVATE KEY" in str(error)


def test_wrong_passphrase_of_pem_key(cert_bundle: Any) -> None:
    pem = cert_bundle.encrypted_key_pem(PASSPHRASE)
    error = config_error(
        config(private_key=pem, certificate=cert_bundle.cert_pem, private_key_passphrase="wrong-one")
    )

    assert error.field == "extra.private_key_passphrase"
    assert "passphrase" in str(error)
    assert_no_key_material(str(error), pem, PASSPHRASE, "wrong-one")


def test_wrong_passphrase_of_pkcs12(cert_bundle: Any) -> None:
    error = config_error(
        config(private_key=cert_bundle.pfx_b64(PASSPHRASE), private_key_passphrase="wrong-one")
    )

    assert error.field == "extra.private_key_passphrase"
    assert_no_key_material(str(error), cert_bundle.key_pem, PASSPHRASE, "wrong-one")


def test_wrong_passphrase_of_pfx_file(cert_bundle: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.pfx"
    path.write_bytes(cert_bundle.pfx(PASSPHRASE))
    error = config_error(config(certificate_path=str(path), private_key_passphrase="wrong-one"))

    assert error.field == "extra.private_key_passphrase"
    assert "wrong-one" not in str(error)


@pytest.mark.parametrize("form", ["pem", "pfx"])
def test_encrypted_key_without_passphrase(cert_bundle: Any, form: str) -> None:
    if form == "pem":
        cfg = config(private_key=cert_bundle.encrypted_key_pem(PASSPHRASE), certificate=cert_bundle.cert_pem)
    else:
        cfg = config(private_key=cert_bundle.pfx_b64(PASSPHRASE))
    error = config_error(cfg)

    assert error.field == "extra.private_key_passphrase"
    assert "passphrase" in str(error)
    assert PASSPHRASE not in str(error)


@pytest.mark.parametrize("appended", [False, True], ids=["certificate-field", "appended"])
def test_key_and_certificate_that_do_not_match(
    cert_bundle: Any, other_cert_bundle: Any, appended: bool
) -> None:
    if appended:
        cfg = config(private_key=cert_bundle.key_pem + other_cert_bundle.cert_pem)
    else:
        cfg = config(private_key=cert_bundle.key_pem, certificate=other_cert_bundle.cert_pem)
    error = config_error(cfg)

    assert error.field == "extra.certificate"
    assert "does not match" in str(error)
    assert_no_key_material(str(error), cert_bundle.key_pem)


def test_pem_key_without_any_certificate(cert_bundle: Any) -> None:
    error = config_error(config(private_key=cert_bundle.key_pem))

    assert error.field == "extra.certificate"
    assert "certificate" in str(error)
    assert_no_key_material(str(error), cert_bundle.key_pem)


def test_certificate_field_that_is_not_a_certificate(cert_bundle: Any) -> None:
    error = config_error(config(private_key=cert_bundle.key_pem, certificate="not a certificate"))
    assert error.field == "extra.certificate"


def ec_key_and_cert() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_certificate(key, "aos-ec")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("source", ["private_key", "certificate_path"])
def test_non_rsa_key_is_refused(source: str, tmp_path: Path) -> None:
    key_pem, cert_pem = ec_key_and_cert()
    if source == "private_key":
        cfg = config(private_key=key_pem, certificate=cert_pem)
    else:
        path = tmp_path / "ec.pem"
        path.write_text(key_pem + cert_pem)
        cfg = config(certificate_path=str(path))
    error = config_error(cfg)

    assert error.field == f"extra.{source}"
    assert "RSA" in str(error)
    assert_no_key_material(str(error), key_pem)


def test_missing_certificate_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pfx"
    error = config_error(config(certificate_path=str(path)))

    assert error.field == "extra.certificate_path"
    assert str(path) in str(error)


def test_load_errors_are_config_errors_with_the_field_in_the_message(cert_bundle: Any) -> None:
    error = config_error(config(private_key=cert_bundle.key_pem))
    assert isinstance(error, ValueError)
    assert str(error).startswith("extra.certificate: ")


def der_key(cert_bundle: CertBundle, passphrase: str | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return cert_bundle.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_der_private_key_file_says_what_it_is(cert_bundle: Any, tmp_path: Path, encrypted: bool) -> None:
    """A DER key is not a .pfx: say so, rather than ask for a passphrase that cannot help."""
    path = tmp_path / "app.key"
    path.write_bytes(der_key(cert_bundle, PASSPHRASE if encrypted else None))
    error = config_error(config(certificate_path=str(path)))

    assert error.field == "extra.certificate_path"
    assert "DER-encoded private key" in str(error)
    assert ".pem" in str(error)
    assert ".pfx" in str(error)
    assert "passphrase" not in str(error)


@pytest.mark.parametrize("source", ["certificate_path", "private_key"])
def test_der_certificate_without_key_says_what_it_is(cert_bundle: Any, tmp_path: Path, source: str) -> None:
    der = cert_bundle.cert.public_bytes(serialization.Encoding.DER)
    if source == "certificate_path":
        path = tmp_path / "app.cer"
        path.write_bytes(der)
        cfg = config(certificate_path=str(path))
    else:
        cfg = config(private_key=base64.b64encode(der).decode())
    error = config_error(cfg)

    assert error.field == f"extra.{source}"
    assert "DER-encoded certificate" in str(error)
    assert "without a private key" in str(error)
    assert ".pfx" in str(error)
    assert "passphrase" not in str(error)


def test_pem_certificate_file_without_key_says_what_it_is(cert_bundle: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.cer"
    path.write_text(cert_bundle.cert_pem)
    error = config_error(config(certificate_path=str(path)))

    assert error.field == "extra.certificate_path"
    assert "only a certificate" in str(error)
    assert ".pfx" in str(error)


def escaped(pem: str, newline: str = "\\n") -> str:
    """A PEM as an environment variable or secrets manager may hold it: line breaks as literal escapes."""
    return pem.strip().replace("\n", newline)


@pytest.mark.parametrize(
    "fields",
    [
        lambda b: {"private_key": escaped(b.key_pem), "certificate": b.cert_pem},
        lambda b: {"private_key": b.key_pem, "certificate": escaped(b.cert_pem)},
        lambda b: {"private_key": escaped(b.key_pem), "certificate": escaped(b.cert_pem)},
        lambda b: {"private_key": escaped(b.key_pem + b.cert_pem)},
        lambda b: {"private_key": escaped(b.key_pem, "\\r\\n"), "certificate": escaped(b.cert_pem, "\\r\\n")},
    ],
    ids=["key", "certificate", "both", "key-with-certificate-appended", "crlf"],
)
def test_pem_with_literal_newline_escapes_is_accepted(cert_bundle: Any, fields: Any) -> None:
    cfg = config(**fields(cert_bundle))
    assert "\\n" in (cfg.private_key or "") + (cfg.certificate or "")  # the test really escapes something

    credential = load_certificate_credential(cfg)

    assert credential.thumbprint == cert_bundle.thumbprint


# -- certificate validity ----------------------------------------------------------------------


def certificate_valid(cert_bundle: Any, not_before: dt.datetime, not_after: dt.datetime) -> str:
    """A PEM certificate for the bundle's key with the given validity (self-signed)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aos-validity-test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_bundle.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(cert_bundle.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("not_before", "not_after", "expected"),
    [
        (
            dt.datetime(2024, 3, 4, tzinfo=dt.UTC),
            dt.datetime(2025, 3, 4, 5, 6, tzinfo=dt.UTC),
            "expired on 2025-03-04 05:06 UTC",
        ),
        (
            dt.datetime(2099, 1, 2, 3, 4, tzinfo=dt.UTC),
            dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
            "not valid before 2099-01-02 03:04 UTC",
        ),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_certificate_outside_its_validity_is_warned_about(
    cert_bundle: Any,
    caplog: pytest.LogCaptureFixture,
    not_before: dt.datetime,
    not_after: dt.datetime,
    expected: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_aos.auth")
    cert_pem = certificate_valid(cert_bundle, not_before, not_after)

    credential = load_certificate_credential(config(private_key=cert_bundle.key_pem, certificate=cert_pem))

    # Still loaded: the identity service decides; we say why it will likely refuse.
    assert credential.thumbprint == sha1(x509.load_pem_x509_certificate(cert_pem.encode()))
    assert credential.validity_warning is not None
    assert expected in credential.validity_warning
    assert "aos-validity-test" in credential.validity_warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert expected in warnings[0]
    assert "aos_test" in warnings[0]  # which connection
    assert_no_key_material(warnings[0] + repr(credential), cert_bundle.key_pem)


def test_valid_certificate_has_no_warning(cert_bundle: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_aos.auth")
    credential = load_certificate_credential(
        config(private_key=cert_bundle.key_pem, certificate=cert_bundle.cert_pem)
    )

    assert credential.validity_warning is None
    assert not caplog.records


def test_certificate_validity_warning_boundaries(cert_bundle: Any) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    cert = x509.load_pem_x509_certificate(certificate_valid(cert_bundle, start, end).encode())

    assert certificate_validity_warning(cert, start) is None
    assert certificate_validity_warning(cert, end) is None
    assert "expired" in (certificate_validity_warning(cert, end + dt.timedelta(seconds=1)) or "")
    assert "not valid before" in (certificate_validity_warning(cert, start - dt.timedelta(seconds=1)) or "")


# -- the client assertion ----------------------------------------------------------------------


@pytest.fixture
def credential(cert_bundle: Any) -> CertificateCredential:
    return load_certificate_credential(
        config(private_key=cert_bundle.key_pem, certificate=cert_bundle.cert_pem)
    )


def decode(assertion: str, cert_bundle: Any, audience: str = TOKEN_URL) -> dict[str, Any]:
    return jwt.decode(assertion, key=cert_bundle.cert.public_key(), algorithms=["RS256"], audience=audience)


def test_assertion_header_identifies_the_certificate(
    credential: CertificateCredential, cert_bundle: Any
) -> None:
    header = jwt.get_unverified_header(credential.make_assertion(TOKEN_URL))
    digest = sha1(cert_bundle.cert)

    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"
    assert header["kid"] == digest.hex().upper()
    assert len(header["kid"]) == 40
    assert header["x5t"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert "=" not in header["x5t"]
    assert base64.urlsafe_b64decode(header["x5t"] + "=") == digest


def test_assertion_claims(credential: CertificateCredential, cert_bundle: Any) -> None:
    audience = "https://identity-gov.avepointonlineservices.com/connect/token"
    now = time.time()
    claims = decode(credential.make_assertion(audience, now=now), cert_bundle, audience=audience)

    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == audience
    assert claims["iat"] == int(now)
    assert claims["nbf"] <= claims["iat"]
    assert 0 < claims["exp"] - claims["iat"] <= 600
    assert "username" not in claims


def test_assertion_is_signed_by_the_certificates_key(
    credential: CertificateCredential, other_cert_bundle: Any
) -> None:
    assertion = credential.make_assertion(TOKEN_URL)
    with pytest.raises(jwt.InvalidSignatureError):
        decode(assertion, other_cert_bundle)


def test_assertion_for_another_audience_is_rejected(
    credential: CertificateCredential, cert_bundle: Any
) -> None:
    assertion = credential.make_assertion(TOKEN_URL)
    with pytest.raises(jwt.InvalidAudienceError):
        decode(assertion, cert_bundle, audience="https://identity.online15.net/connect/token")


def test_assertion_is_short_lived(credential: CertificateCredential, cert_bundle: Any) -> None:
    """An assertion minted 11 minutes ago has expired."""
    old = credential.make_assertion(TOKEN_URL, now=dt.datetime.now(dt.UTC).timestamp() - 660)
    with pytest.raises(jwt.ExpiredSignatureError):
        decode(old, cert_bundle)


def test_each_assertion_has_a_new_jti(credential: CertificateCredential, cert_bundle: Any) -> None:
    first = decode(credential.make_assertion(TOKEN_URL), cert_bundle)
    second = decode(credential.make_assertion(TOKEN_URL), cert_bundle)
    assert first["jti"]
    assert first["jti"] != second["jti"]


def test_username_claim_only_when_given(credential: CertificateCredential, cert_bundle: Any) -> None:
    claims = decode(credential.make_assertion(TOKEN_URL, username="admin@contoso.com"), cert_bundle)
    assert claims["username"] == "admin@contoso.com"


def test_certificate_token_form(credential: CertificateCredential, cert_bundle: Any) -> None:
    form = credential.token_form(scope="audit.read.all", token_endpoint=TOKEN_URL, username=None)

    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["scope"] == "audit.read.all"
    assert "client_secret" not in form
    assert "username" not in form
    assert decode(form["client_assertion"], cert_bundle)["aud"] == TOKEN_URL


def test_certificate_token_form_with_username(credential: CertificateCredential, cert_bundle: Any) -> None:
    form = credential.token_form(scope=None, token_endpoint=TOKEN_URL, username="admin@contoso.com")

    assert form["username"] == "admin@contoso.com"
    assert "scope" not in form
    assert decode(form["client_assertion"], cert_bundle)["username"] == "admin@contoso.com"


def test_on_assertion_receives_each_assertion(cert_bundle: Any) -> None:
    seen: list[str] = []
    credential = load_certificate_credential(
        config(private_key=cert_bundle.key_pem, certificate=cert_bundle.cert_pem), on_assertion=seen.append
    )

    form = credential.token_form(scope="s", token_endpoint=TOKEN_URL, username=None)
    direct = credential.make_assertion(TOKEN_URL)

    assert seen == [form["client_assertion"], direct]


def test_certificate_credential_repr_hides_the_key(
    credential: CertificateCredential, cert_bundle: Any
) -> None:
    text = repr(credential)
    assert CLIENT_ID in text
    assert_no_key_material(text, cert_bundle.key_pem)
    assert str(cert_bundle.key.private_numbers().d) not in text
    assert "RSAPrivateKey" not in text


# -- client secret -----------------------------------------------------------------------------


def test_client_secret_token_form() -> None:
    credential = ClientSecretCredential(CLIENT_ID, "the-secret-value")

    assert credential.token_form(scope="audit.read.all", token_endpoint=TOKEN_URL, username=None) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": "the-secret-value",
        "scope": "audit.read.all",
    }
    with_user = credential.token_form(scope=None, token_endpoint=TOKEN_URL, username="admin@contoso.com")
    assert with_user["username"] == "admin@contoso.com"
    assert "scope" not in with_user


def test_client_secret_repr_hides_the_secret() -> None:
    text = repr(ClientSecretCredential(CLIENT_ID, "the-secret-value"))
    assert CLIENT_ID in text
    assert "the-secret-value" not in text


# -- token responses ---------------------------------------------------------------------------


def parse(
    status: int, body: Any, *, scope: str | None = "audit.read.all", secrets: tuple[str, ...] = ()
) -> AccessToken:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return parse_token_response(status, raw, scope=scope, token_url=TOKEN_URL, secrets=secrets, now=1000.0)


def auth_error(status: int, body: Any, **kwargs: Any) -> AosAuthError:
    with pytest.raises(AosAuthError) as exc_info:
        parse(status, body, **kwargs)
    return exc_info.value


@pytest.mark.parametrize("expires_in", [3600, "3600"])
def test_token_response_success(expires_in: Any) -> None:
    token = parse(200, {"access_token": "eyJ.token.value", "expires_in": expires_in, "token_type": "Bearer"})

    assert token.value == "eyJ.token.value"
    assert token.expires_at == 1000.0 + 3600
    assert token.lifetime == 3600
    assert token.scope == "audit.read.all"


def test_token_response_short_lifetime() -> None:
    token = parse(200, {"access_token": "t", "expires_in": 120})
    assert token.expires_at == 1120.0


@pytest.mark.parametrize(
    "expires_in",
    ["NaN", "Infinity", "-Infinity", '"NaN"', '"Infinity"', '"1e400"', "1" + "0" * 400],
    ids=["NaN", "Infinity", "-Infinity", "str-NaN", "str-Infinity", "str-overflow", "int-overflow"],
)
def test_non_finite_expires_in_is_refused(expires_in: str) -> None:
    """NaN would fetch a token per request, Infinity cache it forever, a huge int crash float()."""
    # Raw JSON: json.loads reads the bare NaN/Infinity literals some JSON writers emit.
    error = auth_error(200, f'{{"access_token": "t", "expires_in": {expires_in}}}')

    assert TOKEN_URL in str(error)
    assert "expires_in" in str(error)
    assert error.status == 200


@pytest.mark.parametrize(
    "expires_in",
    [0, -5, 1, 59.5, "0", "-3600"],
    ids=["zero", "negative", "one", "59.5", "str-zero", "str-negative"],
)
def test_tiny_expires_in_is_raised_to_a_minute(expires_in: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_aos.auth")
    token = parse(200, {"access_token": "t", "expires_in": expires_in})

    assert token.lifetime == 60.0
    assert token.expires_at == 1060.0
    # Reused for most of that minute (the refresh margin is a tenth of the lifetime), not per request.
    assert token.fresh(1000.0 + 50)
    assert not token.fresh(1000.0 + 55)
    assert any(TOKEN_URL in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("expires_in", [True, False, "soon", None, [3600], {"s": 1}, ""])
def test_unusable_expires_in_defaults_to_an_hour(expires_in: Any) -> None:
    """Tolerant on purpose: a bool (True is 1 in Python) or garbage means the documented hour."""
    token = parse(200, {"access_token": "t", "expires_in": expires_in})
    assert token.lifetime == 3600.0


def test_missing_expires_in_defaults_to_an_hour() -> None:
    assert parse(200, {"access_token": "t"}).lifetime == 3600.0


def test_token_response_scope_falls_back_to_the_granted_one() -> None:
    token = parse(200, {"access_token": "t", "expires_in": 3600, "scope": "audit.read.all"}, scope=None)
    assert token.scope == "audit.read.all"


def test_invalid_client_says_what_to_check() -> None:
    error = auth_error(400, {"error": "invalid_client"})

    assert error.error == "invalid_client"
    assert error.status == 400
    assert "Client ID" in str(error)
    assert "login" in str(error)
    assert "certificate" in str(error)


def test_invalid_scope_says_what_to_check() -> None:
    error = auth_error(400, {"error": "invalid_scope"}, scope="audit.read.all")

    assert error.error == "invalid_scope"
    assert "App registrations" in str(error)
    assert "extra.scope" in str(error)
    assert "audit.read.all" in str(error)


def test_unknown_error_names_the_endpoint_and_status() -> None:
    error = auth_error(503, "<html>Service Unavailable</html>")

    assert error.error is None
    assert error.status == 503
    assert TOKEN_URL in str(error)
    assert "503" in str(error)


def test_error_description_echoing_a_secret_is_scrubbed() -> None:
    secret = "Sup3r-S3cret-Value-0123456789"
    error = auth_error(
        401,
        {"error": "invalid_client", "error_description": f"bad secret {secret} for client"},
        secrets=(secret,),
    )

    assert secret not in str(error)
    assert "for client" in str(error)  # the rest of the server's text is kept


def test_long_error_description_does_not_leak_part_of_a_secret() -> None:
    """Truncation must not cut a secret in two and leave its first part unscrubbed."""
    secret = "Sup3r-S3cret-Value-0123456789"
    description = "." * 295 + secret
    error = auth_error(401, {"error": "invalid_client", "error_description": description}, secrets=(secret,))

    assert secret[:5] not in str(error)


def test_error_text_keeps_no_fragment_of_a_secret_at_any_offset_or_cut() -> None:
    """
    A server may echo a secret anywhere in its text, and cut it short itself. Whatever the position
    and the length of the echo, no run of 8 characters of the secret reaches the message.
    """
    secret = "Sup3r-S3cret-Value-0123456789"
    fragments = {secret[i : i + 8] for i in range(len(secret) - 7)}
    for offset in (*range(0, 20), *range(280, 310)):
        for cut in range(8, len(secret) + 1):
            echo = secret[:cut] if cut % 2 else secret[len(secret) - cut :]  # a head or a tail of it
            for field in ("error_description", "error"):
                text = "." * offset + echo + " ."
                error = auth_error(401, {field: text}, secrets=("other-secret-xyz", secret))
                leaked = [f for f in fragments if f in str(error)]
                assert not leaked, (field, offset, cut, leaked)


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer", "expires_in": 3600},
        {"access_token": ""},
        {"access_token": None},
        "",
        "not json",
    ],
)
def test_200_without_access_token_is_an_error(body: Any) -> None:
    error = auth_error(200, body)
    assert error.status == 200
    assert "access_token" in str(error)


def test_access_token_repr_hides_the_value() -> None:
    token = AccessToken(value="eyJ.secret.token", scope="audit.read.all", expires_at=4600.0, lifetime=3600.0)
    assert "eyJ.secret.token" not in repr(token)
    assert "audit.read.all" in repr(token)


# -- token cache -------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [(3600.0, 300.0), (600.0, 60.0), (120.0, 12.0)],
    ids=["one-hour", "ten-minutes", "two-minutes"],
)
def test_token_is_fresh_until_the_margin_before_expiry(lifetime: float, margin: float) -> None:
    """Refresh min(5 minutes, a tenth of the lifetime) before expiry."""
    clock = Clock(0.0)
    cache = TokenCache(clock=clock)
    token = AccessToken(value="t", scope="s", expires_at=lifetime, lifetime=lifetime)
    cache.put("s", token)

    clock.now = lifetime - margin - 1
    assert cache.get("s") is token
    clock.now = lifetime - margin
    assert cache.get("s") is None
    clock.now = lifetime + 1
    assert cache.get("s") is None


def test_cache_is_per_scope() -> None:
    cache = TokenCache(clock=Clock(0.0))
    token = AccessToken(value="t", scope="a", expires_at=3600.0, lifetime=3600.0)
    cache.put("a", token)

    assert cache.get("a") is token
    assert cache.get("b") is None
    assert cache.now() == 0.0


def test_evict_with_value_only_evicts_that_token() -> None:
    """A 401 for an old token must not evict the new one another thread just fetched."""
    cache = TokenCache(clock=Clock(0.0))
    new = AccessToken(value="new", scope="s", expires_at=3600.0, lifetime=3600.0)
    cache.put("s", new)

    cache.evict("s", "old")
    assert cache.get("s") is new
    cache.evict("s", "new")
    assert cache.get("s") is None


def test_evict_without_value_evicts_any_token() -> None:
    cache = TokenCache(clock=Clock(0.0))
    cache.put("s", AccessToken(value="t", scope="s", expires_at=3600.0, lifetime=3600.0))
    cache.evict("s")
    assert cache.get("s") is None
    cache.evict("absent")  # nothing to evict is fine


class SlowGetDict(dict[str, AccessToken]):
    """A dict whose ``get`` dawdles, to widen any window between an eviction's check and its delete."""

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        time.sleep(0.005)
        return value


def run_threads(count: int, work: Any) -> list[BaseException]:
    """Run ``work()`` in ``count`` threads released together; the exceptions they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # collected for the assertion in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


@pytest.mark.parametrize("value", ["t", None], ids=["this-token", "any-token"])
def test_concurrent_evictions_of_one_token_do_not_raise(value: str | None) -> None:
    """Many requests that got a 401 with the same token evict it at once: one wins, none raises."""
    cache = TokenCache(clock=Clock(0.0))
    cache._tokens = SlowGetDict()
    cache.put("s", AccessToken(value="t", scope="s", expires_at=3600.0, lifetime=3600.0))

    errors = run_threads(16, lambda: cache.evict("s", value))

    assert errors == []
    assert cache.get("s") is None


def test_concurrent_puts_gets_and_evictions_stay_consistent() -> None:
    cache = TokenCache(clock=Clock(0.0))
    tokens = [AccessToken(value=f"t{i}", scope="s", expires_at=3600.0, lifetime=3600.0) for i in range(4)]

    def work() -> None:
        for i in range(2000):
            token = tokens[i % len(tokens)]
            cache.put("s", token)
            cache.evict("s", token.value)
            cache.evict("s")
            got = cache.get("s")
            assert got is None or got in tokens

    assert run_threads(8, work) == []


def test_cache_calls_under_the_callers_lock_do_not_deadlock() -> None:
    """The hook holds ``cache.lock`` around get, fetch and put; a 401 evicts without it."""
    cache = TokenCache(clock=Clock(0.0))
    token = AccessToken(value="t", scope="s", expires_at=3600.0, lifetime=3600.0)
    done = threading.Event()

    def hook_like() -> None:
        with cache.lock:
            assert cache.get("s") is None
            cache.put("s", token)
            assert cache.get("s") is token
            cache.evict("s", "t")
        done.set()

    thread = threading.Thread(target=hook_like, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert done.is_set()


def test_eviction_does_not_wait_for_a_token_request_in_flight() -> None:
    cache = TokenCache(clock=Clock(0.0))
    cache.put("s", AccessToken(value="t", scope="s", expires_at=3600.0, lifetime=3600.0))
    evicted = threading.Event()

    def evict() -> None:
        cache.evict("s", "t")
        evicted.set()

    with cache.lock:  # another thread is fetching a token
        threading.Thread(target=evict, daemon=True).start()
        assert evicted.wait(timeout=5)
    assert cache.get("s") is None


# -- OIDC discovery ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        TOKEN_URL,
        "https://identity.avepointonlineservices.com:443/connect/token",
        "https://IDENTITY.avepointonlineservices.com/connect/token",
    ],
)
def test_discovery_endpoint_on_the_same_origin_is_used(endpoint: str) -> None:
    assert token_endpoint_from_discovery(IDENTITY, {"token_endpoint": endpoint}) == endpoint


@pytest.mark.parametrize(
    "document",
    [
        {"token_endpoint": "https://evil.example.com/connect/token"},
        {"token_endpoint": "https://identity.avepointonlineservices.com.evil.example.com/connect/token"},
        {"token_endpoint": "http://identity.avepointonlineservices.com/connect/token"},
        {"token_endpoint": "https://identity.avepointonlineservices.com:8443/connect/token"},
        {"token_endpoint": None},
        {"token_endpoint": ["https://identity.avepointonlineservices.com/connect/token"]},
        {},
        None,
        ["https://identity.avepointonlineservices.com/connect/token"],
    ],
    ids=[
        "other-host",
        "suffix-host",
        "other-scheme",
        "other-port",
        "null",
        "not-a-string",
        "missing",
        "no-document",
        "list",
    ],
)
def test_discovery_endpoint_elsewhere_or_missing_is_ignored(document: Any) -> None:
    assert token_endpoint_from_discovery(IDENTITY, document) is None
