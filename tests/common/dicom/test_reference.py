"""InstanceReference: the one way to name an instance (pure)."""

from __future__ import annotations

import pytest

from common.dicom.reference import InstanceReference, is_uid


def test_dicomweb_segments_name_the_instance() -> None:
    ref = InstanceReference(study_uid="1.2", series_uid="1.3", sop_instance_uid="1.4")
    assert ref.dicomweb_segments == ("studies", "1.2", "series", "1.3", "instances", "1.4")


def test_a_reference_without_study_or_series_has_no_dicomweb_path() -> None:
    with pytest.raises(ValueError, match=r"1\.4"):
        _ = InstanceReference(sop_instance_uid="1.4", sop_class_uid="1.2.3").dicomweb_segments


def test_references_are_values() -> None:
    """Commitment deduplicates references and keys its verdicts by them."""
    a = InstanceReference(sop_class_uid="1.2.3", sop_instance_uid="1.4")
    b = InstanceReference(sop_instance_uid="1.4", sop_class_uid="1.2.3")
    assert a == b and len({a, b}) == 1
    assert a != InstanceReference(sop_class_uid="1.2.9", sop_instance_uid="1.4")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.1.1", True),
        ("1", True),
        ("1.2.3\n", False),  # re's "$" would let this through
        ("1..2", False),
        ("1.2.", False),
        ("", False),
        ("../..", False),
        ("1." * 32 + "1", False),  # 65 characters
    ],
)
def test_is_uid(value: str, valid: bool) -> None:
    assert is_uid(value) is valid
