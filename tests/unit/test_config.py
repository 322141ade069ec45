"""Unit tests of connection validation: every bad input names the field to fix."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_aos.config import DATA_CENTERS, AosConnectionConfig
from airflow_provider_aos.exceptions import AosConfigError

IDENTITY = "https://identity.avepointonlineservices.com"
IDENTITY_GOV = "https://identity-gov.avepointonlineservices.com"
IDENTITY_AOS2 = "https://identity-aos2.avepointonlineservices.com"
IDENTITY_FEDRAMP = "https://identity.online15.net"

# endpoints.md §1 (Graph base URLs) with auth.md §1 (identity service per environment).
EXPECTED_DATA_CENTERS = {
    "au": ("https://graph-au.avepointonlineservices.com", IDENTITY),
    "sg": ("https://graph-sg.avepointonlineservices.com", IDENTITY),
    "ca": ("https://graph-ca.avepointonlineservices.com", IDENTITY),
    "ne": ("https://graph-ne.avepointonlineservices.com", IDENTITY),
    "we": ("https://graph-we.avepointonlineservices.com", IDENTITY),
    "fr": ("https://graph-fr.avepointonlineservices.com", IDENTITY),
    "de": ("https://graph-de.avepointonlineservices.com", IDENTITY),
    "jp": ("https://graph-jp.avepointonlineservices.com", IDENTITY),
    "kr": ("https://graph-kr.avepointonlineservices.com", IDENTITY),
    "ch": ("https://graph-ch.avepointonlineservices.com", IDENTITY),
    "uk": ("https://graph-uk.avepointonlineservices.com", IDENTITY),
    "us": ("https://graph-us.avepointonlineservices.com", IDENTITY),
    "uae": ("https://graph-uae.avepointonlineservices.com", IDENTITY),
    "za": ("https://graph-za.avepointonlineservices.com", IDENTITY),
    "qa": ("https://graph-qa.avepointonlineservices.com", IDENTITY),
    "gcp-au": ("https://graph-gcp-au.avepointonlineservices.com", IDENTITY),
    "gcp-jp": ("https://graph-gcp-jp.avepointonlineservices.com", IDENTITY),
    "gcp-us": ("https://graph-gcp-us.avepointonlineservices.com", IDENTITY),
    "gcp-we": ("https://graph-gcp-we.avepointonlineservices.com", IDENTITY),
    "gcp-kr": ("https://graph-gcp-kr.avepointonlineservices.com", IDENTITY),
    "gov": ("https://graph-gov.avepointonlineservices.com", IDENTITY_GOV),
    "aos2": ("https://graph-aos2.avepointonlineservices.com", IDENTITY_AOS2),
    "fedramp": ("https://graphusgovapi.online15.net", IDENTITY_FEDRAMP),
}


@dataclass
class Conn:
    """The parts of an Airflow connection that the config reads."""

    conn_id: str = "aos_test"
    host: str | None = None
    port: int | None = None
    login: str | None = "11111111-2222-3333-4444-555555555555"
    password: str | None = "client-secret-value"


def load(extra: dict[str, Any] | None = None, **fields: Any) -> AosConnectionConfig:
    extra = {"data_center": "us"} if extra is None else extra
    return AosConnectionConfig.from_connection(Conn(**fields), extra)


def config_error(extra: dict[str, Any] | None = None, **fields: Any) -> AosConfigError:
    with pytest.raises(AosConfigError) as exc_info:
        load(extra, **fields)
    return exc_info.value


# -- missing credentials -----------------------------------------------------------------------


@pytest.mark.parametrize("login", [None, "", "   "])
def test_missing_client_id_names_login(login: str | None) -> None:
    error = config_error(login=login)
    assert error.field == "login"
    assert "client ID" in str(error)
    assert "aos_test" in str(error)


@pytest.mark.parametrize("password", [None, "", "  "])
def test_neither_secret_nor_key_names_password(password: str | None) -> None:
    error = config_error(password=password)
    assert error.field == "password"
    assert "client secret" in str(error)
    assert "private_key" in str(error)
    assert "certificate_path" in str(error)


@pytest.mark.parametrize(
    "password", [" client-secret-value", "client-secret-value\n", "\tclient-secret-value \r\n"]
)
def test_client_secret_is_stripped_like_the_login(password: str) -> None:
    """A secret pasted with a newline would otherwise be refused by the identity service."""
    config = load(password=password)
    assert config.client_secret == "client-secret-value"
    assert config.secrets() == ["client-secret-value"]


@pytest.mark.parametrize(
    "extra", [{"private_key": "-----BEGIN PRIVATE KEY-----"}, {"certificate_path": "/k.pfx"}]
)
def test_a_certificate_replaces_the_secret(extra: dict[str, Any]) -> None:
    config = load({"data_center": "us", **extra}, password=None)
    assert config.client_secret is None
    assert config.auth_method == "certificate"


# -- data center and hosts ---------------------------------------------------------------------


def test_every_documented_data_center_is_known() -> None:
    assert set(DATA_CENTERS) == set(EXPECTED_DATA_CENTERS)


@pytest.mark.parametrize(("data_center", "urls"), sorted(EXPECTED_DATA_CENTERS.items()))
def test_data_center_gives_graph_and_identity_urls(data_center: str, urls: tuple[str, str]) -> None:
    config = load({"data_center": data_center})
    assert (config.api_url, config.identity_url) == urls
    assert config.data_center == data_center


def test_data_center_is_case_and_space_insensitive() -> None:
    config = load({"data_center": " GCP-JP "})
    assert config.api_url == "https://graph-gcp-jp.avepointonlineservices.com"


def test_unknown_data_center_lists_the_valid_ones() -> None:
    error = config_error({"data_center": "mars"})
    assert error.field == "extra.data_center"
    assert "'mars'" in str(error)
    for data_center in ("us", "we", "gcp-us", "gov", "aos2", "fedramp"):
        assert data_center in str(error)


def test_neither_host_nor_data_center_names_data_center() -> None:
    error = config_error({})
    assert error.field == "extra.data_center"
    assert "host" in str(error)


def test_host_without_scheme_is_https() -> None:
    config = load({}, host="graph-we.avepointonlineservices.com")
    assert config.api_url == "https://graph-we.avepointonlineservices.com"


def test_port_is_appended_to_the_host() -> None:
    config = load({}, host="graph-we.avepointonlineservices.com", port=8443)
    assert config.api_url == "https://graph-we.avepointonlineservices.com:8443"


def test_trailing_slash_of_host_is_dropped() -> None:
    assert load({}, host="https://graph-we.avepointonlineservices.com/").api_url == (
        "https://graph-we.avepointonlineservices.com"
    )


@pytest.mark.parametrize(
    ("host", "identity"),
    [
        ("https://graph-gov.avepointonlineservices.com", IDENTITY_GOV),
        ("https://graph-aos2.avepointonlineservices.com", IDENTITY_AOS2),
        ("https://graphusgovapi.online15.net", IDENTITY_FEDRAMP),
        ("https://graph-gcp-kr.avepointonlineservices.com", IDENTITY),
        ("https://graph.avepointonlineservices.com", IDENTITY),  # Elements
    ],
)
def test_host_alone_implies_its_identity_service(host: str, identity: str) -> None:
    config = load({}, host=host)
    assert (config.api_url, config.identity_url) == (host, identity)


def test_host_overrides_the_data_centers_api_url() -> None:
    config = load({"data_center": "gov"}, host="https://custom.example.com")
    assert config.api_url == "https://custom.example.com"
    assert config.identity_url == IDENTITY_GOV


def test_identity_url_overrides_the_data_centers() -> None:
    config = load({"data_center": "us", "identity_url": "https://idp.example.com/"})
    assert config.api_url == EXPECTED_DATA_CENTERS["us"][0]
    assert config.identity_url == "https://idp.example.com"


@pytest.mark.parametrize("host", ["http://graph-us.avepointonlineservices.com", "http://10.0.0.5:8080"])
def test_plain_http_host_is_refused(host: str) -> None:
    error = config_error({"data_center": "us"}, host=host)
    assert error.field == "host"
    assert "https://" in str(error)


def test_plain_http_identity_url_is_refused() -> None:
    error = config_error({"data_center": "us", "identity_url": "http://identity.avepointonlineservices.com"})
    assert error.field == "extra.identity_url"
    assert "https://" in str(error)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST"])
def test_plain_http_to_loopback_is_accepted(host: str) -> None:
    config = load({"identity_url": f"http://{host}:9001"}, host=f"http://{host}:9000")
    assert config.api_url == f"http://{host}:9000"
    assert config.identity_url == f"http://{host}:9001"


def test_loopback_host_needs_an_identity_url() -> None:
    error = config_error({}, host="http://127.0.0.1:9000")
    assert error.field == "extra.identity_url"


@pytest.mark.parametrize("host", ["https://graph-us.avepointonlineservices.com/?a=1", "ftp://example.com"])
def test_host_that_is_not_a_base_url_is_refused(host: str) -> None:
    assert config_error({}, host=host).field == "host"


PASSWORD = "hunter2-Pa55word"


@pytest.mark.parametrize(
    "url",
    [
        f"https://admin:{PASSWORD}@graph-us.avepointonlineservices.com",
        f"admin:{PASSWORD}@graph-us.avepointonlineservices.com",  # no scheme: taken as https
        f"http://admin:{PASSWORD}@127.0.0.1:9000",  # loopback is no excuse
        f"https://:{PASSWORD}@graph-us.avepointonlineservices.com",  # password only
        f"https://{PASSWORD}@graph-us.avepointonlineservices.com",  # a token as the user name
        f"ftp://admin:{PASSWORD}@graph-us.avepointonlineservices.com",  # refused before the scheme is
        f"http://admin:{PASSWORD}@graph-us.avepointonlineservices.com",  # refused before plain http is
        f"https://admin:{PASSWORD}@graph-us.avepointonlineservices.com:8443/base?x=1",
    ],
    ids=["user-password", "no-scheme", "loopback", "password-only", "user-only", "ftp", "http", "port-query"],
)
@pytest.mark.parametrize("field", ["host", "extra.identity_url"])
def test_credentials_in_a_url_are_refused_without_echoing_them(url: str, field: str) -> None:
    """requests would send them as Basic auth instead of our bearer token; the message must not show them."""
    if field == "host":
        error = config_error({"data_center": "us"}, host=url)
    else:
        error = config_error({"data_center": "us", "identity_url": url})

    assert error.field == field
    assert "user name or password" in str(error)
    assert "login and password" in str(error)
    for leak in (PASSWORD, "admin:", PASSWORD[:8]):
        assert leak not in str(error)


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://graph.example.com/{PASSWORD}",
        f"https://graph.example.com/?password={PASSWORD}",
        f"https://graph.example.com/#{PASSWORD}",
        f"https://graph.example.com:{PASSWORD}",  # a port that is not a number
        f"https://[{PASSWORD}",  # an unbalanced IPv6 bracket
        f"https:///{PASSWORD}",  # no host at all
    ],
    ids=["scheme", "query", "fragment", "bad-port", "bad-ipv6", "no-host"],
)
def test_no_url_error_quotes_the_value(url: str) -> None:
    """Whatever is wrong with a URL, the message names the field, never the text that may hold a secret."""
    error = config_error({"data_center": "us"}, host=url)
    assert error.field == "host"
    assert PASSWORD not in str(error)


# -- extras ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_strings_are_unset(blank: str) -> None:
    config = load(
        {
            "data_center": "gov",
            "identity_url": blank,
            "scope": blank,
            "username": blank,
            "private_key": blank,
        },
        host=blank,
    )
    assert config.api_url == EXPECTED_DATA_CENTERS["gov"][0]
    assert config.identity_url == IDENTITY_GOV
    assert config.scope is None
    assert config.username is None
    assert config.private_key is None
    assert config.auth_method == "client_secret"


def test_blank_data_center_with_host_is_unset() -> None:
    config = load({"data_center": ""}, host="graph-jp.avepointonlineservices.com")
    assert config.data_center is None
    assert config.api_url == "https://graph-jp.avepointonlineservices.com"


def test_prefixed_extra_keys_are_accepted() -> None:
    config = load(
        {
            "extra__aos__data_center": "aos2",
            "extra__aos__scope": "audit.read.all",
            "extra__aos__username": "admin@contoso.com",
        }
    )
    assert config.api_url == EXPECTED_DATA_CENTERS["aos2"][0]
    assert config.identity_url == IDENTITY_AOS2
    assert config.scope == "audit.read.all"
    assert config.username == "admin@contoso.com"


def test_scope_whitespace_is_normalised() -> None:
    assert load({"data_center": "us", "scope": "  audit.read.all \n backup.read.all "}).scope == (
        "audit.read.all backup.read.all"
    )


def test_unknown_extra_key_is_logged_by_name_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_aos.config")

    load({"data_center": "us", "client_secrte": "value-that-must-not-be-logged"})

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("client_secrte" in message for message in warnings)
    assert not any("value-that-must-not-be-logged" in message for message in warnings)


def test_known_extra_keys_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_aos.config")

    load({"data_center": "us", "extra__aos__scope": "audit.read.all"})

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_repr_hides_secrets() -> None:
    config = load(
        {
            "data_center": "us",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
            "private_key_passphrase": "pass-phrase-value",
        },
        password="client-secret-value",
    )
    text = repr(config)
    assert "aos_test" in text  # it is the config's repr, not an empty one
    for secret in ("client-secret-value", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "pass-phrase-value"):
        assert secret not in text
    assert sorted(config.secrets()) == sorted(
        ["client-secret-value", config.private_key, "pass-phrase-value"]
    )
