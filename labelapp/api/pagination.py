from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

_MAX_ID = 2**63 - 1  # bigint


class IdCursorPagination(CursorPagination):
    """Keyset pagination on the primary key: page N of 1M rows costs the same as page 1."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        # DRF checks the cursor's offset and direction but hands its position to
        # the query as it came: a crafted cursor (base64 of "p=abc") would be a
        # ValueError there. A position is an id; anything else is the same 404 as
        # any other invalid cursor.
        if cursor is not None and cursor.position is not None:
            position = cursor.position
            if not (position.isascii() and position.isdigit()) or not (
                0 <= int(position) <= _MAX_ID
            ):
                raise NotFound(self.invalid_cursor_message)
        return cursor
