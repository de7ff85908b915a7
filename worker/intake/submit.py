"""Register the images of a folder once each, as one batch, and enqueue them in tasks.

The folder is streamed: files are walked lazily, hashed and probed one at a time, and registered
in commits of ``FILES_PER_COMMIT`` files (one transaction each), so a folder of any size runs in
constant memory and shows progress at once. Enqueueing happens after registration; a broker that
is down leaves queued images behind (the sweep or ``screen resume`` sends them), never a
half-written image.

Twins: a file with the SOP Instance UID of a registered image but other content (a retransmission,
a copy damaged in transfer) is recorded in ``study_files`` as a twin of that image. It replaces an
image that failed on its copy (the image is queued again); an image still waiting keeps it as a
spare, which screening falls back on when the primary copy cannot be decoded.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from pneumoscreen.db import Batch, FileRole, Image, ImageFile, ImageStatus
from pneumoscreen.db.image_files import demote_primary_file
from pneumoscreen.db.images import image_with_sop_uid, known_sha256s, statuses
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.queries import screened_outside_scope_for_image, withdraw_predictions
from pneumoscreen.model.progress import Progress, Silent
from pneumoscreen.worker.audit import audit
from pneumoscreen.worker.ingest import IngestConfig, IngestError, check_file, probe
from pneumoscreen.worker.ingest.files import file_sha256
from pneumoscreen.worker.intake.discovery import Walk
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.keys import checked_key
from pneumoscreen.worker.settings import Settings
from pneumoscreen.worker.status import status_of

log = logging.getLogger(__name__)

# Files registered per transaction: big enough to amortise the commit, small enough that memory
# and the work lost to a crash stay small.
FILES_PER_COMMIT = 256


@dataclass
class SubmitResult(Enqueued):
    """What one submit did. ``n_new`` counts new images only; a failed image given a readable
    copy counts in ``n_replaced`` (its id is in ``queued_ids`` too)."""

    n_files: int = 0
    n_new: int = 0
    n_duplicate: int = 0
    n_not_images: int = 0
    n_to_screen: int = 0  # of the new images
    n_rejected: int = 0
    n_failed: int = 0
    n_replaced: int = 0
    n_twins: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class Candidate:
    path: Path
    format: str
    sha256: str
    sop_instance_uid: str | None = None
    status: ImageStatus = ImageStatus.queued
    reason: str | None = None
    metadata: dict = field(default_factory=dict)


def examine(path: Path, config: IngestConfig) -> Candidate | None:
    """Hash and probe one file: None if it is not an image at all.

    ``check_file`` looks first (132 bytes): a file that is not regular or exceeds the size
    limit is recorded as failed, keyed by its path, without being hashed or parsed; so is a
    file whose name no database can hold (bytes that are no UTF-8).
    """
    if stored_path(path) != str(path.resolve()):
        return Candidate(path, "unknown", _path_hash(path), status=ImageStatus.failed,
                         reason="the file name is not valid UTF-8: rename the file to screen it")
    try:
        fmt = check_file(path, config)
    except IngestError as exc:
        return Candidate(path, "unknown", _path_hash(path), status=status_of(exc),
                         reason=str(exc))
    if fmt is None:
        return None
    try:
        sha = file_sha256(path)
    except OSError as exc:
        return Candidate(path, fmt, _path_hash(path), status=ImageStatus.failed,
                         reason=f"cannot read file: {exc.strerror or 'I/O error'}")
    try:
        found = probe(path, config, fmt=fmt)
    except IngestError as exc:  # kept, with whatever the header told us, never dropped
        return Candidate(path, fmt, sha, exc.sop_instance_uid, status=status_of(exc),
                         reason=str(exc), metadata=exc.metadata)
    return Candidate(path, found.format, sha, found.sop_instance_uid, metadata=found.metadata)


def _path_hash(path: Path) -> str:
    # An unreadable file has no content hash; key it by path so it is still recorded once.
    import hashlib

    return hashlib.sha256(b"unreadable:" + os.fsencode(path.resolve())).hexdigest()


def stored_path(path: Path) -> str:
    """The absolute path as the database stores it: a name's bytes that are no UTF-8 (which
    Python holds as lone surrogates, and no database column accepts) become U+FFFD."""
    return _SURROGATES.sub("\ufffd", str(path.resolve()))


_SURROGATES = re.compile("[\ud800-\udfff]")


def _apply(image: Image, cand: Candidate, batch_id: int, columns: set[str]) -> None:
    image.sha256, image.sop_instance_uid = cand.sha256, cand.sop_instance_uid
    image.source_path, image.format = stored_path(cand.path), cand.format
    image.status, image.reason, image.batch_id = cand.status, cand.reason, batch_id
    image.finished_at = utcnow() if cand.status in ImageStatus.final() else None
    for key, value in cand.metadata.items():
        if key in columns:
            setattr(image, key, value)


@dataclass
class Registered:
    """Running totals of a registration, kept across its commits."""

    new: set[int] = field(default_factory=set)
    replaced: set[int] = field(default_factory=set)
    duplicates: int = 0
    twins: int = 0


def _file(image_id: int, cand: Candidate, batch_id: int, role: FileRole,
          reason: str | None = None) -> ImageFile:
    return ImageFile(image_id=image_id, sha256=cand.sha256, path=stored_path(cand.path),
                     role=role, reason=reason, batch_id=batch_id)


def _twin_reason(image: Image, cand: Candidate) -> str:
    if cand.status == ImageStatus.failed:
        return f"twin of study {image.id}, unreadable: {cand.reason}"
    if image.status in (ImageStatus.queued, ImageStatus.processing):
        return f"twin of study {image.id}: a spare copy if its own cannot be decoded"
    return f"twin of study {image.id}, which was {image.status.value} from another copy"


def _replace_failed(image: Image, cand: Candidate, batch_id: int, *, session: Session,
                    columns: set[str]) -> None:
    """A readable copy takes the place of the copy the image failed on; that one stays a twin."""
    log.info("study %s: a readable copy replaces the failed one", image.id)
    demote_primary_file(image.id, f"the study failed on it: {image.reason}", session=session)
    _apply(image, cand, batch_id, columns)
    image.attempts = 0
    session.add(_file(image.id, cand, batch_id, FileRole.primary))


def register(candidates: Iterable[Candidate], batch_id: int, *, session: Session,
             progress: Progress, totals: Registered | None = None) -> Registered:
    """Register the files not seen before (by content hash) and account for every other one.

    Same content as a file received before: a duplicate. Same SOP Instance UID as an image, other
    content: a twin (see the module's docstring). Otherwise a new image with its primary file.
    The files go in under one savepoint; if a concurrent submit registered one of them meanwhile
    (a unique constraint fires), they go in again one savepoint per file.
    """
    totals = totals or Registered()
    cands = list(candidates)
    try:
        with session.begin_nested():
            part = _register_each(cands, batch_id, session=session, progress=progress,
                                  earlier=totals.new, careful=False)
    except (StatementError, UnicodeError):  # a unique constraint fired, or a value was refused
        part = _register_each(cands, batch_id, session=session, progress=Silent(),
                              earlier=totals.new, careful=True)
    totals.new |= part.new
    totals.replaced |= part.replaced
    totals.duplicates += part.duplicates
    totals.twins += part.twins
    return totals


def _register_each(cands: list[Candidate], batch_id: int, *, session: Session,
                   progress: Progress, earlier: set[int], careful: bool) -> Registered:
    part = Registered()
    known = known_sha256s([c.sha256 for c in cands], session=session)
    columns = set(Image.__table__.columns.keys()) - {"id", "sha256", "sop_instance_uid"}
    for cand in cands:
        progress.advance("register")
        if cand.sha256 in known:
            part.duplicates += 1
            continue
        known.add(cand.sha256)
        if not careful:
            _register_one(cand, batch_id, session=session, part=part, earlier=earlier,
                          columns=columns)
            continue
        try:
            with session.begin_nested():
                _register_one(cand, batch_id, session=session, part=part, earlier=earlier,
                              columns=columns)
        except IntegrityError:
            part.duplicates += 1
        except (StatementError, UnicodeError) as exc:
            # The database refused something this file holds: the file fails alone, its header
            # facts dropped, and the submit goes on (it must not stop at one hostile file).
            log.warning("a file's values were refused by the database (%s): registered as "
                        "failed without its header facts", type(exc).__name__)
            bare = Candidate(cand.path, cand.format, cand.sha256, status=ImageStatus.failed,
                             reason="the database refused a value of this file's header "
                                    f"({type(getattr(exc, 'orig', exc)).__name__}): not screened")
            with session.begin_nested():
                _register_one(bare, batch_id, session=session, part=part, earlier=earlier,
                              columns=columns)
    return part


def _register_one(cand: Candidate, batch_id: int, *, session: Session, part: Registered,
                  earlier: set[int], columns: set[str]) -> None:
    same_uid = None
    if cand.sop_instance_uid:
        same_uid = image_with_sop_uid(cand.sop_instance_uid, session=session)
    if same_uid is None:
        image = Image()
        _apply(image, cand, batch_id, columns)
        session.add(image)
        session.flush()
        session.add(_file(image.id, cand, batch_id, FileRole.primary))
        part.new.add(image.id)
        return
    if cand.format == same_uid.format == "dicom" and same_dataset(cand.path,
                                                                  Path(same_uid.source_path)):
        # The same instance in another wrapping (a file submitted from a folder, received later
        # over DICOM with its own file meta): already registered, not a twin. Its file is kept
        # as a spare copy so a receipt still finds its image.
        part.duplicates += 1
        session.add(_file(same_uid.id, cand, batch_id, FileRole.twin,
                          f"the same instance as study {same_uid.id}, another file wrapping"))
        session.flush()
        return
    part.twins += 1
    outside = (screened_outside_scope_for_image(same_uid.id, session=session)
               if same_uid.status == ImageStatus.done and cand.status == ImageStatus.queued
               else None)
    if same_uid.status == ImageStatus.failed and cand.status != ImageStatus.failed:
        _replace_failed(same_uid, cand, batch_id, session=session, columns=columns)
        if same_uid.id not in earlier and same_uid.id not in part.new:
            part.replaced.add(same_uid.id)
    elif outside is not None:
        # Screened, but the guard found the image itself atypical (a blank, inverted or
        # damaged copy): a readable copy replaces it exactly as it replaces a failed one.
        log.info("study %s: a readable copy replaces one screened outside scope", same_uid.id)
        withdraw_predictions(same_uid.id, session=session)
        demote_primary_file(same_uid.id, f"screened from it ({outside}); replaced by a copy "
                                         "received later", session=session)
        _apply(same_uid, cand, batch_id, columns)
        same_uid.attempts = 0
        session.add(_file(same_uid.id, cand, batch_id, FileRole.primary))
        if same_uid.id not in earlier and same_uid.id not in part.new:
            part.replaced.add(same_uid.id)
    else:
        session.add(_file(same_uid.id, cand, batch_id, FileRole.twin,
                          _twin_reason(same_uid, cand)))
    session.flush()


def _dataset_digest(path: Path) -> str | None:
    """sha256 of a DICOM file's dataset, its file meta (preamble, group 0002) left out; None
    when the file has no standard meta header or cannot be read. The meta's length is its first
    element, (0002,0000) UL, always explicit VR little endian at byte 132."""
    import hashlib
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(144)
            if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != (
                    b"\x02\x00\x00\x00UL"):
                return None
            fh.seek(144 + struct.unpack("<I", head[140:144])[0])
            digest = hashlib.sha256()
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
            return digest.hexdigest()
    except OSError:
        return None


def same_dataset(a: Path, b: Path) -> bool:
    """Two DICOM files carrying byte for byte the same dataset (the meta may differ)."""
    first = _dataset_digest(a)
    return first is not None and first == _dataset_digest(b)


def _commits(walk: Iterable[Path], config: IngestConfig, progress: Progress,
            counts: dict[str, int], threads: int) -> Iterator[list[Candidate]]:
    """The walk's files examined (hashed and probed) by ``threads`` threads, in walk order, in
    lists of ``FILES_PER_COMMIT``: at most one commit's worth of paths is read ahead of the
    registration.
    Hashing and reading release the GIL, so two threads overlap them with the header parse."""
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    paths = iter(walk)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="examine") as pool:
        while group := list(islice(paths, FILES_PER_COMMIT)):
            part: list[Candidate] = []
            for cand in pool.map(lambda p: examine(p, config), group):
                counts["files"] += 1
                progress.advance("scan")
                if cand is None:
                    counts["not_images"] += 1
                else:
                    part.append(cand)
            if part:
                yield part


def submit_folder(folder: Path, *, settings: Settings, recursive: bool = True,
                  task_size: int | None = None, progress: Progress | None = None,
                  kind: str = "submit") -> SubmitResult:
    """Register every new image under ``folder`` as one batch and enqueue the screenable ones.

    The model is checked first (``ModelFileError``: nothing registered).
    """
    progress = progress or Silent()
    checked_key(settings)  # one key per database: refused before anything is registered
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        raise FileNotFoundError(f"{folder} does not exist")
    from pneumoscreen.model.bundle import check_model_file

    check_model_file(settings.model_path)
    result = register_folder(folder, settings=settings, recursive=recursive, progress=progress,
                             kind=kind)
    enqueue(result, settings=settings, task_size=task_size, progress=progress)
    return result


def register_folder(folder: Path, *, settings: Settings, recursive: bool = True,
                    progress: Progress | None = None, kind: str = "submit") -> SubmitResult:
    """Stream ``folder`` into the database as one batch (walk, hash, probe, register in commits);
    nothing is enqueued."""
    progress = progress or Silent()
    walk = Walk(folder, recursive=recursive)
    config = settings.ingest_config()
    counts = {"files": 0, "not_images": 0}
    progress.start("scan", None)
    progress.start("register", None)
    result = register_batch(
        _commits(walk, config, progress, counts, settings.decode_threads), counts,
        settings=settings, kind=kind, source=str(folder.resolve()), progress=progress,
        audit_action="submit" if kind == "submit" else f"{kind}.submit")
    result.skipped = dict(walk.skipped)
    return result


def register_batch(parts: Iterable[list[Candidate]], counts: dict[str, int], *,
                   settings: Settings, kind: str, source: str, progress: Progress,
                   audit_action: str | None = None, one_transaction: bool = False,
                   also: Callable[[Session, SubmitResult], None] | None = None) -> SubmitResult:
    """Register examined files as one batch: the one registration of ``screen submit``,
    ``screen nightly`` and ``screen listen``; nothing is enqueued.

    ``parts``: the candidates, one list per transaction (a folder commits every
    ``FILES_PER_COMMIT`` files); ``counts``: files seen and files that are no images, read once
    ``parts`` is exhausted. ``one_transaction``: the batch row, the registration and ``also``
    (the listener's received-instance rows) commit together. The result counts the new images
    by status and lists the queued ones.
    """
    with ExitStack() as stack:
        whole = stack.enter_context(settings.session()) if one_transaction else None

        def transaction() -> AbstractContextManager[Session]:
            return nullcontext(whole) if whole is not None else settings.session()

        with transaction() as session:
            batch = Batch(kind=kind, source=source)
            session.add(batch)
            session.flush()
            batch_id = batch.id
        totals = Registered()
        for part in parts:
            with transaction() as session:
                register(part, batch_id, session=session, progress=progress, totals=totals)
        result = SubmitResult(batch_id=batch_id, n_files=counts["files"], n_new=len(totals.new),
                              n_duplicate=totals.duplicates, n_not_images=counts["not_images"],
                              n_replaced=len(totals.replaced), n_twins=totals.twins)
        with transaction() as session:
            batch = session.get(Batch, batch_id)
            batch.n_files, batch.n_not_images = result.n_files, result.n_not_images
            batch.n_new, batch.n_duplicate = result.n_new, result.n_duplicate
            if audit_action:
                audit(session, audit_action, batch=batch_id, folder=batch.source,
                      files=result.n_files, new=result.n_new)
            _tally(result, totals, session=session)
            if also is not None:
                also(session, result)
    return result


def _tally(result: SubmitResult, totals: Registered, *, session: Session) -> None:
    """The new and replaced images by status: queued ones listed, new ones counted."""
    for image_id, status in statuses(totals.new | totals.replaced, session=session):
        if status == ImageStatus.queued:
            result.queued_ids.append(image_id)
        if image_id in totals.replaced:
            continue
        if status == ImageStatus.queued:
            result.n_to_screen += 1
        elif status == ImageStatus.rejected:
            result.n_rejected += 1
        elif status == ImageStatus.failed:
            result.n_failed += 1
    result.queued_ids.sort()
