"""
One streaming iterator for every pagination style of the AOS Graph API (endpoints.md §5).

:class:`PageIterator` asks a ``fetch`` callable for one page at a time and keeps only the page in
hand, so memory does not grow with the number of pages. What differs between endpoints is isolated
in small *style* objects that read a page body and say which request comes next:

- :class:`NextLinkPaging`: ``nextLink``/``nextlink`` (top level, under ``metadata`` or ``data``), an
  absolute URL (GET as-is), a relative link (resolved against the request), or an opaque token sent
  back as ``skipToken``/``skiptoken`` (styles A, B, C, F).
- :class:`PageIndexPaging`: ``pageIndex``/``pageSize``; follows ``metadata.nextLink`` when present,
  else counts pages until a short page or ``totalCount`` (styles D, F, I).
- :class:`TopSkipPaging`: ``top``/``skip``; follows ``nextLink`` when present, else ``skip += top`` (E).
- :class:`BodyTokenPaging`: the token goes back in the JSON body of a POST (G).
- :class:`StartIndexPaging`: ``startIndex`` sent back until it is null (H).

:class:`PageWalk` holds the per-page logic and the state of one walk, without I/O: given a page's
body it returns the records and the next request, refuses bodies that would lose records silently
(an error envelope in a 200, records in no documented place) and walks that would never end (a
request seen before, a long run of empty pages that still link on). :class:`PageIterator` drives it
with a sync ``fetch``; an async twin can drive the same walk and reuse the style objects as they are.
Checking that an absolute link points at the configured API host is the transport's job (the hook
refuses any other host before the bearer token is attached).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urljoin, urlsplit

import msgspec

from airflow_provider_aos.exceptions import AosApiError, AosPaginationError

Params = tuple[tuple[str, str], ...]
QueryParams = Mapping[str, Any] | Iterable[tuple[str, Any]] | None
"""Query parameters as callers give them: a mapping or pairs; lists become repeated parameters."""
DEFAULT_ITEM_KEYS = ("data", "value", "jobs", "values", "results", "items", "queriedItems")
# A few empty pages in a row happen (AOS scan jobs can end on one); dozens that keep linking on are
# a server bug that would otherwise walk forever.
DEFAULT_MAX_EMPTY_PAGES = 10


def to_params(params: QueryParams) -> Params:
    """
    Normalise query parameters: lists become repeated parameters (``a=1&a=2``, as the API expects),
    ``None`` is dropped, booleans are ``true``/``false`` and datetimes ISO 8601.
    """
    if params is None:
        return ()
    pairs = params.items() if isinstance(params, Mapping) else params
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        values = value if isinstance(value, list | tuple | set | frozenset) else [value]
        for v in values:
            if v is None:
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, datetime):
                v = v.isoformat()
            out.append((key, str(v)))
    return tuple(out)


def with_param(params: Params, name: str, value: str | int) -> Params:
    """``params`` with ``name`` set to ``value`` (replacing any value, case-insensitively)."""
    lowered = name.lower()
    return (*((k, v) for k, v in params if k.lower() != lowered), (name, str(value)))


def get_param(params: Params, name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in params if k.lower() == lowered), None)


@dataclass(frozen=True)
class PageRequest:
    """
    One page request. ``url`` is absolute, or a path under the API base URL (the query may be in it).

    :param url: absolute URL or API path.
    :param params: query parameters, in order; repeated names allowed.
    :param method: HTTP method.
    :param json: JSON body (POST-based paging).
    """

    url: str
    params: Params = ()
    method: str = "GET"
    json: Any = None


@dataclass
class Page:
    """A page of results: its number (from 1), its items, and the request that fetched it."""

    number: int
    items: list[Any]
    request: PageRequest


def _field(body: Any, *names: str) -> Any:
    if isinstance(body, Mapping):
        for name in names:
            if name in body:
                return body[name]
    return None


def find_next_link(body: Any) -> str | None:
    """``nextLink`` or ``nextlink`` at the top level, under ``metadata`` or under ``data``; None at the end."""
    for holder in (body, _field(body, "metadata"), _field(body, "data")):
        link = _field(holder, "nextLink", "nextlink", "NextLink")
        if isinstance(link, str) and link.strip():
            return link.strip()
    return None


def find_total(body: Any) -> int | None:
    for holder in (body, _field(body, "metadata"), _field(body, "data")):
        total = _field(holder, "totalCount", "totalNumber", "total")
        if isinstance(total, int) and not isinstance(total, bool):
            return total
    return None


def find_items(body: Any, keys: Iterable[str] = DEFAULT_ITEM_KEYS) -> list[Any] | None:
    """
    The records of a page body in any shape the docs show (endpoints.md §4); None if it has none.

    The shapes: a bare list; a list under one of ``keys``, beside ``metadata`` or an envelope
    (audit, DMSO, Elements, M365, Insights, Google, Opus ``queriedItems``); ``data`` as an object
    holding the list under one of ``keys`` (D365 and Salesforce ``data.jobs``, M365 unusual activities
    ``data.data``). One of ``keys`` present but ``null`` is an empty page: the key says where records
    would be, and .NET serialisers write an empty collection that way.

    ``data`` as any other object is *not* taken for one record. audit.md's model table types ``data``
    as an object, but the sample holding exactly one record shows a one-element array, so the table
    is a doc artefact; and a wrapper we do not know, taken for one record, would drop the records
    inside it without a word. Such a page is left to the caller to refuse.
    """
    keys = tuple(keys)
    if isinstance(body, list):
        return body
    if not isinstance(body, Mapping):
        return None
    holders = [body]
    if "data" in keys and isinstance(body.get("data"), Mapping):
        holders.append(body["data"])
    for holder in holders:  # a list anywhere wins over a null, whatever the key order
        for key in keys:
            value = holder.get(key)
            if isinstance(value, list):
                return value
    if any(key in holder and holder[key] is None for holder in holders for key in keys):
        return []
    return None


_TOP_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()


def decode_json(content: bytes) -> Any:
    """A body as Python objects (None for an empty body); ValueError when it is not JSON."""
    return json.loads(content) if content.strip() else None


def decode_records_raw(content: bytes, item_keys: Iterable[str] = DEFAULT_ITEM_KEYS) -> Any:
    """
    A page body whose record lists stay undecoded: each record a :class:`msgspec.Raw` (its JSON bytes).

    Everything else (links, counts, envelopes, ``data`` as an object) is decoded as usual, so
    :class:`PageWalk` reads the page exactly as it reads :func:`decode_json`'s. A caller that writes
    records as JSON can then write each one's bytes as they came, and decode only the fields it
    needs; that is most of the cost of a page saved. msgspec refuses what the standard library accepts
    (a lone surrogate such as ``"\\ud800"``, duplicate keys): such a page is decoded by
    :func:`decode_json` instead, its records as Python objects; callers handle both.

    Raises ValueError when the body is not JSON.
    """
    text = content.lstrip()
    if not text:
        return None
    try:
        if text[:1] == b"[":
            return _RAW_LIST.decode(content)
        if text[:1] != b"{":
            return _ANY.decode(content)
        keys = frozenset(item_keys)
        body: dict[str, Any] = {}
        for key, raw in _TOP_OBJECT.decode(content).items():
            # A Raw is a view of ``content``: no copy of the page is made here.
            if key in keys and memoryview(raw)[:1].tobytes() == b"[":
                body[key] = _RAW_LIST.decode(raw)
            else:
                body[key] = _ANY.decode(raw)
        return body
    except msgspec.DecodeError:
        return decode_json(content)  # raises ValueError when it is not JSON at all


def extract_items(body: Any, keys: Iterable[str] = DEFAULT_ITEM_KEYS) -> list[Any]:
    """Lenient :func:`find_items`: ``[]`` where it finds no records (for bodies already validated)."""
    return find_items(body, keys) or []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _key_list(mapping: Mapping[Any, Any], limit: int) -> str:
    names = [str(k)[:40] for k in list(mapping)[:limit]]
    more = f", ... ({len(mapping) - limit} more)" if len(mapping) > limit else ""
    return ", ".join(names) + more


def describe_shape(body: Any) -> str:
    """
    What a body holds, by key and JSON type only (and the keys of a nested object).

    Never a value: values may be tokens (a ``nextLink``), personal data or a server message quoting
    a secret, and this text ends up in task logs.
    """
    if not isinstance(body, Mapping):
        return f"a JSON {_json_type(body)}"
    parts = []
    for key, value in list(body.items())[:20]:
        kind = _json_type(value)
        if isinstance(value, Mapping) and value:
            kind += f" with keys {_key_list(value, 10)}"
        parts.append(f"{str(key)[:40]}: {kind}")
    more = f"; ... ({len(body) - 20} more keys)" if len(body) > 20 else ""
    return "an object {" + "; ".join(parts) + more + "}"


def _status_code(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def error_envelope(body: Any) -> str | None:
    """
    Why a page body that came with HTTP 200 is an error after all, or None when it is not.

    Some services report failures inside a 200: ``ErrorResponse`` ``{traceId, error, statusCode}``,
    an envelope with ``status``/``statusCode`` >= 400 or ``isSuccess``/``success`` false
    (endpoints.md §4). Records beside such a marker are not trusted to be complete. Success bodies
    carry ``statusCode: 200`` with an empty ``errorMessage`` (DMSO), so only the code decides.
    """
    if not isinstance(body, Mapping):
        return None
    for key in ("statusCode", "status"):
        code = _status_code(body.get(key))
        if code is not None and code >= 400:
            return f"{key} {code}"
    for key in ("isSuccess", "success"):
        if body.get(key) is False:
            return f"{key} false"
    return None


def is_absolute(link: str) -> bool:
    return link.lower().startswith(("http://", "https://"))


def looks_like_link(link: str) -> bool:
    """
    A relative link has a path or a query; an opaque token (IaaS + PaaS ``nextlink``) has neither.

    The docs never say which a value is (endpoints.md §5); tokens are percent-encoded, so they carry
    no literal ``/`` or ``?``.
    """
    return is_absolute(link) or link.startswith("/") or "?" in link


def resolve_link(link: str, request_url: str, service_prefix: str | None = None) -> str:
    """
    Resolve a next link against the request that returned it.

    ``/jobs?...`` from Dynamics 365 omits the service prefix (``/dynamicsbackup``); ``service_prefix``
    puts it back. ``audits?...`` (DMSO) resolves against the request path, like a browser would.
    """
    if is_absolute(link):
        return link
    if link.startswith("/"):
        prefix = "/" + (service_prefix or "").strip("/")
        if service_prefix and not link.startswith(prefix + "/"):
            return prefix + link
        return link
    return urljoin(request_url.split("?", 1)[0], link)


class PagingStyle(Protocol):
    """How one endpoint pages: where the records are, and what to request after a page."""

    def items(self, body: Any) -> list[Any] | None:
        """The page's records; None when the body holds none in any shape this style knows."""
        ...

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None: ...


def _counting_from(request: PageRequest) -> PageRequest:
    """
    The request with its URL's query moved into ``params``, so counters can be read and bumped.

    After a followed link (whose query sits in the URL), a page may come without a link; counting
    must then continue from the link's ``pageIndex``/``skip``, not restart or add a second one.
    """
    if "?" not in request.url:
        return request
    url, query = request.url.split("?", 1)
    return replace(request, url=url, params=(*parse_qsl(query, keep_blank_values=True), *request.params))


def _follow(link: str, request: PageRequest, service_prefix: str | None) -> PageRequest:
    """GET a link as-is: its query replaces ours (it already carries the filters)."""
    return PageRequest(
        url=resolve_link(link, request.url, service_prefix), method=request.method, json=request.json
    )


@dataclass(frozen=True)
class NextLinkPaging:
    """
    ``nextLink`` paging (styles A, B, C, F): follow a link, or send an opaque token back.

    :param token_param: query parameter that carries an opaque token (``skipToken`` for audit,
        ``skiptoken`` for IaaS + PaaS).
    :param service_prefix: prefix to restore on root-relative links (``/dynamicsbackup``).
    :param item_keys: where the records are.
    :param empty_body_ok: an empty body (HTTP 204) means "no records" rather than an error. Off
        unless the endpoint is documented to answer that way: elsewhere it hides a broken response.
    """

    token_param: str = "skipToken"  # noqa: S105 - a parameter name, not a secret
    service_prefix: str | None = None
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS
    empty_body_ok: bool = False

    def items(self, body: Any) -> list[Any] | None:
        return find_items(body, self.item_keys)

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None:
        link = find_next_link(body)
        if link is None:
            return None
        if looks_like_link(link):
            return _follow(link, request, self.service_prefix)
        return replace(request, params=with_param(request.params, self.token_param, link))


@dataclass(frozen=True)
class PageIndexPaging:
    """
    ``pageIndex``/``pageSize`` paging (styles D, F, I). A next link, when given, wins; otherwise the
    index is incremented until an empty or short page, or ``totalCount`` is reached.

    :param page_size: the size asked for; a shorter page ends the walk. None: only empty pages do.
    :param first_index: the index of the first page (0 for M365 backup, 1 for Dynamics 365 and DMSO).
    :param stop_at_total: stop once ``totalCount`` items were asked for. Off where the first two
        indexes may return the same page (M365 and Salesforce: backup-jobs.md §8): the count would
        include the repeated page and end the walk one page early; the walk ends on a short or
        empty page instead.
    :param empty_body_ok: an empty body (HTTP 204) means "no records" (see :class:`NextLinkPaging`).
    """

    index_param: str = "pageIndex"
    size_param: str = "pageSize"
    page_size: int | None = None
    first_index: int = 1
    stop_at_total: bool = True
    service_prefix: str | None = None
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS
    empty_body_ok: bool = False

    def items(self, body: Any) -> list[Any] | None:
        return find_items(body, self.item_keys)

    def first(self, request: PageRequest) -> PageRequest:
        """The first request: the caller's own ``pageIndex``/``pageSize`` win over the defaults."""
        params = request.params
        if get_param(params, self.index_param) is None:
            params = with_param(params, self.index_param, self.first_index)
        if self.page_size and get_param(params, self.size_param) is None:
            params = with_param(params, self.size_param, self.page_size)
        return replace(request, params=params)

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None:
        link = find_next_link(body)
        if link is not None and looks_like_link(link):
            return _follow(link, request, self.service_prefix)
        request = _counting_from(request)
        requested = get_param(request.params, self.size_param)
        size = int(requested or self.page_size or len(items))
        if not items or ((requested or self.page_size) and len(items) < size):
            return None
        index = int(get_param(request.params, self.index_param) or self.first_index)
        total = find_total(body)
        if self.stop_at_total and total is not None and (index - self.first_index + 1) * size >= total:
            return None
        return replace(request, params=with_param(request.params, self.index_param, index + 1))


@dataclass(frozen=True)
class TopSkipPaging:
    """``top``/``skip`` paging (style E): follow ``nextLink``, else ``skip += top`` until a short page."""

    top: int = 100
    top_param: str = "top"
    skip_param: str = "skip"
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS
    empty_body_ok: bool = False

    def items(self, body: Any) -> list[Any] | None:
        return find_items(body, self.item_keys)

    def first(self, request: PageRequest) -> PageRequest:
        params = request.params
        if get_param(params, self.top_param) is None:
            params = with_param(params, self.top_param, self.top)
        if get_param(params, self.skip_param) is None:
            params = with_param(params, self.skip_param, 0)
        return replace(request, params=params)

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None:
        link = find_next_link(body)
        if link is not None and looks_like_link(link):
            return _follow(link, request, None)
        request = _counting_from(request)
        top = int(get_param(request.params, self.top_param) or self.top)
        if len(items) < top:
            return None
        skip = int(get_param(request.params, self.skip_param) or 0) + len(items)
        total = find_total(body)
        if total is not None and skip >= total:
            return None
        return replace(request, params=with_param(request.params, self.skip_param, skip))


@dataclass(frozen=True)
class BodyTokenPaging:
    """Token in a POST body (style G, Insights): POST the same body with ``nextLink`` = the token."""

    body_field: str = "nextLink"
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS
    empty_body_ok: bool = False

    def items(self, body: Any) -> list[Any] | None:
        return find_items(body, self.item_keys)

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None:
        token = find_next_link(body)
        if token is None:
            return None
        return replace(request, json={**(request.json or {}), self.body_field: token})


@dataclass(frozen=True)
class StartIndexPaging:
    """
    ``startIndex`` paging (style H, Opus due records): resend with the returned index until null.

    An empty body is "no records" by default: the general status-code page says Opus answers
    retrieve due records with 204 (endpoints.md §3, opus.md).
    """

    index_param: str = "startIndex"
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS
    empty_body_ok: bool = True

    def items(self, body: Any) -> list[Any] | None:
        return find_items(body, self.item_keys)

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None:
        index = _field(body, self.index_param)
        if index is None or index == "" or not items:
            return None
        return replace(request, params=with_param(request.params, self.index_param, str(index)))


def request_fingerprint(request: PageRequest) -> bytes:
    """
    A 16-byte digest of what a request asks for: method, URL, query and JSON body.

    The form is canonicalised so that the same request written two ways matches: a query in the URL
    or in ``params``, in any order; a leading ``/`` on an API path; JSON keys in any order. A digest,
    not the request, is kept per page: links and tokens can be kilobytes long.
    """
    url, _, query = request.url.partition("?")
    if not is_absolute(url):
        url = url.lstrip("/")
    params = sorted((*parse_qsl(query, keep_blank_values=True), *request.params))
    canonical = json.dumps(
        [request.method.upper(), url, params, request.json],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


def request_path(url: str) -> str:
    """The path of a request, for messages: never the query, which may carry an opaque token."""
    if is_absolute(url):
        return urlsplit(url).path
    return "/" + url.split("?", 1)[0].lstrip("/")


class PageWalk:
    """
    One walk over a list endpoint, without I/O: the transport fetches, the walk reads each body.

    Drive it with any transport, sync or async::

        walk = PageWalk(style)
        request = walk.first(request)
        while request is not None:
            items, request = walk.advance(request, fetch(request))

    :param style: the endpoint's paging style.
    :param max_empty_pages: raise after this many empty pages in a row that still name a next page.
    """

    def __init__(self, style: PagingStyle, *, max_empty_pages: int = DEFAULT_MAX_EMPTY_PAGES) -> None:
        if max_empty_pages < 1:
            raise ValueError("max_empty_pages must be at least 1")
        self.style = style
        self.max_empty_pages = max_empty_pages
        self.page_number = 0  # pages read so far
        self.num_results = 0  # records read so far
        self.empty_run = 0  # empty pages in a row, each with a next page
        self._seen: dict[bytes, int] = {}  # request fingerprint -> the page it fetched

    def first(self, request: PageRequest) -> PageRequest:
        """The first request, with the counters of styles that count pages put in."""
        first: Callable[[PageRequest], PageRequest] | None = getattr(self.style, "first", None)
        return first(request) if first else request

    def advance(self, request: PageRequest, body: Any) -> tuple[list[Any], PageRequest | None]:
        """
        Read the body that ``request`` returned: its records and the next request (None at the end).

        :raises AosApiError: the body is an error envelope, or holds no records in a known place.
        :raises AosPaginationError: the next request repeats one of this walk, or
            ``max_empty_pages`` empty pages in a row still name a next page.
        """
        number = self.page_number + 1
        items = self._items(request, body, number)
        following = None if body is None else self.style.next_request(body, request, items)
        self._seen.setdefault(request_fingerprint(request), number)
        if following is not None:
            # Any repeat, not only of the last request: A -> B -> A loops as surely as A -> A, and
            # each lap writes the same records again.
            earlier = self._seen.get(request_fingerprint(following))
            if earlier is not None:
                raise AosPaginationError(
                    f"{request_path(request.url)}: page {number + 1} would repeat the request of page "
                    f"{earlier} (the API's next links go round in a cycle); stopping instead of looping "
                    "forever and writing the same records again"
                )
            self.empty_run = 0 if items else self.empty_run + 1
            if self.empty_run >= self.max_empty_pages:
                raise AosPaginationError(
                    f"{request_path(request.url)}: {self.empty_run} empty pages in a row with a next link "
                    f"(pages {number - self.empty_run + 1} to {number}); stopping instead of following "
                    "links without end (max_empty_pages)"
                )
        self.page_number = number
        self.num_results += len(items)
        return items, following

    def _items(self, request: PageRequest, body: Any, number: int) -> list[Any]:
        """The page's records, or an error naming the path, the page and the shape found."""
        if body is None:
            if getattr(self.style, "empty_body_ok", False):
                return []
            found = (
                "an empty body (HTTP 204 or no content), which this endpoint's paging style does not allow"
            )
        elif (why := error_envelope(body)) is not None:
            found = f"an error envelope despite HTTP 200 ({why}): {describe_shape(body)}"
        else:
            items = self.style.items(body)
            if items is not None:
                return items
            found = (
                f"no list of records in any documented place: {describe_shape(body)}; refusing to count "
                "it as an empty page"
            )
        trace_id = _field(body, "traceId")  # meant to be quoted to AvePoint support
        raise AosApiError(
            method=request.method, path=request_path(request.url), status=200, error=f"page {number}: {found}",
            trace_id=trace_id if isinstance(trace_id, str) and len(trace_id) <= 128 else None,
        )  # fmt: skip


class PageIterator:
    """
    Lazily walk the pages of a list endpoint; iterate it for items, or use :attr:`pages`.

    Only the page in hand is held. It can be iterated once (like google-api-core's iterators):
    a second pass would silently repeat every request. The per-page logic is :class:`PageWalk`'s.

    :param fetch: performs one request and returns the decoded JSON body (None for an empty body).
    :param request: the first page's request.
    :param style: the endpoint's paging style.
    :param max_pages: stop after this many pages (None: until the API says the end).
    :param max_empty_pages: raise after this many empty pages in a row that still name a next page.
    :param prefetch: fetch the next page on this executor while the caller handles the page in hand
        (one page ahead, never more), so decoding and writing overlap the next round trip. The next
        request is known as soon as a page is read: only links and counters decide it.
    """

    def __init__(
        self,
        fetch: Callable[[PageRequest], Any],
        request: PageRequest,
        style: PagingStyle,
        *,
        max_pages: int | None = None,
        max_empty_pages: int = DEFAULT_MAX_EMPTY_PAGES,
        prefetch: Executor | None = None,
    ) -> None:
        self._fetch = fetch
        self._prefetch = prefetch
        self._max_pages = max_pages
        self._started = False
        self._walk_state = PageWalk(style, max_empty_pages=max_empty_pages)
        self.next_page_request: PageRequest | None = self._walk_state.first(request)

    @property
    def page_number(self) -> int:
        """Pages read so far."""
        return self._walk_state.page_number

    @property
    def num_results(self) -> int:
        """Records read so far."""
        return self._walk_state.num_results

    def _start(self) -> None:
        if self._started:
            raise AosPaginationError("this PageIterator has already been iterated; create a new one")
        self._started = True

    def _more(self) -> bool:
        return self.next_page_request is not None and (
            self._max_pages is None or self.page_number < self._max_pages
        )

    def _walk(self) -> Iterator[Page]:
        ahead: Future[Any] | None = None  # the next page's body, being fetched
        try:
            while self._more():
                request = self.next_page_request
                assert request is not None
                body = ahead.result() if ahead is not None else self._fetch(request)
                ahead = None
                items, self.next_page_request = self._walk_state.advance(request, body)
                del body  # the page's items are all we keep
                following = self.next_page_request
                if self._prefetch is not None and following is not None and self._more():
                    ahead = self._prefetch.submit(self._fetch, following)
                yield Page(self.page_number, items, request)
        finally:
            if ahead is not None:  # the caller stopped early: nobody will read that page
                ahead.cancel()

    @property
    def pages(self) -> Iterator[Page]:
        """The pages, one at a time."""
        self._start()
        return self._walk()

    def __iter__(self) -> Iterator[Any]:
        self._start()
        return (item for page in self._walk() for item in page.items)
