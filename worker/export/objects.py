"""The DICOM objects of one export: the study's SR (this version's Instance Number, naming its
predecessor) and a heatmap Secondary Capture per stored map, with their character set declared."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom import Dataset
from pydicom.multival import MultiValue

from pneumoscreen.worker.export.heatmap_sc import build_heatmap_sc, overlay_pixels
from pneumoscreen.worker.export.result import StudyResult
from pneumoscreen.worker.export.sources import read_source
from pneumoscreen.worker.export.sr import build_sr
from pneumoscreen.worker.ingest.api import default_max_file_bytes
from pneumoscreen.worker.logs import quiet_libraries
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)
# An export may run in any process (a worker, `screen listen`, `screen export`): highdicom's
# warnings quote header values, so the libraries are quietened wherever this module is loaded.
quiet_libraries()


def build_objects(result: StudyResult, settings: Settings, *, instance_number: int = 1,
                  predecessor: tuple[str, str] | None = None) -> list[Dataset]:
    """The SR (this version's Instance Number, naming its predecessor), then one Secondary
    Capture per stored heatmap (a map whose image cannot be drawn again is left out, the SR is
    still sent)."""
    limit = settings.max_file_bytes or default_max_file_bytes(settings.max_pixels)
    sources = {i.image_id: read_source(i.path, study_uid=result.study_uid,
                                       sop_uid=i.sop_instance_uid, max_file_bytes=limit)
               for i in result.images}
    objects: list[Dataset] = [build_sr(result, sources, instance_number=instance_number,
                                        predecessor=predecessor)]
    size = result.model.input_size
    # No heatmap of an image outside the validated scope: it has no finding to explain.
    mapped = [i for i in result.images if i.heatmap is not None and i.in_scope is not False]
    if size and mapped:
        config = settings.ingest_config(input_size=int(size))
        for n, image in enumerate(mapped, 1):
            try:
                pixels = overlay_pixels(image, int(size), config)
            except Exception as exc:  # the SR matters more than the picture
                log.warning("study %s: heatmap of image %s not exported (%s)",
                            result.study_uid, image.image_id, type(exc).__name__)
                continue
            objects.append(build_heatmap_sc(result, image, sources[image.image_id], pixels, n))
    for ds in objects:
        declare_character_set(ds)
    return objects


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
             "UI", "UR", "UT"}


def declare_character_set(ds: Dataset) -> None:
    """Specific Character Set as written: UTF-8 (ISO_IR 192) when any text is not ASCII (a
    source with accented names and no character set of its own), else none (the default)."""

    def texts(d: Dataset) -> Iterator[str]:
        for element in d:
            if element.VR == "SQ":
                for item in element.value:
                    yield from texts(item)
            elif element.VR in _TEXT_VRS and element.value is not None:
                value = element.value
                for one in (value if isinstance(value, MultiValue | list | tuple) else [value]):
                    yield str(one)

    if any(not t.isascii() for t in texts(ds)):
        ds.SpecificCharacterSet = "ISO_IR 192"
    elif "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
