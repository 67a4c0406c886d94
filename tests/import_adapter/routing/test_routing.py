"""Destination config parsing, filters with DICOM wildcards, and first-match/send-to-all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from common.dicom.part10 import Part10Instance
from common.errors import ConfigError, RoutingError
from import_adapter.routing.config import load_destination_config, parse_destination_config
from import_adapter.routing.destinations import DicomwebDestination, destination_from_description
from import_adapter.routing.filter import InstanceAttributes, parse_filter, wildcard_pattern
from import_adapter.routing.router import Router, RoutingConfig

A = "http://a.example/dicom-web"
B = "http://b.example/dicom-web"


def _config(rules: list[dict[str, object]]) -> str:
    return json.dumps(rules)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [("CT", "CT", True), ("CT", "CTX", False), ("C*", "CTX", True), ("C?", "CT", True),
     ("C?", "C", False), ("*", "", True), ("a.b", "axb", False), ("M*G", "MAMMOG", True)],
)
def test_wildcards(pattern: str, value: str, expected: bool) -> None:
    assert (wildcard_pattern(pattern).fullmatch(value) is not None) is expected


def test_filter_keys_keywords_tags_and_calling_ae() -> None:
    parsed = parse_filter("Modality=MG&AETitle=CT*&00100020=P?")
    attrs = InstanceAttributes("CT1", {0x00080060: ("MG",), 0x00100020: ("P1",)})
    assert parsed.matches(attrs)
    assert not parsed.matches(InstanceAttributes("MR1", attrs.values))
    assert not parsed.matches(InstanceAttributes("CT1", {0x00080060: ("MG",)}))  # tag absent
    assert parsed.tags == {0x00080060, 0x00100020}
    multi = parse_filter("ImageType=DERIVED")
    assert multi.matches(InstanceAttributes("X", {0x00080008: ("ORIGINAL", "DERIVED")}))
    assert parse_filter("").matches(InstanceAttributes("ANY"))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"filter": "Modality", "dicomweb_destination": A}], "entry 0 (filter 'Modality')"),
        ([{"filter": "", "dicomweb_destination": A}, {"filter": "Bogus=1",
          "dicomweb_destination": A}], "entry 1 (filter 'Bogus=1'): unknown attribute"),
        ([{"filter": "", "dicomweb_destination": A, "dicom_destination": {}}], "exactly one"),
        ([{"filter": "", "dicom_destination": {"name": "X", "host": "h"}}], "lacks port"),
        ([{"filter": "", "dicom_destination": {"name": "X", "host": "h", "port": 0}}], "port"),
        ([{"filter": "", "dicomweb_destination": "ftp://x"}], "entry 0"),
        ([{"filter": "ReferencedSOPSequence=1", "dicomweb_destination": A}], "sequence"),
        ([{"filter": "", "dicomweb_destination": A, "extra": 1}], "unknown key(s) extra"),
        ({"filter": ""}, "must be a JSON array"),
    ],
)
def test_invalid_config_names_the_entry(rules: object, message: str) -> None:
    with pytest.raises(ConfigError, match="test") as caught:
        parse_destination_config(json.dumps(rules), source="test")
    assert message in str(caught.value)


def test_config_sources(tmp_path: Path) -> None:
    text = _config([{"filter": "Modality=CT", "dicomweb_destination": A}])
    path = tmp_path / "routes.json"
    path.write_text(text)
    assert load_destination_config(path=path)[0].destination == DicomwebDestination(
        load_destination_config(inline=text)[0].destination.address  # type: ignore[union-attr]
    )
    assert load_destination_config(environ={"ENV_DESTINATION_CONFIG_JSON": text})
    assert load_destination_config(environ={}) == ()
    with pytest.raises(ConfigError, match="not both"):
        load_destination_config(path=path, inline=text)
    with pytest.raises(ConfigError, match="line 1"):
        load_destination_config(inline="[{")


def test_first_match_send_to_all_and_default() -> None:
    rules = parse_destination_config(_config([
        {"filter": "Modality=CT", "dicomweb_destination": A},
        {"filter": "AETitle=SCU*", "dicomweb_destination": B},
        {"filter": "AETitle=SCU*", "dicom_destination": {"name": "P", "host": "h", "port": 104}},
    ]), source="t")
    default = rules[0].destination  # any destination will do as default for the test
    ct_from_scu = InstanceAttributes("SCU1", {0x00080060: ("CT",)})
    router = Router(RoutingConfig(rules, None, False))
    assert [str(d) for d in router.route(ct_from_scu)] == [A]
    everywhere = Router(RoutingConfig(rules, None, True))
    assert [str(d) for d in everywhere.route(ct_from_scu)] == [A, B, "P@h:104"]
    with pytest.raises(RoutingError):
        router.route(InstanceAttributes("OTHER", {0x00080060: ("MR",)}))
    fallback = Router(RoutingConfig(rules[1:], default, False))
    assert fallback.route(InstanceAttributes("OTHER")) == (default,)
    assert len({d.key for d in everywhere.destinations}) == 3


def test_destination_descriptions_round_trip() -> None:
    rules = parse_destination_config(_config([
        {"filter": "", "dicomweb_destination": A},
        {"filter": "", "dicom_destination": {"name": "P", "host": "h", "port": "104"}},
    ]), source="t")
    for rule in rules:
        again = destination_from_description(rule.destination.describe(), "t")
        assert again == rule.destination and again.key == rule.destination.key


def test_attributes_are_read_from_the_spooled_dataset(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.PatientID = "P1"
    ds.BitsAllocated = 8
    ds.PixelData = b"\x00" * 1000
    ds.file_meta = Dataset()  # type: ignore[assignment]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    instance = Part10Instance.from_spooled(
        path, sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    rules = parse_destination_config(
        _config([{"filter": "Modality=MG&PatientID=P*", "dicomweb_destination": A}]), source="t"
    )
    router = Router(RoutingConfig(rules))
    attrs = router.attributes(instance, "SCU")
    assert attrs.values == {0x00080060: ("MG",), 0x00100020: ("P1",)}
    assert [str(d) for d in router.route(attrs)] == [A]
