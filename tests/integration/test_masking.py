"""Minted tokens and assertions are registered with Airflow's secret masker the moment they exist."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import redact

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.hooks.aos import AosHook
from tests.conftest import CertBundle


def test_minted_token_is_masked(aos_connection):
    token = AosHook(aos_conn_id=aos_connection()).get_access_token("audit.read.all")
    assert redact(f"Authorization: Bearer {token}") == "Authorization: Bearer ***"


def test_client_assertion_is_masked(emulator: AosEmulator, aos_connection, cert_bundle: CertBundle):
    emulator.register_client(
        "masked-cert-client", certificate_pem=cert_bundle.cert_pem, scopes=["audit.read.all"]
    )
    conn = aos_connection(
        login="masked-cert-client",
        password=None,
        extra={"private_key": cert_bundle.key_pem, "certificate": cert_bundle.cert_pem},
    )
    token = AosHook(aos_conn_id=conn).get_access_token("audit.read.all")
    (assertion,) = emulator.received_assertions()
    assert redact(f"assertion={assertion}") == "assertion=***"
    assert redact(token) == "***"


def test_async_hook_masks_its_token_and_assertion(
    emulator: AosEmulator, aos_connection, cert_bundle: CertBundle
):
    import asyncio

    from airflow_provider_aos.hooks.aos import AosAsyncHook

    emulator.register_client(
        "masked-async-client", certificate_pem=cert_bundle.cert_pem, scopes=["audit.read.all"]
    )
    conn = aos_connection(
        login="masked-async-client",
        password=None,
        extra={"private_key": cert_bundle.key_pem, "certificate": cert_bundle.cert_pem},
    )

    async def token() -> str:
        async with AosAsyncHook(conn) as hook:
            return await hook.get_access_token("audit.read.all")

    value = asyncio.run(token())
    (assertion,) = emulator.received_assertions()
    assert redact(f"assertion={assertion}") == "assertion=***"
    assert redact(value) == "***"
