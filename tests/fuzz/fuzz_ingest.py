"""Fuzz the intake with mutants of real DICOM files: counts by outcome, catch-all reasons,
constant inputs screened, unsafe stored text, peak memory per file.

    .venv/bin/python tests/fuzz/fuzz_ingest.py --mutants 2000 [--seed 0] [--corpus ../shared/dicom]
        [--address-space-mb 2048] [--jobs 2] [--show 5] [--json]

Each mutant is made from (seed, index) alone, inside a child process forked for that file only,
which reads it as ``screen`` does (``probe``, then ``load_grey`` and the network's
preprocessing) and reports the outcome, the reason, what would be stored, and its own peak RSS
above a forked child's that did nothing. Mutations: byte flips in the header or anywhere, a cut,
a repeated slice (fragments repeated), an element's length made huge, hostile tag values (ages,
windows, dimensions, a NUL in the transfer syntax, rescale), PNG/JPEG made of the pixels.
``--address-space-mb`` sets ``ulimit -v`` in each child, as hospital containers do. Exit status:
1 when a catch-all reason, an exception, a constant input screened or unsafe text was found.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import random
import re
import resource
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Reasons that say nothing about the file: each was once seen, each is a defect.
CATCH_ALL = re.compile(
    r"cannot identify image file|<_io\.|unexpected [A-Z]\w+ (reading header|while decoding)|"
    r"unexpected error|"
    r"error code <value>|\bNone x\b|x None\b|\(MemoryError\)|Traceback|object has no attribute|"
    r"NoneType|invalid literal for")
# Text the databases refuse or that must never be stored: NUL, other C0 controls, surrogates.
UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")

AGES = ["54", "6", "051Y", "6.5", "18 M", "054y", "", "abc", "\x00\x00", "999Y", "5 years"]
HOSTILE: list[tuple[str, list[Any]]] = [
    ("PatientAge", AGES),
    ("PatientBirthDate", ["19010101", "19000101", "20991231", "00000000", "2020"]),
    ("StudyDate", ["", "19000101", "20180101", "20991231"]),
    ("WindowWidth", [1e38, 0, -5, 1, 3.4e38, 1e-30]),
    ("WindowCenter", [1e38, -1e38, 70, 5000, 0]),
    ("Rows", [0, 1, 3, 65535]),
    ("Columns", [0, 1, 3, 65535]),
    ("BitsStored", [0, 1, 7, 17, 33]),
    ("RescaleSlope", [0, 1e38, -1, 1e-30]),
    ("RescaleIntercept", [1e38, -1e38]),
    ("PhotometricInterpretation", ["MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "X"]),
    ("PixelSpacing", [[0.1, 0.1], [10, 10], [0, 0]]),
    ("PixelRepresentation", [1, 2]),
    ("SamplesPerPixel", [3, 0]),
    ("ViewPosition", ["LL", "PA", "AP", ""]),
    ("BodyPartExamined", ["CHEST", "ABDOMEN", "chest", ""]),
]


def corpus(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _flip(data: bytearray, rng: random.Random, head: bool) -> str:
    n = rng.randint(1, 16)
    top = min(len(data), 4096) if head else len(data)
    for _ in range(n):
        data[rng.randrange(top)] = rng.randrange(256)
    return f"flip {n} bytes {'in the header' if head else 'anywhere'}"


def _huge_length(data: bytearray, rng: random.Random) -> str:
    """An explicit-VR element's 4-byte length (OB, OW, UN, SQ, UT…) or a 2-byte one made huge."""
    spots = [m.start() for m in re.finditer(rb"(OB|OW|UN|SQ|UT|OD|OF)\x00\x00", bytes(data))]
    if spots:
        at = rng.choice(spots) + 4
        data[at:at + 4] = struct.pack("<I", rng.choice([0xFFFFFFF0, 0x7FFFFFF0, 0x10000000]))
        return "a 4-byte element length made huge"
    at = rng.randrange(132, max(133, len(data) - 4))
    data[at:at + 4] = b"\xf0\xff\xff\xff"
    return "4 bytes set to a huge length"


def _tag(src: bytes, rng: random.Random) -> tuple[bytes, str]:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(src), force=True)
    keyword, values = rng.choice(HOSTILE)
    value = rng.choice(values)
    what = f"{keyword} = {value!r}"
    try:
        if keyword == "PixelSpacing" and rng.random() < 0.5:
            keyword = "ImagerPixelSpacing"
        setattr(ds, keyword, value)
        if rng.random() < 0.3 and getattr(ds, "file_meta", None) is not None:
            # A NUL inside the transfer syntax: the value a PostgreSQL text column refuses.
            ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
            cut = rng.randrange(1, len(ts))
            ds.file_meta.TransferSyntaxUID = ts[:cut] + "\x00" + ts[cut:]
            what += " and a NUL in the Transfer Syntax UID"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
        return out.getvalue(), what
    except Exception as exc:  # pydicom refused to write it: fall back on a byte mutation
        data = bytearray(src)
        return bytes(data), f"{what} (not writable: {type(exc).__name__}); unchanged"


def _raster(src: bytes, rng: random.Random) -> tuple[bytes, str, str]:
    """A PNG or JPEG of the file's pixels (or of nothing), as a PACS export would make."""
    import numpy as np
    from PIL import Image

    kind = rng.choice(["grey", "tiny", "uniform", "real"])
    if kind == "real":
        import pydicom

        try:
            arr = pydicom.dcmread(io.BytesIO(src)).pixel_array
            arr = (arr.astype(float) - arr.min()) / max(1, float(arr.max() - arr.min())) * 255
            arr = arr.astype(np.uint8)[::4, ::4]
            if arr.ndim != 2:
                arr = arr[..., 0]
        except Exception:
            kind = "grey"
    if kind == "grey":
        arr = np.full((256, 256), rng.randrange(256), np.uint8)
        arr[::50] = rng.randrange(256)
    elif kind == "tiny":
        side = rng.choice([1, 2, 3, 8, 31])
        arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (side, side),
                                                                      dtype=np.uint8)
    elif kind == "uniform":
        arr = np.full((224, 224), rng.randrange(256), np.uint8)
    fmt = rng.choice(["PNG", "JPEG"])
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format=fmt)
    data = bytearray(out.getvalue())
    if rng.random() < 0.3:  # then corrupt it
        how = _flip(data, rng, head=False) if rng.random() < 0.5 else "cut"
        if how == "cut":
            data = data[: rng.randrange(20, len(data))]
        kind += f", {how}"
    return bytes(data), f"{fmt} {kind} {arr.shape[0]} x {arr.shape[1]}", fmt.lower()


def mutant(files: list[Path], seed: int, index: int) -> tuple[bytes, str, str]:
    """The ``index``-th mutant of run ``seed``: (bytes, what was done, file suffix)."""
    rng = random.Random(f"{seed}:{index}")
    src = files[index % len(files)].read_bytes()
    data = bytearray(src)
    kind = rng.choices(["flip-head", "flip", "cut", "repeat", "huge", "tag", "raster"],
                       weights=[4, 2, 2, 2, 2, 5, 2])[0]
    name = files[index % len(files)].name
    if kind == "flip-head":
        what = _flip(data, rng, head=True)
    elif kind == "flip":
        what = _flip(data, rng, head=False)
    elif kind == "cut":
        at = rng.randrange(1, len(data))
        data = data[:at]
        what = f"cut at {at} of {len(src)}"
    elif kind == "repeat":
        a = rng.randrange(len(data))
        b = min(len(data), a + rng.randrange(1, 1 << 16))
        times = rng.randint(2, 40)
        data = data[:b] + data[a:b] * times + data[b:]
        what = f"bytes {a}..{b} repeated {times} times"
    elif kind == "huge":
        what = _huge_length(data, rng)
    elif kind == "tag":
        out, what = _tag(src, rng)
        return out, f"{name}: {what}", ".dcm"
    else:
        out, what, suffix = _raster(src, rng)
        return out, f"{name}: {what}", "." + suffix
    return bytes(data), f"{name}: {what}", ".dcm"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _idle(_: int) -> float:
    return _peak_mb()


def _unsafe_values(metadata: dict[str, Any]) -> list[str]:
    found = []
    for key, value in metadata.items():
        if isinstance(value, dict):
            found += _unsafe_values(value)
        elif isinstance(value, str) and UNSAFE.search(value):
            found.append(key)
    return found


def one(args: tuple[list[Path], int, int, int | None, str]) -> dict[str, Any]:
    """Make and read one mutant (in a fresh child): its outcome, reason and peak memory."""
    files, seed, index, address_mb, tmp = args
    if address_mb:
        limit = address_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.alarm(120)
    from pneumoscreen.model.preprocess import preprocess
    from pneumoscreen.worker.ingest import IngestConfig, IngestError, load_grey, probe
    from pneumoscreen.worker.ingest.content import content_problem

    data, what, suffix = mutant(files, seed, index)
    path = Path(tmp) / f"m{index}{suffix}"
    path.write_bytes(data)
    out: dict[str, Any] = {"index": index, "what": what, "bytes": len(data)}
    config = IngestConfig(patient_key=b"k" * 32)
    started = time.perf_counter()
    try:
        found = probe(path, config)
        out["unsafe"] = _unsafe_values(found.metadata)
        decoded = load_grey(path, config)
        tensor = preprocess(decoded.grey, 224)
        out["unsafe"] += _unsafe_values(decoded.metadata)
        out["status"] = "done"
        out["constant"] = content_problem(tensor[..., 0]) is not None
    except IngestError as exc:
        out["status"], out["reason"] = exc.status, str(exc)
        out["unsafe"] = out.get("unsafe", []) + _unsafe_values(exc.metadata or {})
    except BaseException as exc:  # what the harness is here to find
        out["status"], out["reason"] = "exception", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        path.unlink(missing_ok=True)
    out["seconds"] = round(time.perf_counter() - started, 3)
    out["peak_mb"] = _peak_mb()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "dicom")
    parser.add_argument("--address-space-mb", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--show", type=int, default=5, help="examples shown per reason kind")
    parser.add_argument("--json", action="store_true", help="every result as JSON lines")
    args = parser.parse_args(argv)
    files = corpus(args.corpus)
    if not files:
        print(f"no files under {args.corpus}", file=sys.stderr)
        return 2
    import pneumoscreen.model.preprocess
    import pneumoscreen.worker.ingest  # noqa: F401

    context = mp.get_context("fork")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, context.Pool(args.jobs,
                                                           maxtasksperchild=1) as pool:
        baseline = max(pool.map(_idle, range(args.jobs), chunksize=1))
        work = [(files, args.seed, i, args.address_space_mb, tmp) for i in range(args.mutants)]
        for n, result in enumerate(pool.imap(one, work, chunksize=1), start=1):
            results.append(result)
            if args.json:
                print(json.dumps(result, default=str))
            if n % 200 == 0:
                print(f"  {n}/{args.mutants}", file=sys.stderr, flush=True)
    return report(results, baseline, args)


def _kind(reason: str) -> str:
    """A reason with its numbers and quoted parts folded, to count kinds of reasons."""
    return re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "N", reason)[:90]


def report(results: list[dict[str, Any]], baseline: float, args: argparse.Namespace) -> int:
    by_status = Counter(r["status"] for r in results)
    catch_all = [r for r in results if CATCH_ALL.search(r.get("reason") or "")]
    exceptions = [r for r in results if r["status"] == "exception"]
    constant = [r for r in results if r.get("constant")]
    unsafe = [r for r in results if r.get("unsafe") or UNSAFE.search(r.get("reason") or "")]
    peaks = sorted(max(0.0, r["peak_mb"] - baseline) for r in results)
    print(f"{len(results)} mutants of {args.corpus} (seed {args.seed}"
          + (f", ulimit -v {args.address_space_mb} MB" if args.address_space_mb else "") + ")")
    print("by outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
    print(f"catch-all reasons: {len(catch_all)}; exceptions: {len(exceptions)}; "
          f"constant inputs screened: {len(constant)}; unsafe text: {len(unsafe)}")
    print(f"peak memory above an idle child, per file: median {peaks[len(peaks) // 2]:.1f} MB, "
          f"p99 {peaks[int(len(peaks) * 0.99)]:.1f} MB, max {peaks[-1]:.1f} MB "
          f"(baseline child {baseline:.1f} MB)")
    slow = max(results, key=lambda r: r["seconds"])
    print(f"slowest file: {slow['seconds']} s ({slow['what']})")
    kinds = Counter(_kind(r["reason"]) for r in results if r.get("reason"))
    print("most frequent reasons:")
    for kind, count in kinds.most_common(25):
        print(f"  {count:5d}  {kind}")
    for title, rows in (("catch-all", catch_all), ("exception", exceptions),
                        ("constant screened", constant), ("unsafe", unsafe)):
        for r in rows[: args.show]:
            print(f"{title}: #{r['index']} {r['what']}: {r.get('reason')!r} {r.get('unsafe')}")
    return 1 if catch_all or exceptions or constant or unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
