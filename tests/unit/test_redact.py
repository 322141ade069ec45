"""Unit tests of scrub: every run of 8+ characters of a secret goes, and nothing else does."""

from __future__ import annotations

import pytest

from airflow_provider_aos.redact import FRAGMENT, REDACTED, scrub, scrub_and_cut

SECRET = "Sup3r-S3cret-Value-0123456789"


def fragments(secret: str) -> set[str]:
    return {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}


def assert_no_fragment(text: str, secret: str) -> None:
    leaked = [f for f in fragments(secret) if f in text]
    assert not leaked, leaked


def test_whole_secret_is_replaced_and_the_rest_kept() -> None:
    assert scrub(f"bad secret {SECRET} for client", [SECRET]) == f"bad secret {REDACTED} for client"


@pytest.mark.parametrize(
    "piece",
    [SECRET[:8], SECRET[:15], SECRET[7:20], SECRET[-8:], SECRET[-12:], SECRET[3:11]],
    ids=["head-8", "head-15", "middle", "tail-8", "tail-12", "middle-8"],
)
@pytest.mark.parametrize("where", ["start", "middle", "end", "alone"])
def test_fragment_anywhere_is_replaced(piece: str, where: str) -> None:
    text = {
        "start": f"{piece} rest",
        "middle": f"before {piece} after",
        "end": f"text {piece}",
        "alone": piece,
    }[where]
    scrubbed = scrub(text, [SECRET])

    assert_no_fragment(scrubbed, SECRET)
    assert REDACTED in scrubbed
    assert scrubbed.replace(REDACTED, piece) == text  # only the fragment went


def test_seven_characters_of_a_long_secret_are_kept() -> None:
    """Shorter runs are common words; the threshold is what makes the scrub usable on prose."""
    assert scrub(f"x {SECRET[: FRAGMENT - 1]} y", [SECRET]) == f"x {SECRET[: FRAGMENT - 1]} y"


def test_every_occurrence_is_replaced() -> None:
    assert scrub(f"{SECRET}, again {SECRET}", [SECRET]) == f"{REDACTED}, again {REDACTED}"


def test_adjacent_fragments_become_one_marker() -> None:
    assert scrub(SECRET + SECRET, [SECRET]) == REDACTED


def test_overlapping_secrets_are_both_covered() -> None:
    first, second = "abcdefghijklmnop", "ijklmnopqrstuvwx"  # share "ijklmnop"
    text = "<" + "abcdefghijklmnopqrstuvwx" + ">"
    scrubbed = scrub(text, [first, second])

    assert scrubbed == f"<{REDACTED}>"
    assert_no_fragment(scrubbed, first)
    assert_no_fragment(scrubbed, second)


def test_many_secrets_each_scrubbed() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
    text = f"token {token[:20]} secret {SECRET[-10:]}"
    scrubbed = scrub(text, [None, "", token, SECRET])

    assert_no_fragment(scrubbed, token)
    assert_no_fragment(scrubbed, SECRET)
    assert scrubbed == f"token {REDACTED} secret {REDACTED}"


@pytest.mark.parametrize("secret", ["abcd", "abc1234"], ids=["4-chars", "7-chars"])
def test_short_secret_is_replaced_only_whole(secret: str) -> None:
    assert scrub(f"x {secret} y", [secret]) == f"x {REDACTED} y"
    assert scrub(f"x {secret[:-1]} y", [secret]) == f"x {secret[:-1]} y"


def test_secret_under_four_characters_is_ignored() -> None:
    """Three characters would match all over ordinary text; such a secret cannot be protected by scrubbing."""
    assert scrub("the abc of it", ["abc"]) == "the abc of it"


@pytest.mark.parametrize("text", ["", None])
def test_empty_text(text: str | None) -> None:
    assert scrub(text or "", [SECRET]) == ""
    assert scrub_and_cut(text, [SECRET], 10) is None


def test_no_secrets_leaves_the_text_alone() -> None:
    assert scrub("anything at all", []) == "anything at all"
    assert scrub("anything at all", [None, ""]) == "anything at all"


@pytest.mark.parametrize(
    "text",
    [
        "invalid_client: the client secret has expired",
        "Server error 0123456 at Value-0",  # 7-character runs of the secret only
        "Sup3r S3cret Value 1234567",  # same words, other separators: no run of 8 in common
    ],
)
def test_no_false_positives_on_unrelated_text(text: str) -> None:
    assert scrub(text, [SECRET]) == text


def test_scrub_and_cut_scrubs_before_cutting() -> None:
    """Cutting first could leave a head of the secret shorter than the whole but 8+ long."""
    text = "." * 95 + SECRET
    for limit in range(90, len(text) + 1):
        cut = scrub_and_cut(text, [SECRET], limit)
        assert cut is not None
        assert len(cut) <= limit
        assert_no_fragment(cut, SECRET)
