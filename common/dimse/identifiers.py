"""Datasets that travel with DIMSE requests and responses (identifiers, action information).

Decoded and encoded with pydicom, through pynetdicom's ``dsutils``, in the presentation
context's transfer syntax (explicit or implicit VR, either endianness, deflated).
"""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode, encode


def decode_dataset(data: bytes, transfer_syntax: str) -> Dataset:
    """Decode ``data``, encoded in ``transfer_syntax``.

    Raises:
        Exception: whatever pydicom raises on a malformed dataset (callers turn it into a
            status).
    """
    syntax = UID(transfer_syntax)
    return decode(
        BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
    )


def encode_dataset(dataset: Dataset, transfer_syntax: str) -> bytes:
    """Encode ``dataset`` in ``transfer_syntax``.

    Raises:
        ValueError: the dataset cannot be encoded.
    """
    syntax = UID(transfer_syntax)
    encoded = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise ValueError("dataset cannot be encoded")
    return encoded
