"""ListenerAE: another AE title for one thread's outbound work, the listener's everywhere else."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pynetdicom import AE

from import_adapter.listener_ae import CALLING_AE_TITLE, ListenerAE


def test_acting_as_is_scoped_to_the_thread_and_the_block() -> None:
    ae = ListenerAE("LISTENER")
    seen: list[str] = []
    with ae.acting_as("MOVER"):
        assert ae.ae_title == "MOVER"
        worker = threading.Thread(target=lambda: seen.append(ae.ae_title))
        worker.start()
        worker.join()
        with ae.acting_as("INNER"):
            assert ae.ae_title == "INNER"
        assert ae.ae_title == "MOVER"
    assert ae.ae_title == "LISTENER"
    assert seen == ["LISTENER"]


def test_the_title_setter_still_validates() -> None:
    ae = ListenerAE("LISTENER")
    ae.ae_title = "OTHER"
    assert ae.ae_title == "OTHER"
    with pytest.raises(ValueError):
        ae.ae_title = "X" * 17


def test_associate_calls_as_the_given_title_only_for_that_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    titles: list[str] = []

    def fake_associate(self: AE, addr: Any, port: int, *args: Any, **kwargs: Any) -> Any:
        titles.append(self.ae_title)  # what pynetdicom puts in the A-ASSOCIATE-RQ
        return None

    monkeypatch.setattr(AE, "associate", fake_associate)
    ae = ListenerAE("LISTENER")
    ae.associate("127.0.0.1", 104, **{CALLING_AE_TITLE: "MOVER"})
    ae.associate("127.0.0.1", 104)
    assert titles == ["MOVER", "LISTENER"]
    assert ae.ae_title == "LISTENER"
