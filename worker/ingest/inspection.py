"""What the ingester sees in one file (``screen inspect``): tags, decision, pixel steps, image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.worker.ingest import vr
from pneumoscreen.worker.ingest.api import IngestConfig, check_file, load_grey, read_limits
from pneumoscreen.worker.ingest.dicom_header import USED_KEYWORDS, read_dataset
from pneumoscreen.worker.ingest.errors import IngestError
from pneumoscreen.worker.ingest.metadata import accession_key, text, transfer_syntax
from pneumoscreen.worker.ingest.sniff import format_of

# Never shown, even to the operator at the console: pseudonymisation is the point.
_HIDDEN = frozenset({"PatientID", "PatientName", "PatientBirthDate"})


@dataclass
class Inspection:
    """The outcome ``screen`` would store for a file, and how it got there."""

    path: str
    format: str | None
    decision: str  # done | rejected | failed
    reason: str | None
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    grey: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "grey"}
        if self.grey is not None:
            g = self.grey
            out["image"] = {"shape": list(g.shape), "min": round(float(g.min()), 4),
                            "max": round(float(g.max()), 4), "mean": round(float(g.mean()), 4)}
        return out


def used_tags(path: Path, config: IngestConfig) -> dict[str, str]:
    """The header values ingestion reads (patient identity excluded), as display strings.

    Read under the same bounds as ingestion itself (a small deflated file must not inflate
    without bound here either). A value is shown only if it is valid for its VR, and the
    Accession Number only as its keyed hash, as stored.
    """
    try:
        ds = read_dataset(path, pixels=False, **read_limits(config))
    except IngestError:
        return {}
    tags: dict[str, str] = {}
    ts = transfer_syntax(ds)
    if ts:
        tags["TransferSyntaxUID"] = f"{vr.quoted(str(ts), 'UI')} ({vr.quoted(ts.name, 'LO')})"
    for kw in USED_KEYWORDS:
        if kw in _HIDDEN or kw not in ds:
            continue
        value = ds.get(kw)
        if kw.endswith("Sequence"):
            tags[kw] = f"{len(value or [])} item(s)"
        elif kw == "AccessionNumber":
            hashed = accession_key(ds, config.patient_key) if config.patient_key else None
            tags[kw] = f"(keyed hash) {hashed[:12]}" if hashed else "(not shown)"
        else:
            tags[kw] = vr.quoted(text(ds, kw, 1024), vr.vr_of(kw))
    return tags


def inspect_file(path: Path, config: IngestConfig | None = None, *,
                 reduced: bool | None = None) -> Inspection:
    """Run the real ``load_grey`` on ``path`` and collect everything worth showing."""
    config = config or IngestConfig()
    path = Path(path)
    try:
        fmt = check_file(path, config)
    except IngestError as exc:  # a FIFO, a device, a file beyond the size limit: not opened
        return Inspection(str(path), format_of(b"", 0, path.suffix), exc.status, str(exc))
    tags = used_tags(path, config) if fmt == "dicom" else {}
    try:
        decoded = load_grey(path, config, reduced=reduced)
    except IngestError as exc:
        return Inspection(str(path), fmt, exc.status, str(exc), tags, exc.metadata)
    return Inspection(str(path), decoded.format, "done", None, tags, decoded.metadata,
                      decoded.steps, decoded.grey)
