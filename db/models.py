"""The schema: images, batches, predictions, model versions, evaluation reports, nightly runs,
exports.

Words: an *image* is one screened file (class ``Image``); a *study* is a DICOM Study Instance UID
(one or more images). The tables and columns keep their first names (``studies``,
``study_files``, ``study_id``): the Python attributes are mapped onto them, so no migration
renames anything.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def model_label(name: str, version: str, trained: bool) -> str:
    """How a model version is named everywhere: ``name:version``, marked when untrained."""
    return f"{name}:{version}" + ("" if trained else " (untrained)")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware timestamp on every backend.

    SQLite keeps no offset and hands back naive values; they were written in UTC, so they are
    returned as UTC here instead of every reader repairing them.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, dt.datetime: UTCDateTime()}


class ImageStatus(str, enum.Enum):
    """Where one image is on its way: queued → processing → one final state."""

    queued = "queued"
    processing = "processing"
    done = "done"
    rejected = "rejected"
    failed = "failed"

    @classmethod
    def final(cls) -> tuple[ImageStatus, ...]:
        return (cls.done, cls.rejected, cls.failed)


class Batch(Base):
    """One submit, nightly or rescreen run: the unit an operator follows with ``screen status``."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="submit")  # submit|nightly|rescreen
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    n_files: Mapped[int] = mapped_column(Integer, default=0)
    n_new: Mapped[int] = mapped_column(Integer, default=0)
    n_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    n_not_images: Mapped[int] = mapped_column("n_skipped", Integer, default=0)
    n_tasks: Mapped[int] = mapped_column(Integer, default=0)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))

    images: Mapped[list[Image]] = relationship(back_populates="batch",
                                               foreign_keys="Image.batch_id")


class Image(Base):
    """One image file: registered once by content hash (and SOP Instance UID when DICOM).

    The table keeps its first name, ``studies`` (and other tables' ``study_id`` columns point at
    it): a study, in this code, is a Study Instance UID, one or more images (``db/studies.py``).
    """

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    source_path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))  # dicom|png|jpeg
    status: Mapped[ImageStatus] = mapped_column(
        Enum(ImageStatus, native_enum=False, length=16, validate_strings=True),
        default=ImageStatus.queued,
        index=True,
    )
    reason: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    # A re-screen batch that has not reached this image yet: `screen resume` sends it there.
    rescreen_batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # While processing: which task holds the image, and since when (the lease starts there).
    claim_token: Mapped[str | None] = mapped_column(String(64))
    # host:pid:start-ticks of the process holding the claim: one on this host that is gone (or
    # was interrupted) frees its images at once, not after the lease (db/claims.py).
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    finished_at: Mapped[dt.datetime | None]

    # DICOM metadata (never the patient's name or id in the clear: patient_key is a keyed hash).
    patient_key: Mapped[str | None] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(8))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    view_position: Mapped[str | None] = mapped_column(String(16))
    patient_age: Mapped[str | None] = mapped_column(String(8))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    manufacturer: Mapped[str | None] = mapped_column(String(128))
    photometric_interpretation: Mapped[str | None] = mapped_column(String(32))
    transfer_syntax: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    batch: Mapped[Batch | None] = relationship(back_populates="images",
                                               foreign_keys=[batch_id])
    predictions: Mapped[list[Prediction]] = relationship(back_populates="image")


class FileRole(str, enum.Enum):
    primary = "primary"  # the copy the image is screened from
    twin = "twin"  # another copy with the same SOP Instance UID (a retransmission)
    set_aside = "set_aside"  # a conflicting copy a person resolved against (screen conflicts)


class ImageFile(Base):
    """Every distinct file received for an image (by content hash): which copies were twins,
    which one the image was screened from, and why another was set aside. Table
    ``study_files``, column ``study_id`` (their first names)."""

    __tablename__ = "study_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column("study_id", ForeignKey("studies.id", ondelete="CASCADE"),
                                          index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    role: Mapped[FileRole] = mapped_column(
        Enum(FileRole, native_enum=False, length=16, validate_strings=True),
        default=FileRole.primary)
    reason: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())


class ModelVersion(Base):
    """A model file the tool has used, identified by its content hash."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    file_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    input_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    threshold: Mapped[float] = mapped_column(Float)
    target_recall: Mapped[float | None] = mapped_column(Float)
    trained: Mapped[bool] = mapped_column(Boolean, default=False)
    sidecar: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())

    @property
    def label(self) -> str:
        return model_label(self.name, self.version, self.trained)


class Prediction(Base):
    """One model's verdict on one image; the database forbids a second one for the same pair.
    ``image_id`` is the column ``study_id`` (its first name)."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("study_id", "model_version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column("study_id", ForeignKey("studies.id", ondelete="CASCADE"),
                                          index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    probability: Mapped[float] = mapped_column(Float)
    # Probability that a pneumonia is viral rather than bacterial: a suggestion for the reader,
    # null for a model without the subtype output.
    p_viral: Mapped[float | None] = mapped_column(Float)
    # The intended-use guard: False when the film lies outside what the model was validated on
    # (the reason says why); the probability is kept, the image needs a human read.
    in_scope: Mapped[bool | None] = mapped_column(Boolean)
    scope_reason: Mapped[str | None] = mapped_column(Text)
    atypicality: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )

    image: Mapped[Image] = relationship(back_populates="predictions")
    model_version: Mapped[ModelVersion] = relationship()


class Heatmap(Base):
    """The Grad-CAM map of one prediction: a small float16 grid (the last conv block's)."""

    __tablename__ = "heatmaps"

    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class EvaluationReport(Base):
    """Metrics of one model version on one labelled dataset, with the rendered report's path."""

    __tablename__ = "evaluation_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    dataset: Mapped[str] = mapped_column(Text)
    n: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    report_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())

    model_version: Mapped[ModelVersion] = relationship()


class Run(Base):
    """Summary of one nightly run over the inbox folders."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="nightly")
    inboxes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    n_new: Mapped[int] = mapped_column(Integer, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_flagged: Mapped[int] = mapped_column(Integer, default=0)
    n_rejected: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|finished|error
    error: Mapped[str | None] = mapped_column(Text)


class ExportStatus(str, enum.Enum):
    pending = "pending"  # not sent yet, or a transient failure that is being retried
    sent = "sent"
    failed = "failed"  # a permanent failure, or the retries ran out
    # A newer result of the study (a late image, another model) replaced it before it was sent.
    superseded = "superseded"
    # Two different images under one SOP Instance UID: nothing is sent until a person resolves it.
    held = "held"


class Export(Base):
    """One version of a study's DICOM result (an SR, and heatmap SCs) for one destination: the
    outbox row. Delivered when ``next_attempt_at`` is due by whoever claims it (``lease_token``
    until ``lease_until``); a resend updates the row and sends the same instances. A later
    version of the study's result (a late image) is a new row whose SR names its predecessor."""

    __tablename__ = "exports"
    __table_args__ = (
        UniqueConstraint("study_instance_uid", "destination", "sr_sop_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    # The destination as configured, with any password masked (never a secret in the database).
    destination: Mapped[str] = mapped_column(String(512))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    status: Mapped[ExportStatus] = mapped_column(
        Enum(ExportStatus, native_enum=False, length=16, validate_strings=True),
        default=ExportStatus.pending, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # What went wrong, in words about the destination only (no patient data).
    last_error: Mapped[str | None] = mapped_column(Text)
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sc_sop_instance_uids: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now())
    sent_at: Mapped[dt.datetime | None]
    # The outbox: when to try next (None: nothing to do), and who holds the row meanwhile.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[dt.datetime | None]
    # The chain of versions: this SR's series and Instance Number, the SR it supersedes.
    sr_series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    predecessor_sr_uid: Mapped[str | None] = mapped_column(String(64))
    predecessor_series_uid: Mapped[str | None] = mapped_column(String(64))

    model_version: Mapped[ModelVersion] = relationship()


class ReceivedInstance(Base):
    """One instance file received over DICOM (``screen listen``) and registered from the spool.

    The spool file stays where it is: it is the image's ``source_path``. Files in the spool with
    no row here are not registered yet (the receipt itself never needs the database).
    """

    __tablename__ = "received_instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)  # of the spool file
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    spool_path: Mapped[str] = mapped_column(Text)
    calling_aet: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[dt.datetime]
    registered_at: Mapped[dt.datetime]
    # Null while its study still waits for the broker (sent again by the listener's loop).
    enqueued_at: Mapped[dt.datetime | None]
    image_id: Mapped[int | None] = mapped_column(  # column study_id (its first name)
        "study_id", ForeignKey("studies.id", ondelete="SET NULL"), index=True)


class KeyFingerprint(Base):
    """The pseudonym key's fingerprint (an HMAC of a fixed label, never the key), recorded when
    the database is first written: every later writer must hold the same key."""

    __tablename__ = "key_fingerprints"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1: one key per database
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())


class AuditEvent(Base):
    """One operator action (append-only: triggers refuse UPDATE and DELETE). Parameters carry
    ids, counts, folder and model paths, never patient data."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now(),
                                                    index=True)
    os_user: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # HMAC of the previous event's chain_hash and this event's content (db/audit.py): a changed,
    # replaced or removed event breaks the chain from there on. NULL: written before the chain.
    chain_hash: Mapped[str | None] = mapped_column(String(64))


class UserRole(str, enum.Enum):
    reader = "reader"  # reads the list, marks images
    admin = "admin"  # a reader who also sees the monitoring page


class User(Base):
    """A person who signs in to ``screen web``: a name, a role and a password hash (argon2);
    disabled rather than deleted, so that their reads keep a name."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[UserRole] = mapped_column(
        Enum(UserRole, native_enum=False, length=16, validate_strings=True),
        default=UserRole.reader)
    password_hash: Mapped[str | None] = mapped_column(String(255))  # None: single sign-on only
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    last_login_at: Mapped[dt.datetime | None]


class ReadVerdict(str, enum.Enum):
    agree = "agree"
    disagree = "disagree"


class Read(Base):
    """One reader's verdict on one image's screening result (the prediction they saw), with an
    optional final label; every read is kept (a second read by the same person is a new row)."""

    __tablename__ = "reads"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"),
                                          index=True)
    prediction_id: Mapped[int | None] = mapped_column(
        ForeignKey("predictions.id", ondelete="SET NULL"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    verdict: Mapped[ReadVerdict] = mapped_column(
        Enum(ReadVerdict, native_enum=False, length=16, validate_strings=True))
    # The reader's final label: pneumonia | normal | other (another finding); and for a
    # pneumonia, viral | bacterial. Null when the reader gave none.
    label: Mapped[str | None] = mapped_column(String(16))
    subtype: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now(),
                                                    index=True)

    user: Mapped[User] = relationship()
