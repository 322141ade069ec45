"""Unit tests of the streaming page iterator and the paging styles (endpoints.md §5)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest

from airflow_provider_aos.config import AosConnectionConfig
from airflow_provider_aos.exceptions import AosApiError, AosPaginationError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.pagination import (
    BodyTokenPaging,
    NextLinkPaging,
    PageIndexPaging,
    PageIterator,
    PageRequest,
    PageWalk,
    StartIndexPaging,
    TopSkipPaging,
    decode_json,
    decode_records_raw,
    extract_items,
    find_next_link,
    request_fingerprint,
    to_params,
    with_param,
)

API = "https://graph-us.avepointonlineservices.com"


class FakeApi:
    """A ``fetch`` that records every request and answers from ``respond(request, call_number)``."""

    def __init__(self, respond: Callable[[PageRequest, int], Any]) -> None:
        self.respond = respond
        self.requests: list[PageRequest] = []

    def __call__(self, request: PageRequest) -> Any:
        self.requests.append(request)
        return self.respond(request, len(self.requests))


def scripted(*bodies: Any) -> FakeApi:
    """A fake API answering the n-th request with the n-th body."""
    return FakeApi(lambda request, n: bodies[n - 1])


def query(request: PageRequest) -> list[tuple[str, str]]:
    """Every query parameter the request would send: those in its URL, then its params."""
    return [*parse_qsl(urlsplit(request.url).query), *request.params]


def values(request: PageRequest, name: str) -> list[str]:
    return [v for k, v in query(request) if k.lower() == name.lower()]


# -- style A / B: absolute nextLink -------------------------------------------------------------


def test_absolute_next_link_is_followed_as_is_without_resending_params() -> None:
    """Style A: GET the nextLink URL as given; its query replaces the first request's params."""
    link = f"{API}/aos/audit?startTime=2026-10-01&pageSize=2&skipToken=abc"
    api = scripted({"data": [1, 2], "nextLink": link}, {"data": [3], "nextLink": None})
    first = PageRequest("aos/audit", params=(("startTime", "2026-10-01"), ("pageSize", "2")))

    assert list(PageIterator(api, first, NextLinkPaging())) == [1, 2, 3]
    assert api.requests[0] == first
    assert api.requests[1].url == link
    assert api.requests[1].params == ()
    assert api.requests[1].method == "GET"


@pytest.mark.parametrize("end", [None, "", "   "])
def test_null_or_empty_next_link_ends_the_walk(end: str | None) -> None:
    api = scripted({"data": [1], "nextLink": f"{API}/aos/audit?skipToken=t"}, {"data": [2], "nextLink": end})

    assert list(PageIterator(api, PageRequest("aos/audit"), NextLinkPaging())) == [1, 2]
    assert len(api.requests) == 2


def test_audit_next_link_carrying_skip_token_is_followed() -> None:
    """Style B (/aos/audit): the nextLink carries skipToken; the next request is exactly that link."""
    link = f"{API}/aos/audit?skipToken=eyJvZmZzZXQiOjEwMH0%3D&startTime=2026-10-01T00%3A00%3A00Z"
    api = scripted({"data": ["a"], "nextLink": link}, {"data": ["b"], "nextLink": None})
    first = PageRequest("aos/audit", params=(("startTime", "2026-10-01T00:00:00Z"),))

    assert list(PageIterator(api, first, NextLinkPaging())) == ["a", "b"]
    assert values(api.requests[1], "skipToken") == ["eyJvZmZzZXQiOjEwMH0="]
    assert values(api.requests[1], "startTime") == ["2026-10-01T00:00:00Z"]


# -- style C: opaque token sent back as skiptoken -----------------------------------------------


def test_opaque_lowercase_nextlink_is_sent_back_as_skiptoken() -> None:
    """Style C (IaaS + PaaS): ``nextlink`` is a token; resend the same query with skiptoken=token."""
    api = scripted(
        {"data": [1], "nextlink": "a%2Fb%2Bc=="},
        {"data": [2], "nextlink": "d%2Fe%2Bf=="},
        {"data": [3], "nextlink": None},
    )
    first = PageRequest("backup/vm/jobs", params=(("pageNumber", "0"), ("pageSize", "1")))

    assert list(PageIterator(api, first, NextLinkPaging(token_param="skiptoken"))) == [1, 2, 3]
    second, third = api.requests[1], api.requests[2]
    assert second.url == third.url == "backup/vm/jobs"
    assert values(second, "skiptoken") == ["a%2Fb%2Bc=="]
    assert values(third, "skiptoken") == ["d%2Fe%2Bf=="]  # replaces the previous token
    for request in (second, third):
        assert values(request, "pageNumber") == ["0"]
        assert values(request, "pageSize") == ["1"]


# -- style D / I: pageIndex + pageSize ----------------------------------------------------------


def test_page_index_paging_sets_first_index_and_size() -> None:
    api = scripted({"data": []})
    list(
        PageIterator(
            api, PageRequest("backup/m365/cloudbackupjobs"), PageIndexPaging(first_index=0, page_size=10)
        )
    )

    assert values(api.requests[0], "pageIndex") == ["0"]
    assert values(api.requests[0], "pageSize") == ["10"]


def test_page_index_paging_follows_metadata_next_link() -> None:
    """Style D: a non-empty metadata.nextLink wins over counting."""
    link = f"{API}/backup/m365/cloudbackupjobs?pageIndex=1&pageSize=2"
    api = scripted(
        {"data": [1, 2], "metadata": {"nextLink": link, "totalCount": 3}},
        {"data": [3], "metadata": {"nextLink": "", "totalCount": 3}},
    )
    style = PageIndexPaging(first_index=0, page_size=2)

    assert list(PageIterator(api, PageRequest("backup/m365/cloudbackupjobs"), style)) == [1, 2, 3]
    assert api.requests[1].url == link
    assert api.requests[1].params == ()


def test_page_index_paging_counts_until_a_short_page() -> None:
    """Style D without a link: pageIndex + 1 until a page shorter than pageSize."""
    pages = {0: ["a", "b"], 1: ["c", "d"], 2: ["e"]}
    api = FakeApi(lambda request, n: {"data": pages[int(values(request, "pageIndex")[0])]})

    items = list(PageIterator(api, PageRequest("jobs"), PageIndexPaging(first_index=0, page_size=2)))

    assert items == ["a", "b", "c", "d", "e"]
    assert [values(r, "pageIndex") for r in api.requests] == [["0"], ["1"], ["2"]]


def test_page_index_paging_stops_on_an_empty_page_without_page_size() -> None:
    pages = {1: ["a", "b"], 2: ["c"], 3: []}
    api = FakeApi(lambda request, n: {"data": pages[int(values(request, "pageIndex")[0])]})

    assert list(PageIterator(api, PageRequest("jobs"), PageIndexPaging())) == ["a", "b", "c"]
    assert len(api.requests) == 3


@pytest.mark.parametrize(
    ("first_index", "body"),
    [
        (0, lambda items: {"data": items, "metadata": {"nextLink": None, "totalCount": 4}}),
        (0, lambda items: {"data": items, "metadata": {"totalNumber": 4}}),
        (1, lambda items: {"data": items, "metadata": {"pageIndex": 1, "pageSize": 2, "totalCount": 4}}),
        (0, lambda items: {"data": {"jobs": items, "nextLink": None, "totalCount": 4}}),  # Salesforce
    ],
    ids=["metadata.totalCount", "metadata.totalNumber", "style-I", "data.totalCount"],
)
def test_page_index_paging_stops_when_total_count_is_reached(first_index: int, body: Callable) -> None:
    """Two full pages of 2 make the total of 4: no third request."""
    api = FakeApi(lambda request, n: body([n * 10 + 1, n * 10 + 2]))

    items = list(
        PageIterator(api, PageRequest("jobs"), PageIndexPaging(first_index=first_index, page_size=2))
    )

    assert items == [11, 12, 21, 22]
    assert [values(r, "pageIndex") for r in api.requests] == [[str(first_index)], [str(first_index + 1)]]


def test_salesforce_data_next_link_is_followed() -> None:
    """Salesforce nests paging in data: data.jobs, data.nextLink."""
    link = f"{API}/backup/sfbapi/jobs?pageIndex=1&pageSize=2"
    api = scripted(
        {"data": {"jobs": ["j1", "j2"], "nextLink": link, "totalCount": 3}},
        {"data": {"jobs": ["j3"], "nextLink": None, "totalCount": 3}},
    )
    style = PageIndexPaging(first_index=0, page_size=2)

    assert list(PageIterator(api, PageRequest("backup/sfbapi/jobs"), style)) == ["j1", "j2", "j3"]
    assert api.requests[1].url == link


def test_page_index_paging_honours_the_callers_page_size() -> None:
    """The caller's own pageSize wins over the style's default, so a full page of that size continues."""
    pages = {0: ["a", "b"], 1: ["c", "d"], 2: ["e"]}
    api = FakeApi(lambda request, n: {"data": pages[int(values(request, "pageIndex")[0])]})
    first = PageRequest("jobs", params=(("pageSize", "2"),))

    items = list(PageIterator(api, first, PageIndexPaging(first_index=0, page_size=10), max_pages=10))

    assert values(api.requests[0], "pageSize") == ["2"]
    assert items == ["a", "b", "c", "d", "e"]


def first_value_server(pages: dict[int, list[Any]], make_body: Callable[[list[Any], int], Any], name: str):
    """A fake server that reads ``name`` like ASP.NET does: the first value wins when repeated."""

    def respond(request: PageRequest, n: int) -> Any:
        position = int(values(request, name)[0])
        return make_body(pages.get(position, []), position)

    return FakeApi(respond)


def test_page_index_full_last_page_after_a_followed_link_is_not_fetched_twice() -> None:
    """metadata.nextLink on page 0, none on the full last page 1 (total reached): two requests, no duplicates."""

    def body(items: list[Any], index: int) -> Any:
        link = f"{API}/backup/m365/cloudbackupjobs?pageIndex={index + 1}&pageSize=2" if index == 0 else None
        return {"data": items, "metadata": {"nextLink": link, "totalCount": 4}}

    api = first_value_server({0: ["a", "b"], 1: ["c", "d"]}, body, "pageIndex")
    style = PageIndexPaging(first_index=0, page_size=2)

    items = list(PageIterator(api, PageRequest("backup/m365/cloudbackupjobs"), style, max_pages=10))

    assert items == ["a", "b", "c", "d"]
    assert len(api.requests) == 2
    assert all(len(values(r, "pageIndex")) == 1 for r in api.requests)


# -- style E: top/skip -------------------------------------------------------------------------


def test_top_skip_follows_next_link_when_present() -> None:
    link = f"{API}/aos/jobs?top=2&skip=1"
    api = scripted({"jobs": [1, 2], "nextLink": link}, {"jobs": [3], "nextLink": None})

    assert list(PageIterator(api, PageRequest("aos/jobs"), TopSkipPaging(top=2))) == [1, 2, 3]
    assert values(api.requests[0], "top") == ["2"]
    assert values(api.requests[0], "skip") == ["0"]
    assert api.requests[1].url == link
    assert api.requests[1].params == ()


def test_top_skip_adds_top_to_skip_until_a_short_page() -> None:
    rows = list(range(7))
    api = FakeApi(
        lambda request, n: {
            "value": rows[int(values(request, "skip")[0]) :][: int(values(request, "top")[0])]
        }
    )

    assert list(PageIterator(api, PageRequest("aos/jobs"), TopSkipPaging(top=3))) == rows
    assert [values(r, "skip") for r in api.requests] == [["0"], ["3"], ["6"]]
    assert all(values(r, "top") == ["3"] for r in api.requests)


def test_top_skip_stops_at_total_count() -> None:
    api = FakeApi(lambda request, n: {"value": [n, n], "totalCount": 4})

    assert list(PageIterator(api, PageRequest("aos/jobs"), TopSkipPaging(top=2))) == [1, 1, 2, 2]
    assert len(api.requests) == 2


def test_top_skip_honours_the_callers_top() -> None:
    """The caller's own top wins over the style's default, so a full page of that size continues."""
    rows = list(range(5))
    api = FakeApi(
        lambda request, n: {
            "value": rows[int(values(request, "skip")[0]) :][: int(values(request, "top")[0])]
        }
    )
    first = PageRequest("aos/jobs", params=(("top", "2"),))

    assert list(PageIterator(api, first, TopSkipPaging(top=100), max_pages=10)) == rows


def test_top_skip_full_last_page_after_a_followed_link_is_not_fetched_twice() -> None:
    """nextLink on page 1, none on the full last page (total reached): two requests, no duplicates."""

    def body(items: list[Any], skip: int) -> Any:
        link = f"{API}/aos/jobs?top=2&skip={skip + 2}" if skip == 0 else None
        return {"jobs": items, "nextLink": link, "totalCount": 4}

    api = first_value_server({0: ["a", "b"], 2: ["c", "d"]}, body, "skip")

    items = list(PageIterator(api, PageRequest("aos/jobs"), TopSkipPaging(top=2), max_pages=10))

    assert items == ["a", "b", "c", "d"]
    assert len(api.requests) == 2


# -- style F: relative links -------------------------------------------------------------------


@pytest.mark.parametrize(
    "style",
    [NextLinkPaging(service_prefix="/dynamicsbackup"), PageIndexPaging(service_prefix="/dynamicsbackup")],
    ids=["nextlink", "pageindex"],
)
@pytest.mark.parametrize(
    "link", ["/jobs?pageIndex=2&pageSize=1", "/dynamicsbackup/jobs?pageIndex=2&pageSize=1"]
)
def test_dynamics_root_relative_link_gets_the_service_prefix(style: Any, link: str) -> None:
    """D365 returns /jobs?... without /dynamicsbackup; the prefix is restored, never doubled."""
    api = scripted({"data": [1], "nextLink": link}, {"data": [], "nextLink": None})

    list(PageIterator(api, PageRequest("dynamicsbackup/jobs"), style))

    assert api.requests[1].url == "/dynamicsbackup/jobs?pageIndex=2&pageSize=1"
    assert api.requests[1].params == ()


def test_dmso_relative_link_resolves_against_the_request_path() -> None:
    """DMSO returns audits?...; it resolves like a browser would, against dmso/audits."""
    link = "audits?orderBy=time&isASC=false&pageIndex=2&pageSize=1"
    api = scripted({"data": ["x"], "nextLink": link}, {"data": ["y"], "nextLink": None})
    first = PageRequest("dmso/audits", params=(("pageSize", "1"),))

    assert list(PageIterator(api, first, PageIndexPaging(page_size=1), max_pages=2)) == ["x", "y"]
    assert api.requests[1].url == "dmso/audits?orderBy=time&isASC=false&pageIndex=2&pageSize=1"
    assert api.requests[1].params == ()


# -- styles G and H ----------------------------------------------------------------------------


def test_body_token_paging_posts_the_same_body_with_the_token() -> None:
    """Style G (Insights): POST the same body with nextLink = returned token."""
    api = scripted(
        {"data": [1], "nextLink": "tok-1"},
        {"data": [2], "nextLink": "tok-2"},
        {"data": [3], "nextLink": None},
    )
    first = PageRequest("insights/users/access", method="POST", json={"pageSize": 1, "siteId": "s"})

    assert list(PageIterator(api, first, BodyTokenPaging())) == [1, 2, 3]
    assert [r.method for r in api.requests] == ["POST"] * 3
    assert [r.json for r in api.requests] == [
        {"pageSize": 1, "siteId": "s"},
        {"pageSize": 1, "siteId": "s", "nextLink": "tok-1"},
        {"pageSize": 1, "siteId": "s", "nextLink": "tok-2"},
    ]


@pytest.mark.parametrize("end", [None, ""])
def test_start_index_paging_resends_the_returned_index_until_null(end: Any) -> None:
    """Style H (Opus): resend startIndex from the body; null (or empty) ends the walk."""
    api = scripted(
        {"data": ["r1", "r2"], "startIndex": 2},
        {"data": ["r3", "r4"], "startIndex": 4},
        {"data": ["r5"], "startIndex": end},
    )
    first = PageRequest("records/connector/records", params=(("itemsPerPage", "2"),))

    assert list(PageIterator(api, first, StartIndexPaging())) == ["r1", "r2", "r3", "r4", "r5"]
    assert [values(r, "startIndex") for r in api.requests] == [[], ["2"], ["4"]]
    assert all(values(r, "itemsPerPage") == ["2"] for r in api.requests)


# -- the iterator itself -----------------------------------------------------------------------


def three_pages() -> FakeApi:
    return scripted(
        {"data": ["a", "b"], "nextLink": "t1"},
        {"data": ["c"], "nextLink": "t2"},
        {"data": ["d", "e"], "nextLink": None},
    )


def test_pages_view_yields_numbered_pages_with_their_requests() -> None:
    api = three_pages()
    iterator = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging())

    pages = [(p.number, p.items, p.request) for p in iterator.pages]

    assert [(number, items) for number, items, _ in pages] == [(1, ["a", "b"]), (2, ["c"]), (3, ["d", "e"])]
    assert [request for _, _, request in pages] == api.requests
    assert iterator.page_number == 3
    assert iterator.num_results == 5
    assert iterator.next_page_request is None


def test_counters_advance_as_pages_are_read() -> None:
    iterator = PageIterator(three_pages(), PageRequest("aos/audit"), NextLinkPaging())
    pages = iterator.pages

    next(pages)
    assert (iterator.page_number, iterator.num_results) == (1, 2)
    next(pages)
    assert (iterator.page_number, iterator.num_results) == (2, 3)


def test_max_pages_stops_early() -> None:
    api = FakeApi(lambda request, n: {"data": [n], "nextLink": f"token-{n}"})
    iterator = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_pages=2)

    assert list(iterator) == [1, 2]
    assert len(api.requests) == 2
    assert iterator.page_number == 2


@pytest.mark.parametrize(
    ("first_view", "second_view"),
    [(list, list), (list, lambda it: list(it.pages)), (lambda it: list(it.pages), list)],
    ids=["items-items", "items-pages", "pages-items"],
)
def test_iterating_twice_raises(first_view: Callable, second_view: Callable) -> None:
    api = three_pages()
    iterator = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging())
    first_view(iterator)

    with pytest.raises(AosPaginationError, match="already been iterated"):
        second_view(iterator)
    assert len(api.requests) == 3  # no request was repeated


@pytest.mark.parametrize(
    ("style", "body"),
    [
        (NextLinkPaging(), {"data": [1], "nextLink": f"{API}/aos/audit?skipToken=same"}),
        (NextLinkPaging(token_param="skiptoken"), {"data": [1], "nextlink": "same"}),
        (BodyTokenPaging(), {"data": [1], "nextLink": "same"}),
        (StartIndexPaging(), {"data": [1], "startIndex": "5"}),
    ],
    ids=["link", "token", "body-token", "start-index"],
)
def test_a_next_request_equal_to_the_current_one_raises(style: Any, body: dict) -> None:
    """Loop guard: the API handing back the same next page would otherwise loop forever."""
    api = FakeApi(lambda request, n: body)
    iterator = PageIterator(api, PageRequest("aos/audit"), style, max_pages=50)

    with pytest.raises(AosPaginationError, match="page 3 would repeat the request of page 2"):
        list(iterator)
    assert len(api.requests) == 2


class Record:
    """A record that can be weak-referenced, to see when the iterator lets go of it."""

    def __init__(self, page: int) -> None:
        self.page = page


def record_pages(page_size: int = 3) -> tuple[FakeApi, dict[int, list[weakref.ref]]]:
    """An endless paged API whose records are tracked by weak references only."""
    refs: dict[int, list[weakref.ref]] = {}

    def respond(request: PageRequest, n: int) -> Any:
        records = [Record(n) for _ in range(page_size)]
        refs[n] = [weakref.ref(r) for r in records]
        return {"data": records, "nextLink": f"token-{n}"}

    return FakeApi(respond), refs


def test_items_view_releases_earlier_pages() -> None:
    """Once the first item of page 2 is read, page 1's records are garbage."""
    api, refs = record_pages()
    stream = iter(PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_pages=5))
    for _ in range(3):
        next(stream)

    assert next(stream).page == 2
    gc.collect()

    assert [r() for r in refs[1]] == [None, None, None]
    assert all(r() is not None for r in refs[2])  # the page in hand is still held


def test_pages_view_releases_pages_the_consumer_dropped() -> None:
    api, refs = record_pages()
    pages = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_pages=5).pages
    for number in (1, 2, 3):
        assert next(pages).number == number
        gc.collect()
        assert all(r() is None for page in range(1, number) for r in refs[page])


def test_pages_are_fetched_lazily() -> None:
    api = FakeApi(lambda request, n: {"data": [n, n], "nextLink": f"token-{n}"})
    iterator = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_pages=100)
    assert api.requests == []

    stream = iter(iterator)
    assert next(stream) == 1
    assert len(api.requests) == 1
    assert next(stream) == 1
    assert len(api.requests) == 1
    assert next(stream) == 2
    assert len(api.requests) == 2


# -- page shapes: no silent record loss (issue 5, item 2) ---------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"data": [1, 2], "nextLink": None}, [1, 2]),  # audit
        ([1, 2], [1, 2]),  # bare list
        ({"value": [1, 2]}, [1, 2]),  # Elements legacy OData
        ({"values": [1, 2], "status": 200, "message": "", "nextLink": None}, [1, 2]),  # Insights
        ({"results": [1, 2]}, [1, 2]),  # Insights variant
        ({"status": 200, "message": "", "jobs": [1, 2], "nextLink": None}, [1, 2]),  # Google
        ({"startIndex": None, "statusCode": 200, "queriedItems": [1, 2]}, [1, 2]),  # Opus
        ({"data": [1, 2], "metadata": {"pageIndex": 1, "pageSize": 50, "totalCount": 2}}, [1, 2]),  # Elements v3
        ({"statusCode": 200, "message": "", "errors": [], "data": [1, 2], "metadata": {"nextLink": ""}}, [1, 2]),
        ({"data": [1, 2], "traceId": "t", "errorMessage": "", "statusCode": 200, "nextLink": None}, [1, 2]),  # DMSO
        ({"statusCode": 200, "data": {"totalCount": 2, "jobs": [1, 2], "nextLink": ""}}, [1, 2]),  # D365/SF
        ({"statusCode": 200, "data": {"data": [1, 2]}}, [1, 2]),  # M365 unusual activities: data.data
        ({"isSuccess": True, "success": True, "data": [1, 2]}, [1, 2]),
        ({"data": [], "nextLink": None}, []),  # an empty page is fine
        ({"data": None, "nextLink": None}, []),  # a known key, explicitly null: none
        ({"data": {"jobs": None, "totalCount": 0}}, []),
    ],
    ids=[
        "audit", "bare-list", "value", "insights", "results", "google", "opus", "elements-v3",
        "m365-metadata", "dmso", "data.jobs", "data.data", "success-flags", "empty-list", "data-null",
        "data.jobs-null",
    ],
)  # fmt: skip
def test_documented_page_shapes_are_read(body: Any, expected: list[Any]) -> None:
    api = scripted(body)

    assert list(PageIterator(api, PageRequest("aos/audit"), NextLinkPaging())) == expected


def audit_then(body: Any) -> FakeApi:
    """Audit whose first page is fine and whose second page (reached by a link) is ``body``."""
    link = f"{API}/aos/audit?startTime=2026-10-01&skipToken=SECRET-TOKEN"
    return scripted({"data": [1], "nextLink": link}, body)


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({"data": {"actionName": "login", "actionUser": "who@example.com"}, "nextLink": None},
         "data: object with keys actionName, actionUser"),
        ({"data": {"totalCount": 3, "nextLink": ""}}, "data: object with keys totalCount, nextLink"),
        ({"records": ["who@example.com"], "nextLink": None}, "records: array"),
        ({"message": "who@example.com"}, "message: string"),
        ({}, "an object {}"),
        ("who@example.com", "a JSON string"),
        (42, "a JSON number"),
    ],
    ids=["data-object", "data-paging-only", "unknown-key", "message-only", "empty-object", "string", "number"],
)  # fmt: skip
def test_a_page_without_records_in_a_known_place_raises(body: Any, found: str) -> None:
    """Silent record loss: an unknown shape must fail the walk, not count as an empty page."""
    with pytest.raises(AosApiError) as exc_info:
        list(PageIterator(audit_then(body), PageRequest("aos/audit"), NextLinkPaging()))

    error = exc_info.value
    message = str(error)
    assert (error.method, error.path, error.status) == ("GET", "/aos/audit", 200)
    assert "page 2" in message
    assert found in message
    assert "who@example.com" not in message  # keys and types only, never values
    assert "SECRET-TOKEN" not in message  # the path, not the query
    assert "startTime" not in message


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"status": 500, "errorMessage": "who@example.com"}, "status 500"),
        ({"statusCode": 400, "error": "who@example.com", "traceId": "trace-1"}, "statusCode 400"),
        ({"statusCode": "500", "data": [1]}, "statusCode 500"),  # records beside an error: still an error
        ({"isSuccess": False, "data": [], "errorMsg": "who@example.com"}, "isSuccess false"),
        ({"success": False, "values": [1], "message": "who@example.com"}, "success false"),
    ],
    ids=[
        "status-500",
        "statusCode-400",
        "statusCode-string-with-records",
        "isSuccess-false",
        "success-false",
    ],
)
def test_an_error_envelope_in_a_200_raises(body: dict[str, Any], why: str) -> None:
    with pytest.raises(AosApiError) as exc_info:
        list(PageIterator(audit_then(body), PageRequest("aos/audit"), NextLinkPaging()))

    error = exc_info.value
    message = str(error)
    assert (error.path, error.status) == ("/aos/audit", 200)
    assert "page 2: an error envelope" in message
    assert why in message
    assert "who@example.com" not in message
    assert error.trace_id == body.get("traceId")


def test_an_empty_body_is_an_error_unless_the_style_allows_it() -> None:
    """None is what the hook returns for a 204 / empty body."""
    with pytest.raises(AosApiError, match="page 1: an empty body"):
        list(PageIterator(scripted(None), PageRequest("aos/audit"), NextLinkPaging()))

    assert (
        list(PageIterator(scripted(None), PageRequest("aos/audit"), NextLinkPaging(empty_body_ok=True))) == []
    )


def test_opus_due_records_204_is_no_records() -> None:
    """Style H allows an empty body by default: Opus may answer due records with 204 (opus.md)."""
    api = scripted({"queriedItems": ["r1"], "startIndex": "1"}, None)
    first = PageRequest("records/connector/records", params=(("itemsPerPage", "1"),))
    iterator = PageIterator(api, first, StartIndexPaging())

    assert list(iterator) == ["r1"]
    assert (iterator.page_number, iterator.num_results, iterator.next_page_request) == (2, 1, None)


# -- cycles and endless empty pages (issue 5, item 3) -------------------------------------------


def test_a_link_cycle_over_two_pages_raises() -> None:
    """A -> B -> A: only an immediate repeat used to be caught, so this looped forever."""
    api = scripted(
        {"data": [1], "nextLink": f"{API}/aos/audit?skipToken=A"},
        {"data": [2], "nextLink": f"{API}/aos/audit?skipToken=B"},
        {"data": [3], "nextLink": f"{API}/aos/audit?skipToken=A"},
        *({"data": [9], "nextLink": None} for _ in range(50)),
    )
    iterator = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_pages=50)

    with pytest.raises(AosPaginationError, match=r"page 4 would repeat the request of page 2"):
        list(iterator)
    assert len(api.requests) == 3


def test_a_link_back_to_the_first_request_raises() -> None:
    """The first request (path + params) and a link to it (URL with query) are the same request."""
    api = scripted(
        {"data": [1], "nextLink": "/dynamicsbackup/jobs?pageIndex=2&pageSize=1"},
        {"data": [2], "nextLink": "/dynamicsbackup/jobs?pageSize=1&pageIndex=1"},
        *({"data": [9], "nextLink": None} for _ in range(50)),
    )
    first = PageRequest("dynamicsbackup/jobs")
    style = PageIndexPaging(page_size=1, service_prefix="/dynamicsbackup")

    with pytest.raises(AosPaginationError, match=r"page 3 would repeat the request of page 1"):
        list(PageIterator(api, first, style, max_pages=50))
    assert len(api.requests) == 2


def test_a_token_cycle_in_a_post_body_raises() -> None:
    api = FakeApi(lambda request, n: {"data": [n], "nextLink": f"tok-{n % 3}"})
    first = PageRequest("insights/sites/overview", method="POST", json={"pageSize": 1, "riskLevel": [3]})

    with pytest.raises(AosPaginationError, match="would repeat the request of page"):
        list(PageIterator(api, first, BodyTokenPaging(), max_pages=50))
    assert len(api.requests) == 4  # tok-1, tok-2, tok-0, then tok-1 again


def endless_empty_pages() -> FakeApi:
    return FakeApi(lambda request, n: {"data": [], "nextLink": f"{API}/aos/audit?skipToken=t{n}"})


def test_endless_empty_pages_with_new_links_stop_after_the_default_run() -> None:
    api = endless_empty_pages()

    with pytest.raises(AosPaginationError, match="10 empty pages in a row"):
        list(PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_pages=100))
    assert len(api.requests) == 10


def test_the_empty_page_run_is_configurable_and_resets_on_records() -> None:
    api = FakeApi(
        lambda request, n: {"data": [n] if n % 3 == 0 else [], "nextLink": f"t{n}" if n < 30 else None}
    )

    assert list(PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_empty_pages=3)) == list(
        range(3, 31, 3)
    )
    with pytest.raises(AosPaginationError, match="3 empty pages in a row"):
        list(
            PageIterator(endless_empty_pages(), PageRequest("aos/audit"), NextLinkPaging(), max_empty_pages=3)
        )


def test_a_single_trailing_empty_page_is_fine() -> None:
    """AOS scan jobs may end on an empty page (backup-jobs.md §8)."""
    api = scripted(
        {"jobs": [1, 2], "nextLink": f"{API}/aos/jobs?top=2&skip=2"}, {"jobs": [], "nextLink": None}
    )

    assert list(PageIterator(api, PageRequest("aos/jobs"), TopSkipPaging(top=2))) == [1, 2]


def test_page_walk_is_driven_without_a_transport() -> None:
    """The sans-I/O core a sync or an async transport drives: body in, records and next request out."""
    walk = PageWalk(PageIndexPaging(first_index=0, page_size=2))
    request: PageRequest | None = walk.first(PageRequest("jobs"))
    bodies = iter([{"data": [1, 2]}, {"data": [3]}])
    records: list[Any] = []
    while request is not None:
        items, request = walk.advance(request, next(bodies))
        records.extend(items)

    assert records == [1, 2, 3]
    assert (walk.page_number, walk.num_results) == (2, 3)


def test_request_fingerprints_ignore_form_but_not_content() -> None:
    by_params = PageRequest("aos/audit", params=(("b", "2"), ("a", "1")))

    assert request_fingerprint(by_params) == request_fingerprint(PageRequest("/aos/audit?a=1&b=2"))
    assert request_fingerprint(by_params) != request_fingerprint(PageRequest("aos/audit?a=1&b=3"))
    assert request_fingerprint(PageRequest("x", method="POST", json={"a": 1, "b": 2})) == request_fingerprint(
        PageRequest("x", method="POST", json={"b": 2, "a": 1})
    )
    assert request_fingerprint(PageRequest("x", method="POST", json={"a": 1})) != request_fingerprint(
        PageRequest("x", method="POST", json={"a": 2})
    )


# -- helpers -----------------------------------------------------------------------------------


def test_to_params_normalises_values() -> None:
    when = datetime(2026, 10, 1, 12, 30, tzinfo=UTC)
    params = to_params(
        {
            "action": ["Create", "Delete"],
            "skip": None,
            "isASC": True,
            "isDetail": False,
            "startTime": when,
            "top": 5,
        }
    )

    assert params == (
        ("action", "Create"),
        ("action", "Delete"),
        ("isASC", "true"),
        ("isDetail", "false"),
        ("startTime", "2026-10-01T12:30:00+00:00"),
        ("top", "5"),
    )


def test_to_params_accepts_pairs_and_none() -> None:
    assert to_params([("a", 1), ("a", (2, None)), ("b", None)]) == (("a", "1"), ("a", "2"))
    assert to_params(None) == ()


def test_with_param_replaces_case_insensitively() -> None:
    params = (("SkipToken", "old"), ("pageSize", "10"), ("skiptoken", "older"))

    assert with_param(params, "skipToken", "new") == (("pageSize", "10"), ("skipToken", "new"))
    assert with_param((), "pageIndex", 3) == (("pageIndex", "3"),)


@pytest.mark.parametrize(
    "body",
    [
        {"data": [1, 2]},
        {"value": [1, 2], "nextLink": None},
        {"jobs": [1, 2], "totalCount": 2},
        {"data": {"jobs": [1, 2], "nextLink": None, "totalCount": 2}},
        [1, 2],
    ],
    ids=["data", "value", "jobs", "data.jobs", "bare-list"],
)
def test_extract_items_finds_the_records(body: Any) -> None:
    assert extract_items(body) == [1, 2]


@pytest.mark.parametrize("body", [{}, {"data": None}, {"message": "ok"}, None])
def test_extract_items_of_a_body_without_records_is_empty(body: Any) -> None:
    assert extract_items(body) == []


# -- the hook refuses to send the token to another origin --------------------------------------


@pytest.fixture
def hook() -> AosHook:
    hook = AosHook()
    hook.__dict__["config"] = AosConnectionConfig(
        conn_id="x",
        client_id="c",
        api_url=API,
        identity_url="https://identity.avepointonlineservices.com",
        client_secret="s",
    )
    return hook


@pytest.mark.parametrize(
    ("link", "host"),
    [
        ("https://evil.example.com/aos/audit?skipToken=x", "evil.example.com"),
        ("https://graph-us.avepointonlineservices.com:8443/aos/audit?skipToken=x", ":8443"),
        ("http://graph-us.avepointonlineservices.com/aos/audit?skipToken=x", "graph-us"),
        ("https://graph-us.avepointonlineservices.com@evil.example.com/aos/audit", "evil.example.com"),
        ("HTTPS://graph-us.avepointonlineservices.com.evil.example.com/aos", "evil.example.com"),
    ],
    ids=["other-host", "other-port", "plain-http", "userinfo-trick", "suffix-trick"],
)
def test_url_for_refuses_another_origin(hook: AosHook, link: str, host: str) -> None:
    with pytest.raises(AosPaginationError, match="refusing to follow") as exc_info:
        hook.url_for(link)
    assert host in str(exc_info.value)


@pytest.mark.parametrize(
    "link",
    [f"{API}/aos/audit?skipToken=x", "https://graph-us.avepointonlineservices.com:443/aos/audit?skipToken=x"],
)
def test_url_for_allows_the_api_origin(hook: AosHook, link: str) -> None:
    assert hook.url_for(link) == link


@pytest.mark.parametrize("path", ["aos/audit?x=1", "/aos/audit?x=1"])
def test_url_for_joins_a_path_to_the_base(hook: AosHook, path: str) -> None:
    assert hook.url_for(path) == f"{API}/aos/audit?x=1"


def test_m365_pages_0_and_1_alike_without_links_lose_no_job() -> None:
    # backup-jobs.md §8: an API that counts pages from 1 may answer page 0 like page 1. With the
    # totalCount stop, the repeated page would end the walk one page early (jobs 21-25 lost).
    from airflow_provider_aos.jobs import JOB_KINDS, parse_job, unique_jobs
    from airflow_provider_aos.pagination import get_param

    jobs = [{"id": f"J{i:02d}", "state": "Finished"} for i in range(1, 26)]

    def fetch(request: PageRequest) -> Any:
        index = max(1, int(get_param(request.params, "pageIndex") or 0))  # 0 answers like 1
        size = int(get_param(request.params, "pageSize") or 10)
        page = jobs[(index - 1) * size : index * size]
        return {"statusCode": 200, "data": page, "metadata": {"totalCount": len(jobs), "nextLink": ""}}

    kind = JOB_KINDS["m365"]
    assert kind.paging is not None
    iterator = PageIterator(fetch, PageRequest(url="/backup/m365/cloudbackupjobs"), kind.paging)
    found = [job.id for job in unique_jobs(parse_job(kind, raw) for raw in iterator)]
    assert found == [job["id"] for job in jobs]


# -- records kept as raw JSON (decode_records_raw) -----------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` with every msgspec.Raw decoded, for comparing with decode_json's reading."""
    if isinstance(value, msgspec.Raw):
        return msgspec.json.decode(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _raws(value: Any, where: str = "") -> list[str]:
    """Where in ``value`` a msgspec.Raw sits (``data[0]``, ``[1]``...)."""
    if isinstance(value, msgspec.Raw):
        return [where]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in _raws(v, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in _raws(v, f"{where}.{k}" if where else k)]
    return []


@pytest.mark.parametrize(
    ("content", "raw_at"),
    [
        (b'{"data":[{"a":1},{"b":[2,3]}],"nextLink":null}', ["data[0]", "data[1]"]),  # audit
        (b'  [ {"a": 1} , 2 ]', ["[0]", "[1]"]),  # bare list, with whitespace
        (b'{"value":[{"a":1}],"@odata.count":1}', ["value[0]"]),
        (b'{"status":200,"message":"","jobs":[{"id":"J"}],"nextLink":"t"}', ["jobs[0]"]),
        (b'{"values":[1],"results":[2],"items":[3]}', ["values[0]", "results[0]", "items[0]"]),
        (b'{"startIndex":null,"statusCode":200,"queriedItems":[{"rowKey":"r"}]}', ["queriedItems[0]"]),
        (b'{"statusCode":200,"errors":[{"e":1}],"data":[{"a":1}],"metadata":{"nextLink":"","totalCount":1}}',
         ["data[0]"]),  # a list under another key stays decoded
        (b'{"statusCode":200,"data":{"totalCount":2,"jobs":[{"id":1},{"id":2}],"nextLink":""}}', []),
        (b'{"statusCode":200,"data":{"data":[1,2]}}', []),  # data as an object: decoded as usual
        (b'{"data":null,"nextLink":null}', []),
        (b'{"data":{"jobs":null,"totalCount":0}}', []),
        (b'{"data":[],"nextLink":null}', []),
        (b'[]', []),
        (b'{"data":"not a list","message":"x"}', []),
        (b'"a string"', []),
        (b'42', []),
        (b'null', []),
        (b'{"data":[1],"data":[2]}', ["data[0]"]),  # a repeated key: the last one, as json.loads
        (b'{"data":[{"name":"caf\\u00e9 \xe2\x82\xac \\ud83d\\ude00"}]}', ["data[0]"]),  # escapes, UTF-8, a pair
    ],
    ids=[
        "audit", "bare-list", "value", "jobs", "values-results-items", "opus", "m365-metadata",
        "data.jobs", "data.data", "data-null", "data.jobs-null", "empty-list", "empty-bare-list",
        "data-string", "string", "number", "json-null", "repeated-key", "non-ascii",
    ],
)  # fmt: skip
def test_decode_records_raw_reads_every_shape_as_decode_json_does(content: bytes, raw_at: list[str]) -> None:
    raw = decode_records_raw(content)
    assert _raws(raw) == raw_at  # the records, and only they, stay raw JSON
    assert _plain(raw) == decode_json(content)
    # The walk reads both bodies alike: the same records, the same next request.
    for body in (raw, decode_json(content)):
        walk = PageWalk(NextLinkPaging(empty_body_ok=True))
        try:
            items, following = walk.advance(PageRequest("aos/audit"), body)
        except AosApiError as exc:
            items, following = [f"refused: {exc}"], None
        if body is raw:
            from_raw = (_plain(items), following)
        else:
            assert (items, following) == from_raw


def test_raw_records_are_the_bytes_the_api_sent() -> None:
    content = b'{"data": [ {"b": 2,  "a": "x"} ,\n{"c":null}], "nextLink": null}'
    records = decode_records_raw(content)["data"]
    assert [bytes(r) for r in records] == [b'{"b": 2,  "a": "x"}', b'{"c":null}']  # key order, spacing kept


@pytest.mark.parametrize("content", [b"", b"   ", b"\n\t "])
def test_decode_records_raw_of_an_empty_body_is_none(content: bytes) -> None:
    assert decode_records_raw(content) is None
    assert decode_json(content) is None


@pytest.mark.parametrize(
    "content", [b"<html>Bad gateway</html>", b"{not json", b"[1,", b'{"data": [1,}', b'{"data": [1]} x']
)
def test_decode_records_raw_of_a_non_json_body_raises_value_error(content: bytes) -> None:
    with pytest.raises(ValueError, match=r"Expecting|Extra data"):
        decode_records_raw(content)
    with pytest.raises(ValueError, match=r"Expecting|Extra data"):
        decode_json(content)


def test_a_page_msgspec_refuses_falls_back_to_python_objects() -> None:
    """A lone surrogate is valid JSON for the standard library, not for msgspec: the page still reads."""
    content = b'{"data":[{"a":"\\ud800"},{"b":1}],"nextLink":"https://x/aos/audit?skipToken=t"}'
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(content)  # the premise: msgspec refuses it
    body = decode_records_raw(content)
    assert body == decode_json(content)
    assert body["data"] == [{"a": "\ud800"}, {"b": 1}]  # Python objects, not Raw
    assert _raws(body) == []
    assert find_next_link(body) == "https://x/aos/audit?skipToken=t"


def test_the_hook_style_walk_gives_raw_records_through_the_iterator() -> None:
    pages = [
        b'{"data":[{"i":1},{"i":2}],"nextLink":"t1"}',
        b'{"data":[{"i":3}],"nextLink":null}',
    ]
    api = FakeApi(lambda request, n: decode_records_raw(pages[n - 1]))
    records = list(PageIterator(api, PageRequest("aos/audit"), NextLinkPaging()))
    assert all(isinstance(r, msgspec.Raw) for r in records)
    assert [bytes(r) for r in records] == [b'{"i":1}', b'{"i":2}', b'{"i":3}']


# -- fetching the next page while the caller handles the page in hand (prefetch) ----------------


class CountingApi:
    """Endless (or ``last``-page) audit pages; counts fetches started and can hold any page back."""

    def __init__(self, last: int | None = None) -> None:
        self.last = last
        self.started = 0
        self.finished = 0
        self.hold: dict[int, threading.Event] = {}  # page number -> released when set
        self.lock = threading.Lock()

    def __call__(self, request: PageRequest) -> Any:
        with self.lock:
            self.started += 1
            number = self.started
        gate = self.hold.get(number)
        if gate is not None:
            assert gate.wait(LIVENESS), "a held page was never released"
        more = self.last is None or number < self.last
        with self.lock:
            self.finished += 1
        return {"data": [f"p{number}-a", f"p{number}-b"], "nextLink": f"token-{number}" if more else None}


LIVENESS = 10.0  # seconds: only a bound for "it did happen"


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIVENESS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


def test_prefetch_yields_the_same_pages() -> None:
    plain = [
        (p.number, p.items, p.request)
        for p in PageIterator(CountingApi(5), PageRequest("aos/audit"), NextLinkPaging()).pages
    ]
    with ThreadPoolExecutor(1) as pool:
        ahead = PageIterator(CountingApi(5), PageRequest("aos/audit"), NextLinkPaging(), prefetch=pool)
        fetched = [(p.number, p.items, p.request) for p in ahead.pages]
    assert fetched == plain
    assert [number for number, _, _ in fetched] == [1, 2, 3, 4, 5]
    assert (ahead.page_number, ahead.num_results) == (5, 10)


def test_prefetch_fetches_the_next_page_and_never_more_than_one_ahead() -> None:
    api = CountingApi(6)
    started_when_consumed: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        for page in PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), prefetch=pool).pages:
            following = page.number + 1
            if following <= 6:
                # The next page is on its way while this one is in hand...
                _until(lambda: api.finished == following, f"page {following} was not prefetched")  # noqa: B023
            time.sleep(0.02)  # ...and nothing further starts however long the caller takes
            started_when_consumed.append(api.started)
    assert started_when_consumed == [2, 3, 4, 5, 6, 6]  # one ahead; none after the last page
    assert api.started == 6


def test_prefetch_respects_max_pages() -> None:
    api = CountingApi()  # endless
    with ThreadPoolExecutor(1) as pool:
        iterator = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), max_pages=3, prefetch=pool)
        assert [p.number for p in iterator.pages] == [1, 2, 3]
    assert api.started == 3  # page 4 is never asked for
    assert iterator.next_page_request is not None  # the API had more: the walk stopped at max_pages


def test_prefetch_pending_fetch_is_cancelled_when_the_consumer_stops() -> None:
    api = CountingApi()
    with ThreadPoolExecutor(1) as pool:
        pages = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), prefetch=pool).pages
        assert next(pages).number == 1
        _until(lambda: api.finished == 2, "page 2 was not prefetched")
        busy = threading.Event()
        blocker = pool.submit(busy.wait, LIVENESS)  # the pool's one thread is taken...
        assert next(pages).number == 2  # ...so page 3's fetch waits in the queue
        pages.close()  # the consumer stops: the queued fetch is cancelled
        busy.set()
        blocker.result(LIVENESS)
    assert api.started == 2  # page 3 was never fetched


def test_prefetch_running_fetch_is_left_to_finish_and_ignored_when_the_consumer_stops() -> None:
    api = CountingApi()
    api.hold[3] = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        pages = PageIterator(api, PageRequest("aos/audit"), NextLinkPaging(), prefetch=pool).pages
        assert [next(pages).number for _ in range(2)] == [1, 2]
        _until(lambda: api.started == 3, "page 3's fetch did not start")
        pages.close()  # returns without waiting for the fetch in flight (it is held)
        assert api.finished == 2
        api.hold[3].set()
    assert (api.started, api.finished) == (3, 3)  # it finished; nothing was fetched after it


def test_prefetch_error_is_raised_when_its_page_is_reached() -> None:
    def fetch(request: PageRequest) -> Any:
        if request.params and dict(request.params).get("skipToken") == "token-2":
            raise AosApiError(method="GET", path="/aos/audit", status=400, error="bad page 3")
        number = 1 if not request.params else int(dict(request.params)["skipToken"].split("-")[1]) + 1
        return {"data": [number], "nextLink": f"token-{number}"}

    seen: list[int] = []

    def consume(pages: Any) -> None:
        for page in pages:
            seen.append(page.number)

    with ThreadPoolExecutor(1) as pool:
        iterator = PageIterator(fetch, PageRequest("aos/audit"), NextLinkPaging(), prefetch=pool)
        with pytest.raises(AosApiError, match="bad page 3"):
            consume(iterator.pages)
    assert seen == [1, 2]  # the pages before the failure were handed over first
