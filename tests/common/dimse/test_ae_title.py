"""AE titles read from the 16-byte fields of an A-ASSOCIATE-RQ."""

from __future__ import annotations

import pytest

from common.dimse.ae_title import ae_title_from_field, space_padded


@pytest.mark.parametrize(
    ("field", "padded"),
    [
        (b"IMPORTADAPTER   ", b"IMPORTADAPTER   "),
        (b"IMPORTADAPTER\0\0\0", b"IMPORTADAPTER   "),  # pynetdicom2
        (b"IMPORTADAPTER\0 \0", b"IMPORTADAPTER   "),
        (b"  CENTRED\0\0\0\0\0\0\0", b"  CENTRED       "),
        (b"IMPORT\0ADAPTER\0\0", b"IMPORT\0ADAPTER  "),  # only trailing padding
        (b"\0" * 16, b" " * 16),
    ],
)
def test_space_padded(field: bytes, padded: bytes) -> None:
    assert space_padded(field) == padded


@pytest.mark.parametrize(
    ("field", "title"),
    [
        (b"IMPORTADAPTER   ", "IMPORTADAPTER"),
        (b"IMPORTADAPTER\0\0\0", "IMPORTADAPTER"),
        (b"  SPACED AE \0\0\0\0\0", "SPACED AE"),
        (b"ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP"),
        (b"\0" * 16, None),
        (b" " * 16, None),
        (b"IMPORT\0ADAPTER  ", None),
        (b"EVIL\nFORGED    ", None),
        (b"IMPORTADAPTER\r\n ", None),
        (b"BACK\\SLASH     ", None),
        (b"\x1b[31mRED      ", None),
        (b"DEL\x7f            ", None),
        (b"caf\xc3\xa9           ", None),
    ],
)
def test_ae_title_from_field(field: bytes, title: str | None) -> None:
    assert ae_title_from_field(field) == title
