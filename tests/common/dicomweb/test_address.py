"""Unit tests of DICOMweb address validation and URL building."""

from __future__ import annotations

import pytest

from common.dicomweb.address import address_from_deprecated, parse_dicomweb_address
from common.errors import ConfigError

GOOGLE = (
    "https://healthcare.googleapis.com/v1/projects/p/locations/us/datasets/d/dicomStores/s/dicomWeb"
)


def test_google_store_is_accepted_and_normalised() -> None:
    assert parse_dicomweb_address(GOOGLE + "/").root == GOOGLE
    assert parse_dicomweb_address(GOOGLE).is_google


@pytest.mark.parametrize(
    "bad",
    [
        "https://healthcare.googleapis.com/v1/projects/p/dicomWeb",
        "http://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb",
        GOOGLE + "/studies",
        "ftp://host/dicom-web",
        "localhost:8042/dicom-web",
        "http://user:pw@host/dicom-web",
        "http://host/dicom-web?x=1",
    ],
)
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_dicomweb_address(bad)


def test_deprecated_pair() -> None:
    address = address_from_deprecated(
        "https://healthcare.googleapis.com/v1/",
        "projects/p/locations/us/datasets/d/dicomStores/s/dicomWeb/studies",
    )
    assert address.root == GOOGLE


def test_url_building_encodes_parameters() -> None:
    address = parse_dicomweb_address("http://127.0.0.1:8042/dicom-web")
    url = address.url(
        "studies", "1.2.3", "series",
        query=[("PatientName", "DOE^J*"), ("StudyDate", "20200101-20201231"), ("includefield", "00100020")],
    )
    assert url == (
        "http://127.0.0.1:8042/dicom-web/studies/1.2.3/series?PatientName=DOE%5EJ*"
        "&StudyDate=20200101-20201231&includefield=00100020"
    )
    assert address.url("studies", "a/b") == "http://127.0.0.1:8042/dicom-web/studies/a%2Fb"
