"""``screen inspect``'s view of a file: the same guards as ingestion itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ingest_factories import chest_like, make_ds, write
from pydicom.uid import DeflatedExplicitVRLittleEndian

from pneumoscreen.worker.ingest import AcceptancePolicy, DecodeOptions, IngestConfig
from pneumoscreen.worker.ingest.inspection import inspect_file, used_tags


def _bomb(tmp_path: Path) -> Path:
    ds = make_ds(np.zeros((1000, 1000), np.uint16) + np.eye(1000, dtype=np.uint16))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = write(ds, tmp_path / "bomb.dcm")
    assert path.stat().st_size < 100_000  # 2 MB of pixels deflate to a few kB
    return path


class TestInspectFile:
    def test_a_deflate_bomb_is_not_inflated_to_list_its_tags(self, tmp_path: Path) -> None:
        """The tag listing reads under the bomb guard too (it used to parse the whole file)."""
        config = IngestConfig(AcceptancePolicy(), DecodeOptions(max_pixels=10_000))
        result = inspect_file(_bomb(tmp_path), config)
        assert result.decision == "failed"
        assert result.reason.startswith("deflated data set inflates beyond")
        assert result.tags == {}

    def test_tags_of_a_good_file(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(32, 32)), tmp_path / "ok.dcm")
        tags = used_tags(path, IngestConfig())
        assert tags["Modality"] == "CR" and "PatientID" not in tags and "PatientName" not in tags
        assert inspect_file(path).decision == "done"
