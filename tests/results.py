"""Screened studies made directly in the database (no TensorFlow), with their source DICOMs,
and the SR read back with highdicom: what the export tests share."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ingest_factories import chest_like, make_ds, write
from pydicom import Dataset
from pydicom.uid import generate_uid

from pneumoscreen.db import Heatmap, Image, ImageStatus, Prediction, session_scope
from pneumoscreen.db.queries import get_or_create_model_version

MODEL_SHA = "ab" * 32


@dataclass
class Made:
    study_uid: str
    paths: list[Path]
    sop_uids: list[str]
    image_ids: list[int]


def screened_study(folder: Path, url: str, *, views: tuple[str, ...] = ("PA",),
                   probability: float = 0.91, p_viral: float | None = 0.7,
                   in_scope: bool = True, scope_reason: str | None = None,
                   heatmap: bool = True, model_sha: str = MODEL_SHA,
                   study_uid: str | None = None, status: ImageStatus | None = None,
                   **tags: Any) -> Made:
    """One DICOM study: an image per view; frontal ones screened (a prediction, perhaps a
    heatmap), lateral ones rejected, as the worker leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    made = Made(study_uid, [], [], [])
    with session_scope(url) as session:
        mv = get_or_create_model_version(
            session=session, name="pneumoscreen-test", version="9.9.9", file_sha256=model_sha,
            input_spec={"height": 32, "width": 32, "channels": 1}, threshold=0.6591,
            target_recall=0.95, trained=True)
        for n, view in enumerate(views):
            ds = make_ds(chest_like(64, 48, seed=n), **{
                "StudyInstanceUID": study_uid, "ViewPosition": view,
                "PatientBirthDate": "20200101", "StudyTime": "101500", "StudyID": "S1",
                "ReferringPhysicianName": "Ref^Doc", **tags})
            path = write(ds, folder / f"{study_uid[-8:]}_{n}_{view}.dcm")
            lateral = view in ("LL", "RL", "LAT", "LATERAL")
            st = status or (ImageStatus.rejected if lateral else ImageStatus.done)
            study = Image(sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                          sop_instance_uid=ds.SOPInstanceUID, source_path=str(path),
                          format="dicom", status=st, study_instance_uid=study_uid,
                          series_instance_uid=ds.SeriesInstanceUID, accession_number="acc-key",
                          patient_key="p" * 64, modality="CR", view_position=view,
                          reason="lateral view" if lateral else None)
            session.add(study)
            session.flush()
            made.paths.append(path)
            made.sop_uids.append(ds.SOPInstanceUID)
            made.image_ids.append(study.id)
            if st is not ImageStatus.done:
                continue
            pred = Prediction(image_id=study.id, model_version_id=mv.id,
                              probability=probability, p_viral=p_viral, threshold=0.6591,
                              flagged=probability >= 0.6591, in_scope=in_scope,
                              scope_reason=scope_reason, atypicality=1.25,
                              created_at=dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.timezone.utc))
            session.add(pred)
            session.flush()
            if heatmap:
                cam = np.linspace(0, 1, 49, dtype=np.float32).reshape(7, 7)
                session.add(Heatmap(prediction_id=pred.id, height=7, width=7,
                                    data=cam.astype(np.float16).tobytes()))
    return made


def read_sr(ds: Dataset) -> dict[str, Any]:
    """What the SR says, read with highdicom: per image group, its values by concept meaning."""
    import highdicom as hd

    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    groups = sr.content.get_image_measurement_groups()
    out = []
    for g in groups:
        values: dict[str, Any] = {m.name.meaning: m.value for m in g.get_measurements()}
        values.update({q.name.meaning: q.value.meaning
                       for q in g.get_qualitative_evaluations()})
        values["finding"] = (g.finding_type.value, g.finding_type.scheme_designator)
        values["sources"] = [s.referenced_sop_instance_uid for s in g.source_images]
        texts = [(item.ConceptNameCodeSequence[0].CodeMeaning, item.TextValue)
                 for item in g[0].ContentSequence if item.ValueType == "TEXT"]
        values["algorithm"] = {k: v for k, v in texts if k.startswith("Algorithm Name")
                               or k.startswith("Algorithm Version")}
        values["parameters"] = [v for k, v in texts if k == "Algorithm Parameters"]
        values["texts"] = [v for k, v in texts if k == "Qualitative Evaluations"]
        out.append(values)
    return {"groups": out}
