"""A stored Grad-CAM map as a DICOM Secondary Capture in the source's study: the map over the
image as the network saw it, labelled "AI heatmap, not for diagnosis" in the pixels and in the
header."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pneumoscreen.worker.export.result import ImageResult, StudyResult, result_uid, stamp
from pneumoscreen.worker.ingest import IngestConfig

LABEL = "AI heatmap, not for diagnosis"
SERIES_NUMBER = 9902
SIZE = 512


def sc_uids(result: StudyResult, image: ImageResult) -> tuple[str, str]:
    """(series, instance) UIDs: the same study, model and image give the same SC."""
    base = (result.study_uid, result.model.sha256)
    source = image.sop_instance_uid or str(image.image_id)
    return result_uid(*base, "heatmap-series"), result_uid(*base, "heatmap-sc", source)


def overlay_pixels(image: ImageResult, input_size: int, config: IngestConfig) -> np.ndarray:
    """The RGB overlay: the map over the network's input, at display size, label burned in."""
    from pneumoscreen.model.gradcam import from_bytes, overlay
    from pneumoscreen.model.preprocess import preprocess
    from pneumoscreen.worker.ingest import load_grey

    assert image.heatmap is not None
    h, w, data = image.heatmap
    grey = load_grey(Path(image.path), config).grey
    return overlay(preprocess(grey, input_size), from_bytes(data, h, w), size=SIZE, label=LABEL)


def build_heatmap_sc(result: StudyResult, image: ImageResult, source: Dataset,
                     pixels: np.ndarray, instance_number: int = 1) -> hd.sc.SCImage:
    """The Secondary Capture of one image's overlay; patient and study copied from ``source``."""
    series_uid, sop_uid = sc_uids(result, image)
    orientation = source.get("PatientOrientation")
    # The overlay keeps the source's orientation (resized, never flipped).
    orientation = tuple(orientation) if orientation is not None and len(orientation) == 2 else (
        "L", "F")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=np.ascontiguousarray(pixels, np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        patient_orientation=orientation, series_instance_uid=series_uid,
        series_number=SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=instance_number,
        manufacturer="pneumoscreen", transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=f"{LABEL} (pneumoscreen)")
    sc.ImageComments = (f"{LABEL}. Grad-CAM of {result.model.name} {result.model.version}, "
                        f"probability {image.probability:.4f}, threshold {image.threshold:.4f}")
    sc.BurnedInAnnotation = "YES"
    sc.DerivationDescription = "Grad-CAM map over the network input (resized)"
    if image.sop_instance_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.sop_instance_uid
        sc.SourceImageSequence = [ref]
    stamp(sc, result)
    return sc
