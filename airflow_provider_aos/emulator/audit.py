"""Graph ``GET /aos/audit`` (audit.md): parameters, skipToken paging and the admin record count."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlencode

from .config import EmulatorConfig
from .data import GEO_LOCATIONS, PRODUCT_TYPES, AuditData, AuditFilter, to_epoch_us, to_utc
from .routing import Reply, Request, Route, graph_error

AUDIT_SCOPE = "audit.read.all"
MAX_WINDOW = timedelta(days=7)


def canonical_values(name: str, raw: Iterable[str] | None, allowed: Iterable[str]) -> tuple[str, ...] | None:
    """Filter values from repeated and/or comma-separated params, case-insensitively canonical."""
    if raw is None:
        return None
    if isinstance(raw, str):  # a lone string from Python callers, not a list of characters
        raw = [raw]
    table = {a.lower(): a for a in allowed}
    out: list[str] = []
    for chunk in raw:
        for item in (part.strip() for part in chunk.split(",")):
            if not item:
                continue
            canonical = table.get(item.lower())
            if canonical is None:
                raise ValueError(f"unknown {name} value {item!r}")
            if canonical not in out:
                out.append(canonical)
    return tuple(out) or None


def _parse_time(name: str, value: str | None) -> datetime:
    if value is None or not value.strip():
        raise ValueError(f"{name} is required")
    try:
        return to_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        raise ValueError(f"{name} is not a valid ISO 8601 date-time: {value!r}") from None


@dataclass(frozen=True)
class AuditQuery:
    start_raw: str
    end_raw: str
    start_us: int
    end_us: int
    products: tuple[str, ...] | None
    geos: tuple[str, ...] | None
    skip_token: str | None


def parse_audit_query(params: Mapping[str, list[str]], *, enforce_limit: bool) -> AuditQuery:
    """Validate `/aos/audit` parameters (names already lower-cased); ValueError = 400 message."""
    start_raw = params.get("starttime", [None])[0]
    end_raw = params.get("endtime", [None])[0]
    start = _parse_time("startTime", start_raw)
    end = _parse_time("endTime", end_raw)
    if end < start:
        raise ValueError("endTime must not be earlier than startTime")
    if enforce_limit and end - start > MAX_WINDOW:
        raise ValueError("The time range between startTime and endTime cannot exceed 7 days.")
    return AuditQuery(
        start_raw=start_raw or "",  # never empty here: _parse_time rejected a missing value
        end_raw=end_raw or "",
        start_us=to_epoch_us(start),
        end_us=to_epoch_us(end),
        products=canonical_values("productTypes", params.get("producttypes"), PRODUCT_TYPES),
        geos=canonical_values("geoLocations", params.get("geolocations"), GEO_LOCATIONS),
        skip_token=params.get("skiptoken", [None])[0],
    )


class AuditService:
    """Serves the seeded audit log (``AuditData``, shared with the emulator as ``_data``)."""

    def __init__(self, data: AuditData) -> None:
        self.data = data

    def routes(self) -> list[Route]:
        return [
            Route(
                method="GET",
                pattern=re.compile(r"/aos/audit"),
                name="audit",
                scope=AUDIT_SCOPE,
                handler=self.handle,
                error=graph_error,
                error_stat="audit_error",
            )
        ]

    def handle(self, req: Request) -> Reply:
        try:
            q = parse_audit_query(req.params, enforce_limit=True)
            records, next_link = self.page(q, req.config, req.graph_url)
        except ValueError as exc:
            reply = graph_error(400, str(exc))
            reply.stat = "audit_error"
            return reply
        # Slept here, not in the front, because only this module knows the page's size; the request
        # still holds its concurrency slot (server.py), so a slow full page keeps a slot busy.
        if req.config.latency_per_record > 0 and records:
            time.sleep(req.config.latency_per_record * len(records))
        return Reply(200, {"nextLink": next_link, "data": records})

    def count(self, params: Mapping[str, list[str]]) -> int:
        """The admin ``GET /_emulator/audit/count`` (params lower-cased; ``endInclusive``)."""
        q = parse_audit_query(params, enforce_limit=False)
        inclusive = params.get("endinclusive", ["false"])[0].lower() in ("true", "1")
        lo, hi = self.data.index_range(q.start_us, q.end_us, end_inclusive=inclusive)
        return self.data.count(lo, hi, AuditFilter.build(q.products, q.geos))

    # -- skipToken -------------------------------------------------------------------------

    @staticmethod
    def _fingerprint(q: AuditQuery, cfg: EmulatorConfig) -> str:
        # Binds a skipToken to its query and data set, so a token reused elsewhere is rejected.
        key = f"{cfg.seed}|{cfg.records}|{q.start_us}|{q.end_us}|{q.products}|{q.geos}"
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()

    def _encode_skip(self, q: AuditQuery, cfg: EmulatorConfig, index: int) -> str:
        raw = json.dumps({"i": index, "q": self._fingerprint(q, cfg)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()

    def _decode_skip(self, q: AuditQuery, cfg: EmulatorConfig, token: str, lo: int, hi: int) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload = json.loads(raw)
        except (binascii.Error, ValueError):
            raise ValueError("invalid skipToken") from None
        index = payload.get("i") if isinstance(payload, dict) else None
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or payload.get("q") != self._fingerprint(q, cfg)
            or not lo <= index < hi
        ):
            raise ValueError("invalid skipToken")
        return index

    def page(
        self, q: AuditQuery, cfg: EmulatorConfig, graph_url: str
    ) -> tuple[list[dict[str, object]], str | None]:
        """One page of `/aos/audit` (its records and nextLink): the window is inclusive at both
        ends, by design."""
        lo, hi = self.data.index_range(q.start_us, q.end_us, end_inclusive=True)
        flt = AuditFilter.build(q.products, q.geos)
        first = lo if q.skip_token is None else self._decode_skip(q, cfg, q.skip_token, lo, hi)
        records, following = self.data.page(first, hi, cfg.page_size, flt)
        next_link = None
        if following is not None:
            pairs = [("startTime", q.start_raw), ("endTime", q.end_raw)]
            pairs += [("productTypes", p) for p in q.products or ()]
            pairs += [("geoLocations", g) for g in q.geos or ()]
            pairs.append(("skipToken", self._encode_skip(q, cfg, following)))
            # Absolute URL on the configured host, never the request's Host header.
            next_link = f"{graph_url}/aos/audit?" + urlencode(pairs, quote_via=quote, safe=":")
        return records, next_link
