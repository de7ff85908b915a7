"""The listener refuses a data set that opens with file-meta elements: written behind our Part-10
header they would read as our meta (the recorded sender, the transfer syntax)."""

from __future__ import annotations

import zlib

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pneumoscreen.worker.receive.scp import _opens_with_file_meta


def _encoded(ds: Dataset, syntax: str) -> bytes:
    little = syntax != ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = little, implicit
    write_dataset(out, ds)
    raw = out.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = packer.compress(raw) + packer.flush()
    return raw


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                    ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_group_2_in_the_data_set_is_found_in_every_encoding(syntax: str) -> None:
    plain = Dataset()
    plain.PatientID = "x"
    plain.Modality = "CR"
    spoofed = Dataset()
    spoofed.add_new(0x00020016, "AE", "SPOOFED")
    spoofed.Modality = "CR"
    assert not _opens_with_file_meta(_encoded(plain, syntax), syntax)
    assert _opens_with_file_meta(_encoded(spoofed, syntax), syntax)
