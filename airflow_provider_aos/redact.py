"""
Scrub secrets out of text we did not write (server error messages, exception strings).

A server may echo what we sent it: a bearer token, a client secret, a client assertion. Replacing
only whole values is not enough, since text is often cut short (a 200-character message can end in
the middle of a token) and a prefix of a secret is still a leak. So every run of
:data:`FRAGMENT` or more characters of any secret is replaced, wherever it stands. Callers scrub
first and truncate after, so nothing can be cut into a piece the scrub no longer recognises.
"""

from __future__ import annotations

from collections.abc import Iterable

FRAGMENT = 8
"""Shortest run of a secret's characters that is redacted (shorter runs are common words)."""
REDACTED = "***"


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every run of at least :data:`FRAGMENT` characters of any secret replaced by ``***``."""
    if not text:
        return text
    covered = bytearray(len(text))  # 1 where a character belongs to a fragment of a secret
    hit = False
    for secret in secrets:
        if not secret:
            continue
        if len(secret) < FRAGMENT:
            # A short secret can only be recognised whole.
            start = text.find(secret) if len(secret) >= 4 else -1
            while start != -1:
                covered[start : start + len(secret)] = b"\x01" * len(secret)
                hit = True
                start = text.find(secret, start + 1)
            continue
        grams = {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
        for i in range(len(text) - FRAGMENT + 1):
            if text[i : i + FRAGMENT] in grams:
                covered[i : i + FRAGMENT] = b"\x01" * FRAGMENT
                hit = True
    if not hit:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(REDACTED)
        else:
            j = i
            while j < len(text) and not covered[j]:
                j += 1
            out.append(text[i:j])
            i = j
    return "".join(out)


def scrub_and_cut(text: str | None, secrets: Iterable[str | None], limit: int) -> str | None:
    """Scrub, then cut to ``limit`` characters: the order that leaves no fragment behind."""
    if not text:
        return None
    return scrub(text, secrets)[:limit]
