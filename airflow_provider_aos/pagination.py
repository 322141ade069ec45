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

Nothing here does I/O or knows the transport: an async twin reuses the style objects as they are.
Checking that an absolute link points at the configured API host is the transport's job (the hook
refuses any other host before the bearer token is attached).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urljoin

from airflow_provider_aos.exceptions import AosPaginationError

Params = tuple[tuple[str, str], ...]
DEFAULT_ITEM_KEYS = ("data", "value", "jobs", "values", "results", "items", "queriedItems")


def to_params(params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Params:
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


def extract_items(body: Any, keys: Iterable[str] = DEFAULT_ITEM_KEYS) -> list[Any]:
    """The list of records in a page body: the first list found under ``keys`` (one level deep in ``data``)."""
    if isinstance(body, list):
        return body
    for key in keys:
        value = _field(body, key)
        if isinstance(value, list):
            return value
        if key == "data" and isinstance(value, Mapping):  # Salesforce: data.{jobs, nextLink, totalCount}
            nested = extract_items(value, [k for k in keys if k != "data"])
            if nested:
                return nested
    return []


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

    def items(self, body: Any) -> list[Any]: ...

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
    """

    token_param: str = "skipToken"  # noqa: S105 - a parameter name, not a secret
    service_prefix: str | None = None
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS

    def items(self, body: Any) -> list[Any]:
        return extract_items(body, self.item_keys)

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
    """

    index_param: str = "pageIndex"
    size_param: str = "pageSize"
    page_size: int | None = None
    first_index: int = 1
    service_prefix: str | None = None
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS

    def items(self, body: Any) -> list[Any]:
        return extract_items(body, self.item_keys)

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
        if total is not None and (index - self.first_index + 1) * size >= total:
            return None
        return replace(request, params=with_param(request.params, self.index_param, index + 1))


@dataclass(frozen=True)
class TopSkipPaging:
    """``top``/``skip`` paging (style E): follow ``nextLink``, else ``skip += top`` until a short page."""

    top: int = 100
    top_param: str = "top"
    skip_param: str = "skip"
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS

    def items(self, body: Any) -> list[Any]:
        return extract_items(body, self.item_keys)

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

    def items(self, body: Any) -> list[Any]:
        return extract_items(body, self.item_keys)

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None:
        token = find_next_link(body)
        if token is None:
            return None
        return replace(request, json={**(request.json or {}), self.body_field: token})


@dataclass(frozen=True)
class StartIndexPaging:
    """``startIndex`` paging (style H, Opus due records): resend with the returned index until null."""

    index_param: str = "startIndex"
    item_keys: tuple[str, ...] = DEFAULT_ITEM_KEYS

    def items(self, body: Any) -> list[Any]:
        return extract_items(body, self.item_keys)

    def next_request(self, body: Any, request: PageRequest, items: list[Any]) -> PageRequest | None:
        index = _field(body, self.index_param)
        if index is None or index == "" or not items:
            return None
        return replace(request, params=with_param(request.params, self.index_param, str(index)))


class PageIterator:
    """
    Lazily walk the pages of a list endpoint; iterate it for items, or use :attr:`pages`.

    Only the page in hand is held. It can be iterated once (like google-api-core's iterators):
    a second pass would silently repeat every request.

    :param fetch: performs one request and returns the decoded JSON body.
    :param request: the first page's request.
    :param style: the endpoint's paging style.
    :param max_pages: stop after this many pages (None: until the API says the end).
    """

    def __init__(
        self,
        fetch: Callable[[PageRequest], Any],
        request: PageRequest,
        style: PagingStyle,
        *,
        max_pages: int | None = None,
    ) -> None:
        self._fetch = fetch
        self._style = style
        self._max_pages = max_pages
        self._started = False
        first = getattr(style, "first", None)  # styles that count pages put their counters in
        self.next_page_request: PageRequest | None = first(request) if first else request
        self.page_number = 0
        self.num_results = 0

    def _start(self) -> None:
        if self._started:
            raise AosPaginationError("this PageIterator has already been iterated; create a new one")
        self._started = True

    def _walk(self) -> Iterator[Page]:
        while self.next_page_request is not None:
            if self._max_pages is not None and self.page_number >= self._max_pages:
                return
            request = self.next_page_request
            body = self._fetch(request)
            items = self._style.items(body)
            following = self._style.next_request(body, request, items)
            del body  # the page's items are all we keep
            if following == request:
                raise AosPaginationError(
                    f"the API returned the same next page again after page {self.page_number + 1} "
                    f"of {request.url.split('?', 1)[0]}; stopping instead of looping forever"
                )
            self.next_page_request = following
            self.page_number += 1
            self.num_results += len(items)
            yield Page(self.page_number, items, request)

    @property
    def pages(self) -> Iterator[Page]:
        """The pages, one at a time."""
        self._start()
        return self._walk()

    def __iter__(self) -> Iterator[Any]:
        self._start()
        return (item for page in self._walk() for item in page.items)
