"""The study's result as a DICOM Comprehensive 3D SR following TID 1500 (highdicom).

One measurement group (TID 1501) per screened image, referencing it: the finding "pneumonia"
(SNOMED CT 233604007) with the model's probability and threshold, the triage flag, the suggested
subtype (flagged images), the intended-use verdict, and the algorithm (name, version, model
sha256). Concepts without a standard code use the private scheme ``99PNEUMOSCREEN``.

A flag only raises a study's reading priority: an image that is not flagged says "not flagged,
reading priority unchanged", never "no pneumonia".
"""

from __future__ import annotations

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pneumoscreen.worker.export.result import ImageResult, StudyResult, result_uid, stamp

SCHEME = "99PNEUMOSCREEN"
PNEUMONIA = Code("233604007", "SCT", "Pneumonia")
VIRAL = Code("75570004", "SCT", "Viral pneumonia")
BACTERIAL = Code("53084003", "SCT", "Bacterial pneumonia")
CHEST_XRAY = Code("399208008", "SCT", "Plain chest X-ray")
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
PROBABILITY = Code("P-PNEUMONIA", SCHEME, "Probability of pneumonia")
THRESHOLD = Code("THRESHOLD", SCHEME, "Flag threshold")
P_VIRAL = Code("P-VIRAL", SCHEME, "Probability viral rather than bacterial")
ATYPICALITY = Code("ATYPICALITY", SCHEME, "Atypicality score")
FLAG = Code("FLAG", SCHEME, "Triage flag")
FLAGGED = Code("FLAGGED", SCHEME, "Flagged: read first")
NOT_FLAGGED = Code("NOT-FLAGGED", SCHEME, "Not flagged: reading priority unchanged")
SUBTYPE = Code("SUBTYPE", SCHEME, "Suggested subtype (not a diagnosis)")
IN_SCOPE = Code("IN-SCOPE", SCHEME, "Within the validated scope")
# TID 1501's free-text qualitative evaluation.
EVALUATION_TEXT = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
NO_UNITS = Code("1", "UCUM", "no units")
SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "pneumoscreen AI triage result (not a diagnosis)"
MANUFACTURER = "pneumoscreen"


def sr_uids(result: StudyResult) -> tuple[str, str]:
    """(series, instance) UIDs: the same study, model and images give the same SR."""
    images = sorted(i.sop_instance_uid or str(i.image_id) for i in result.images)
    base = (result.study_uid, result.model.sha256)
    return result_uid(*base, "sr-series"), result_uid(*base, "sr", *images)


def build_sr(result: StudyResult, sources: dict[int, Dataset]) -> hd.sr.Comprehensive3DSR:
    """The SR for ``result``; ``sources`` maps each image's id to its source header."""
    series_uid, sop_uid = sr_uids(result)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=result_uid("device", result.model.sha256), name="pneumoscreen",
            manufacturer_name=MANUFACTURER,
            model_name=f"{result.model.name} {result.model.version}"[:64]))
    groups = [_group(result, image, sources[image.image_id], n)
              for n, image in enumerate(result.images, start=1)]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=CHEST_XRAY, imaging_measurements=groups)
    evidence = [sources[i.image_id] for i in result.images]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=series_uid,
        series_number=SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION)
    stamp(sr, result)
    return sr


def _group(result: StudyResult, image: ImageResult, source: Dataset,
           n: int) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    model = result.model
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version,
        parameters=[f"model sha256 {model.sha256}", f"threshold {image.threshold:.4f}"])
    measurements = [
        hd.sr.Measurement(PROBABILITY, round(image.probability, 4), NO_UNITS,
                          algorithm_id=algorithm),
        hd.sr.Measurement(THRESHOLD, round(image.threshold, 4), NO_UNITS,
                          algorithm_id=algorithm)]
    evaluations = [hd.sr.QualitativeEvaluation(FLAG, FLAGGED if image.flagged else NOT_FLAGGED)]
    if image.flagged and image.p_viral is not None:
        # The subtype is a suggestion about a pneumonia: only for flagged images.
        measurements.append(hd.sr.Measurement(P_VIRAL, round(image.p_viral, 4), NO_UNITS,
                                              algorithm_id=algorithm))
        evaluations.append(hd.sr.QualitativeEvaluation(
            SUBTYPE, VIRAL if image.p_viral >= 0.5 else BACTERIAL))
    if image.atypicality is not None:
        measurements.append(hd.sr.Measurement(ATYPICALITY, round(image.atypicality, 4),
                                              NO_UNITS, algorithm_id=algorithm))
    if image.in_scope is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(IN_SCOPE, YES if image.in_scope else NO))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid(result.study_uid, model.sha256, "group", str(n)),
            identifier=f"pneumonia screen, image {n}"),
        finding_type=PNEUMONIA, algorithm_id=algorithm, measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    if image.scope_reason:
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=EVALUATION_TEXT, value=f"outside the validated scope: {image.scope_reason}"[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group
