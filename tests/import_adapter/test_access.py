"""The access policy's decisions, and the requester it judges, made once per association."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

import import_adapter.access as access_module
from common.dimse.fast.scp import Admission, PeerInfo
from common.errors import ConfigError
from common.status import SUCCESS, DimseStatus, Status
from import_adapter.access import (
    AccessPolicy,
    Address,
    Requester,
    Service,
    parse_access_policy,
)
from import_adapter.dimse_service import DimseService
from import_adapter.dispatch import Dispatcher

POLICY = parse_access_policy(
    '{"store": {"calling_aets": ["MODALITY"], "networks": ["10.0.0.0/8", "fd00::/8"]},'
    ' "query": {"calling_aets": ["WORKSTATION"]},'
    ' "retrieve": {"enabled": false}}',
    allowed_networks="192.168.1.7",
)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3"),  # a dual-stack listener's view of an IPv4 peer
        ("fe80::1%eth0", "fe80::1"),
        ("not-an-address", None),
    ],
)
def test_the_requester_address_is_parsed_as_the_rules_compare_it(
    host: str, address: str | None
) -> None:
    requester = Requester.of(" MODALITY ", host)
    assert requester.calling_aet == "MODALITY"
    assert requester.address == (None if address is None else ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("service", "calling", "host", "allowed"),
    [
        (Service.STORE, "MODALITY", "10.9.9.9", True),
        (Service.STORE, "MODALITY  ", "::ffff:10.9.9.9", True),
        (Service.STORE, "MODALITY", "fd00::5", True),
        (Service.STORE, "MODALITY", "11.0.0.1", False),
        (Service.STORE, "OTHER", "10.9.9.9", False),
        (Service.STORE, "MODALITY", "somewhere", False),
        (Service.QUERY, "WORKSTATION", "192.168.1.7", True),  # the global network
        (Service.QUERY, "WORKSTATION", "192.168.1.8", False),
        (Service.RETRIEVE, "MODALITY", "10.9.9.9", False),
        (Service.COMMIT, "ANYONE", "192.168.1.7", True),
        (Service.COMMIT, "ANYONE", "10.9.9.9", False),
    ],
)
def test_decisions(service: Service, calling: str, host: str, allowed: bool) -> None:
    requester = Requester.of(calling, host)
    assert POLICY.allows(service, requester) is allowed
    refusal = POLICY.refusal(service, requester)
    assert (refusal is None) is allowed
    if refusal is not None:
        assert refusal.code == Status.NOT_AUTHORIZED
    assert AccessPolicy().allows(service, requester)


def test_a_requester_allowed_nothing_is_told_at_association_time() -> None:
    assert POLICY.allows_any(Requester.of("WORKSTATION", "192.168.1.7"))
    assert not POLICY.allows_any(Requester.of("OTHER", "172.16.0.1"))


class Assoc:
    """What the dispatcher reads of an association: its requestor."""

    def __init__(self, calling: str, host: str) -> None:
        self.requestor = PeerInfo(calling, host, 104)


def test_the_requester_address_is_parsed_once_per_association(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    parsed: list[str] = []
    parse = access_module._address

    def counting(host: str) -> Address | None:
        parsed.append(host)
        return parse(host)

    monkeypatch.setattr(access_module, "_address", counting)
    stored: list[str] = []

    def on_c_store(assoc: Any, *_args: Any) -> DimseStatus:
        stored.append(assoc.requestor.address)
        return SUCCESS

    dispatcher = Dispatcher(
        [DimseService("store", access=Service.STORE, c_store=on_c_store)],
        POLICY,
        lambda _assoc, _request: Admission(),
    )
    inside, outside = Assoc("MODALITY", "10.0.0.5"), Assoc("MODALITY", "11.0.0.5")
    statuses = [
        dispatcher.c_store(assoc, None, None, tmp_path / "x.dcm")  # type: ignore[arg-type]
        for assoc in (inside, outside, inside, outside, inside)
    ]
    assert [s.code for s in statuses] == [
        Status.SUCCESS, Status.NOT_AUTHORIZED, Status.SUCCESS, Status.NOT_AUTHORIZED,
        Status.SUCCESS,
    ]
    assert stored == ["10.0.0.5"] * 3
    assert parsed == ["10.0.0.5", "11.0.0.5"]  # once per association, not per C-STORE


def test_a_policy_that_is_not_json_is_refused_with_where() -> None:
    with pytest.raises(ConfigError, match=r"policy.json is not valid JSON \(line 2, column 1"):
        parse_access_policy('{"store":\n}', source="policy.json")
