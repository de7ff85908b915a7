"""What is sent for one study: its screened images' verdicts and the model that gave them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid

# pydicom's UID root for generated UIDs; the entropy makes them deterministic.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class ModelInfo:
    version_id: int
    name: str
    version: str
    sha256: str
    input_size: int | None


@dataclass(frozen=True)
class ImageResult:
    """One screened image: where its file is and what the model said."""

    image_id: int
    path: str
    sop_instance_uid: str | None
    probability: float
    threshold: float
    flagged: bool
    p_viral: float | None
    in_scope: bool | None
    scope_reason: str | None
    atypicality: float | None
    screened_at: dt.datetime
    heatmap: tuple[int, int, bytes] | None


@dataclass(frozen=True)
class StudyResult:
    study_uid: str
    model: ModelInfo
    images: tuple[ImageResult, ...]

    @classmethod
    def from_rows(cls, study_uid: str, rows: list[dict[str, Any]]) -> StudyResult:
        """From :func:`pneumoscreen.db.studies.screened_images` rows (not empty)."""
        first = rows[0]
        model = ModelInfo(first["model_version_id"], first["model_name"],
                          first["model_version"], first["model_sha256"], first["input_size"])
        images = tuple(ImageResult(
            r["study_id"], r["path"], r["sop_instance_uid"], float(r["probability"]),
            float(r["threshold"]), bool(r["flagged"]), r["p_viral"], r["in_scope"],
            r["scope_reason"], r["atypicality"], r["screened_at"], r["heatmap"]) for r in rows)
        return cls(study_uid, model, images)

    @property
    def screened_at(self) -> dt.datetime:
        return max(i.screened_at for i in self.images)


def result_uid(*parts: str) -> str:
    """The same UID for the same parts, every time: a resend is the same instance."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["pneumoscreen", *parts])


def stamp(ds: Any, result: StudyResult) -> None:
    """Content and creation times from the screening, not the export: a resend is identical."""
    at = result.screened_at
    ds.ContentDate = ds.InstanceCreationDate = at.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = at.strftime("%H%M%S")
