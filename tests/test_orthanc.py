"""The real-PACS fixture: Orthanc starts, stores, lists, and keeps its storage over a restart."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from orthanc import Orthanc

pytestmark = pytest.mark.shared


def test_orthanc_stores_lists_and_survives_a_restart(orthanc: Orthanc, shared_dir: Path) -> None:
    source = sorted((shared_dir / "dicom" / "chest").glob("*.dcm"))[0]
    answer = orthanc.upload(source)
    assert answer["Status"] == "Success"
    assert orthanc.instances() == [answer["ID"]]
    assert orthanc.studies() == [answer["ParentStudy"]]
    study_uid = pydicom.dcmread(source, stop_before_pixels=True).StudyInstanceUID
    assert orthanc.find_by_study_uid(study_uid) == [answer["ID"]]
    assert orthanc.find_by_study_uid("1.2.3.4.5.6.7.8.9") == []

    orthanc.stop()
    assert not orthanc.running
    orthanc.start()
    assert orthanc.instances() == [answer["ID"]]
    assert orthanc.instance_file(answer["ID"]) == source.read_bytes()


def test_orthanc_sends_to_another_orthanc(orthanc: Orthanc, shared_dir: Path,
                                          tmp_path: Path) -> None:
    from orthanc import orthanc_server

    with orthanc_server(tmp_path / "peer", aet="PEER") as peer:
        orthanc.add_modality("peer", "PEER", "127.0.0.1", peer.dicom_port)
        source = sorted((shared_dir / "dicom" / "chest").glob("*.dcm"))[0]
        answer = orthanc.upload(source)
        sent = orthanc.send_to_modality("peer", [answer["ID"]])
        assert sent["InstancesCount"] == 1 and sent["FailedInstancesCount"] == 0
        assert peer.instances() == [answer["ID"]]
        job = orthanc.send_to_modality("peer", [answer["ParentStudy"]], asynchronous=True)
        assert orthanc.wait_job(job["ID"])["State"] == "Success"
    assert orthanc.dicomweb.endswith("/dicom-web") and orthanc.dicom_port > 0
