"""Paging through positions by keyset: the `next` link carries the (ts, id) of the page's last
position, and the next page starts strictly after it.

Unlike page numbers, a page never repeats or skips positions when the writer stores new ones
meanwhile (positions arrive late: a device's buffer after a tunnel), and it costs one index
range read however deep into a month it is. It relies on tracking.history.positions ordering
by ts then id, a total order.
"""

import base64
import struct

from django.db.models import Q, QuerySet
from rest_framework.exceptions import ParseError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from tracking.history import as_feed_position

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
# A cursor is the last position's ts (a double, exactly) and id, packed and base64url-encoded:
# opaque to clients, who follow `next` rather than build it.
_CURSOR = struct.Struct(">dq")


def cursor_encode(ts: float, row_id: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR.pack(ts, row_id)).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[float, int]:
    """Raises ValueError for anything a `next` link could not have carried."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, row_id = _CURSOR.unpack(raw)
    except (ValueError, struct.error) as error:  # binascii.Error and non-ASCII are ValueErrors
        raise ValueError("Invalid cursor.") from error
    if ts != ts:  # NaN: never a stored ts
        raise ValueError("Invalid cursor.")
    return ts, row_id


class PositionCursorPagination(BasePagination):
    """`?cursor=` and `?page_size=` (1 to MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE if absent)."""

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list[dict]:
        page_size = self._page_size(request)
        cursor = request.query_params.get(self.cursor_query_param)
        if cursor is not None:
            try:
                ts, row_id = cursor_decode(cursor)
            except ValueError as error:
                raise ParseError(str(error)) from None
            queryset = queryset.filter(Q(ts__gt=ts) | Q(ts=ts, id__gt=row_id))
        rows = list(queryset[: page_size + 1])  # one more says whether there is a next page
        self.next_url = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            self.next_url = replace_query_param(
                request.build_absolute_uri(),
                self.cursor_query_param,
                cursor_encode(last.ts, last.id),
            )
        return [as_feed_position(row) for row in rows]

    def get_paginated_response(self, data) -> Response:
        return Response({"next": self.next_url, "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["next", "results"],
            "properties": {
                "next": {
                    "type": "string",
                    "format": "uri",
                    "nullable": True,
                    "description": "The next page, with the same filters; null on the last.",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "in": "query",
                "required": False,
                "description": "Where the page starts: copied from the previous page's `next`.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "in": "query",
                "required": False,
                "description": f"Positions a page (default {DEFAULT_PAGE_SIZE}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            },
        ]

    def _page_size(self, request) -> int:
        value = request.query_params.get(self.page_size_query_param)
        if value is None:
            return DEFAULT_PAGE_SIZE
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ParseError(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}.")
        return size
