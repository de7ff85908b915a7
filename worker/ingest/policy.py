"""What gets screened: acceptance rules as data, checked on the header only.

The defaults here are the tool's defaults; ``Settings`` reads its own from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pneumoscreen.worker.ingest.errors import RejectedImage
from pneumoscreen.worker.ingest.metadata import text
from pneumoscreen.worker.ingest.vr import quoted, vr_of

# SOP classes that hold no radiograph, by their PS3.6 names: reports, presentation states, RT
# objects, waveforms, key-object selections, registrations, segmentations, encapsulated documents.
NON_IMAGE_SOP_CLASS = re.compile(
    r"SR Storage|Presentation State|Key Object|Waveform|Encapsulated|^RT (?!Image)|Registration|"
    r"Segmentation|Raw Data|Directory|Measurement|Surface|Tractography|Spectroscopy|Dose SR",
    re.IGNORECASE,
)
LATERAL_VIEW = re.compile(r"\blateral\b", re.IGNORECASE)


def _listed(values: list[str]) -> str:
    return ", ".join(v for v in values if v) or "(none)"


def _norm(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(str(v).strip().upper() for v in values)


@dataclass(frozen=True)
class AcceptancePolicy:
    """The rules. Values are compared upper-cased and stripped (:meth:`of` normalises them)."""

    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = ("CHEST", "THORAX", "LUNG", "TORSO", "")
    reject_views: tuple[str, ...] = ("LL", "RL", "LATERAL", "LAT", "RLD", "LLD")
    reject_intents: tuple[str, ...] = ("FOR PROCESSING",)
    non_image_modalities: tuple[str, ...] = (
        "SR", "PR", "KO", "DOC", "REG", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD",
        "ECG", "HD", "AU", "PLAN", "FID", "RWV",
    )

    @classmethod
    def of(cls, *, modalities: list[str], body_parts: list[str], reject_views: list[str],
           reject_intents: list[str], non_image_modalities: list[str]) -> AcceptancePolicy:
        return cls(_norm(modalities), _norm(body_parts), _norm(reject_views),
                   _norm(reject_intents), _norm(non_image_modalities))

    def check_object(self, ds: Dataset) -> None:
        """Reject non-image objects (SR, presentation states, RT…) before anything else."""
        sop_class = text(ds, "SOPClassUID")
        if not sop_class and getattr(ds, "file_meta", None):
            sop_class = text(ds.file_meta, "MediaStorageSOPClassUID")  # e.g. DICOMDIR
        if sop_class:
            name = UID(sop_class).name
            if NON_IMAGE_SOP_CLASS.search(name):
                raise RejectedImage(
                    f"SOP Class UID {quoted(sop_class, 'UI')} ({name}) is not an image: "
                    "non-image objects are not screened"
                )
        modality = (text(ds, "Modality") or "").upper()
        if modality in self.non_image_modalities and modality:
            raise RejectedImage(
                f"Modality {modality} is a non-image object "
                f"(accepted: {_listed(list(self.modalities))})"
            )

    def check_study(self, ds: Dataset) -> None:
        """Reject images that are not a frontal chest CR/DX radiograph."""
        modality = (text(ds, "Modality") or "").upper()
        if modality not in self.modalities:
            raise RejectedImage(
                f"Modality {_shown(ds, 'Modality')} is not screened "
                f"(accepted: {_listed(list(self.modalities))})"
            )
        part = (text(ds, "BodyPartExamined") or "").upper()
        if part not in self.body_parts:
            blank = " or blank" if "" in self.body_parts else ""
            raise RejectedImage(
                f"Body Part Examined {_shown(ds, 'BodyPartExamined')} is not screened "
                f"(accepted: {_listed(list(self.body_parts))}{blank})"
            )
        view = (text(ds, "ViewPosition") or "").upper()
        if view and view in self.reject_views:
            raise RejectedImage(
                f"View Position {_shown(ds, 'ViewPosition')} is not screened "
                f"(lateral views are rejected: {_listed(list(self.reject_views))})"
            )
        for item in _view_codes(ds):
            meaning = text(item, "CodeMeaning", 128) or ""
            if LATERAL_VIEW.search(meaning):
                raise RejectedImage(
                    "View Code Sequence (0054,0220) names a lateral view: "
                    "lateral views are not screened"
                )
        intent = (text(ds, "PresentationIntentType") or "").upper()
        if intent and intent in self.reject_intents:
            raise RejectedImage(
                f"Presentation Intent Type {_shown(ds, 'PresentationIntentType')} is not screened "
                "(only images FOR PRESENTATION are)"
            )
        frames = text(ds, "NumberOfFrames")
        try:
            n_frames = int(float(frames)) if frames else 1
        except ValueError:
            n_frames = 1  # validated with the pixel attributes; unparseable means "not given"
        if n_frames > 1:
            raise RejectedImage(
                f"Number of Frames {n_frames}: multi-frame objects are not screened"
            )


def _shown(ds: Dataset, keyword: str) -> str:
    """A tag's value as a reason may quote it: valid for its VR, else 'an invalid value'."""
    return quoted(text(ds, keyword, 1024), vr_of(keyword))


def _view_codes(ds: Dataset) -> list[Dataset]:
    """The View Code Sequence's items; a malformed sequence rejects: the lateral-view check
    must not pass a film it could not read (fail closed)."""
    try:
        seq = ds.get("ViewCodeSequence")
        items = list(seq) if seq else []
        for item in items:
            if not isinstance(item, Dataset):
                raise TypeError(f"item of type {type(item).__name__}")
            item.get("CodeMeaning")
        return items
    except Exception as exc:
        raise RejectedImage(
            "View Code Sequence (0054,0220) is malformed, so the view cannot be checked: "
            f"not screened ({type(exc).__name__})") from exc
