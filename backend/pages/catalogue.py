"""The catalogue on the page: one page of files for a query (name, size, order), and the links
to the pages around it.

The page asks the catalogue index (backend/catalogue_index.py) through the same `list_page` as
`GET /v1/files`, so the page and the API agree on every order and filter. Pages hold
PAGE_FILES rows; "Previous" is a cursor of the same index generation, one page back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, get
from litestar.params import Parameter
from litestar.response import Template

from backend.catalogue_index import Order, Query, Sort
from backend.catalogue_listing import DEFAULT_LIMIT, MAX_QUERY_LENGTH, encode_cursor, list_page
from backend.downloads import InvalidInput
from backend.pages.browser import browser_owner
from backend.pages.views import CatalogueRow, catalogue_rows
from backend.services import Services

PAGE_FILES = DEFAULT_LIMIT
RESULTS_TEMPLATE = "partials/catalogue_results.html"
NO_STORE = {"Cache-Control": "no-store"}
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Choice:
    key: str
    label: str


# The orders a person picks from, as (sort, order) of the index; the first is the default.
SORTS: dict[str, tuple[str, Sort, Order]] = {
    "id": ("Catalogue order", "id", "asc"),
    "name": ("Name, A to Z", "name", "asc"),
    "name-desc": ("Name, Z to A", "name", "desc"),
    "size-desc": ("Largest first", "size", "desc"),
    "size": ("Smallest first", "size", "asc"),
    "modified-desc": ("Newest first", "modified", "desc"),
}
# Size bands in bytes, (min_size, max_size), both inclusive; "" is any size.
SIZES: dict[str, tuple[str, int | None, int | None]] = {
    "": ("Any size", None, None),
    "small": ("Under 1 MB", None, _MIB - 1),
    "medium": ("1 MB to 100 MB", _MIB, 100 * _MIB),
    "large": ("Over 100 MB", 100 * _MIB + 1, None),
}
# The API's default too, so a page and a `GET /v1/files` without parameters list alike.
DEFAULT_SORT = "id"


@dataclass(frozen=True, slots=True)
class CatalogueView:
    """What the catalogue part of the page shows for one query and position."""

    rows: list[CatalogueRow]
    total: int
    first: int
    last: int
    q: str
    sort: str
    size: str
    # None: no such page; "" (previous only): the first page, which needs no cursor.
    next_cursor: str | None
    previous_cursor: str | None

    def url(self, path: str, cursor: str | None) -> str:
        """`path` (`/` for a link, `/catalogue` for htmx) at `cursor` with this query."""
        return page_url(path, self.q, self.sort, self.size, cursor)

    @property
    def filtered(self) -> bool:
        return bool(self.q) or bool(self.size)

    @property
    def sort_choices(self) -> list[Choice]:
        return [Choice(key, label) for key, (label, _, _) in SORTS.items()]

    @property
    def size_choices(self) -> list[Choice]:
        return [Choice(key, label) for key, (label, _, _) in SIZES.items()]


def page_query(q: str, sort: str, size: str) -> Query:
    """The index query of the page's controls; InvalidInput naming `q`, `sort` or `size`."""
    if len(q) > MAX_QUERY_LENGTH:
        raise InvalidInput("q", f"is longer than {MAX_QUERY_LENGTH} characters")
    if sort not in SORTS:
        raise InvalidInput("sort", f"must be one of {', '.join(SORTS)}")
    if size not in SIZES:
        raise InvalidInput("size", f"must be one of {', '.join(k for k in SIZES if k)} or empty")
    _, by, order = SORTS[sort]
    _, min_size, max_size = SIZES[size]
    return Query(q=q.strip(), sort=by, order=order, min_size=min_size, max_size=max_size)


def page_url(path: str, q: str, sort: str, size: str, cursor: str | None) -> str:
    """`path` with the controls' values (defaults left out) and the cursor, if any."""
    params = [("q", q), ("size", size), ("sort", "" if sort == DEFAULT_SORT else sort)]
    params.append(("cursor", cursor or ""))
    query = urlencode([(k, v) for k, v in params if v])
    return f"{path}?{query}" if query else path


async def catalogue_view(
    services: Services, q: str, sort: str, size: str, cursor: str | None
) -> CatalogueView:
    """One page of the catalogue for the controls' values (StorageError as `list_page`)."""
    query = page_query(q, sort, size)
    listing = await list_page(services.catalogue, query, cursor or None, PAGE_FILES)
    page = listing.page
    previous: str | None = None
    if page.offset > 0:
        back = max(0, page.offset - PAGE_FILES)
        previous = "" if back == 0 else encode_cursor(page.generation, back, query)
    return CatalogueView(
        rows=catalogue_rows(page.items),
        total=page.total,
        first=page.offset + 1 if page.items else 0,
        last=page.offset + len(page.items),
        q=query.q,
        sort=sort,
        size=size,
        next_cursor=listing.next_cursor,
        previous_cursor=previous,
    )


Q = Annotated[str, Parameter(query="q", required=False, max_length=MAX_QUERY_LENGTH)]
SORT = Annotated[str, Parameter(query="sort", required=False)]
SIZE = Annotated[str, Parameter(query="size", required=False)]
CURSOR = Annotated[str | None, Parameter(query="cursor", required=False)]


@get("/catalogue", include_in_schema=False)
async def catalogue_results(
    request: Request[Any, Any, Any],
    services: Services,
    q: Q = "",
    sort: SORT = DEFAULT_SORT,
    size: SIZE = "",
    cursor: CURSOR = None,
) -> Template:
    """The catalogue's results for htmx to swap; the address bar follows (`HX-Push-Url`)."""
    browser = browser_owner(request, services.settings)
    view = await catalogue_view(services, q, sort, size, cursor)
    pushed = page_url("/", view.q, sort, size, cursor)
    return Template(
        RESULTS_TEMPLATE,
        context={"view": view},
        cookies=browser.cookies,
        headers={**NO_STORE, "HX-Push-Url": pushed},
    )
