"""QIDO-RS paging of DicomwebClient.search, with a fake transport that serves a result list."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from common.auth import NoAuth
from common.dicomweb.address import parse_dicomweb_address
from common.dicomweb.client import FIRST_PAGE_DIVISOR, DicomwebClient
from common.http import Body
from common.retry import RetryPolicy


@dataclass
class _Reply:
    status: int
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class _Store:
    """Serves ``total`` results, ``limit``/``offset`` paged; records the offsets asked for."""

    def __init__(self, total: int, delay: float = 0.0) -> None:
        self.results = [{"0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(total)]
        self.delay = delay
        self.offsets: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, headers: Mapping[str, str],
                body: Body = None, stream: bool = False, timeout: float | None = None) -> Any:
        params = parse_qs(urlsplit(url).query)
        limit, offset = int(params["limit"][0]), int(params["offset"][0])
        with self._lock:
            self.offsets.append(offset)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        return _Reply(200, json.dumps(self.results[offset : offset + limit]).encode())

    def close(self) -> None:
        pass


def _client(store: _Store) -> DicomwebClient:
    return DicomwebClient(parse_dicomweb_address("http://store.test/dicom-web"), store,
                          NoAuth(), RetryPolicy())


def _uids(items: list[dict[str, Any]]) -> list[str]:
    return [item["0020000D"]["Value"][0] for item in items]


@pytest.mark.parametrize("parallel", [1, 2, 4])
@pytest.mark.parametrize("total", [0, 3, 10, 11, 35])
def test_every_result_once_in_order(total: int, parallel: int) -> None:
    store = _Store(total)
    found = list(_client(store).search(["studies"], [], page_size=10, parallel=parallel))
    assert _uids(found) == [f"1.2.{i}" for i in range(total)]
    assert store.most_in_flight <= parallel


@pytest.mark.parametrize(("parallel", "fits"), [(1, 10), (4, 10 // FIRST_PAGE_DIVISOR)])
def test_a_search_that_fits_in_the_first_page_costs_one_request(parallel: int, fits: int) -> None:
    store = _Store(fits - 1)
    found = list(_client(store).search(["studies"], [], page_size=10, parallel=parallel))
    assert len(found) == fits - 1
    assert store.offsets == [0]


def test_pages_after_the_first_are_requested_ahead_in_parallel() -> None:
    store = _Store(100, delay=0.05)
    assert len(list(_client(store).search(["studies"], [], page_size=10, parallel=4))) == 100
    assert 2 <= store.most_in_flight <= 4  # all 4 at once unless the machine is very busy
    first = 10 // FIRST_PAGE_DIVISOR
    assert sorted(store.offsets)[:11] == [0, *range(first, 100, 10)]
    # Wasted requests past the end: at most parallel - 1.
    assert len(store.offsets) <= 11 + 3


def test_closing_the_search_early_stops_asking_for_pages() -> None:
    store = _Store(1000, delay=0.01)
    results = _client(store).search(["studies"], [], page_size=10, parallel=2)
    assert isinstance(results, Generator)  # typed as an Iterator; closing is what is tested
    assert len([next(results) for _ in range(15)]) == 15
    results.close()
    time.sleep(0.1)
    asked = len(store.offsets)
    time.sleep(0.1)
    assert len(store.offsets) == asked <= 5
