"""Unit tests of source addresses: which part of a notification is appended to which base."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from export_adapter.errors import NotificationError
from export_adapter.notification import parse_instance_path
from export_adapter.source import SourceMode, parse_source_address

STORE = "projects/p/locations/us/datasets/d/dicomStores/s/dicomWeb"
PATH = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"


def test_google_api_base_appends_the_whole_resource_name() -> None:
    locator = parse_source_address("https://healthcare.googleapis.com/v1/")
    assert locator.mode is SourceMode.RESOURCE_NAME
    ref = parse_instance_path(f"{STORE}/{PATH}")
    assert locator.url(ref) == f"https://healthcare.googleapis.com/v1/{STORE}/{PATH}"


@pytest.mark.parametrize(
    "root",
    [
        "http://127.0.0.1:8042/dicom-web",
        "http://pacs.example/dicomweb/",
        "https://healthcare.googleapis.com/v1/" + STORE,
        "http://dcm4chee:8080/dcm4chee-arc/aets/DCM4CHEE/rs",
    ],
)
@pytest.mark.parametrize("data", [f"{STORE}/{PATH}", f"/{PATH}"])
def test_dicomweb_root_appends_from_studies_on(root: str, data: str) -> None:
    locator = parse_source_address(root)
    assert locator.mode is SourceMode.DICOMWEB_ROOT
    assert locator.url(parse_instance_path(data)) == f"{root.rstrip('/')}/{PATH}"


def test_bare_path_against_api_base_is_a_permanent_error() -> None:
    locator = parse_source_address("https://healthcare.googleapis.com/v1beta1")
    with pytest.raises(NotificationError, match="DICOMweb root"):
        locator.segments(parse_instance_path(f"/{PATH}"))


@pytest.mark.parametrize(
    "bad", ["healthcare.googleapis.com/v1", "ftp://x/v1", "http://host/dicom-web/studies"]
)
def test_bad_source_addresses(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_source_address(bad)
