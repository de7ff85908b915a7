"""The acceptance policy: rules as data, and closed when a rule cannot be checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ingest_factories import make_ds, write
from pydicom.tag import Tag

from pneumoscreen.worker.ingest import AcceptancePolicy, RejectedImage, probe
from pneumoscreen.worker.settings import Settings


def test_a_malformed_view_code_sequence_rejects(tmp_path: Path) -> None:
    """Text where the View Code Sequence should be (explicit VR LO, not SQ): the lateral check
    cannot run, so the film is rejected with a reason naming the tag (it used to pass)."""
    ds = make_ds(np.full((32, 32), 500, np.uint16) + np.eye(32, dtype=np.uint16))
    path = write(ds, tmp_path / "ok.dcm")
    assert probe(path).metadata["modality"] == "CR"
    ds.add_new(Tag(0x0054, 0x0220), "LO", "LATERAL")
    bad = write(ds, tmp_path / "bad.dcm")
    with pytest.raises(RejectedImage, match=r"View Code Sequence \(0054,0220\) is malformed"):
        probe(bad)


def test_the_settings_defaults_are_the_policys_own() -> None:
    """One source of truth: Settings reads its defaults from AcceptancePolicy."""
    assert Settings().ingest_config().policy == AcceptancePolicy()
