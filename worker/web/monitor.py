"""Post-market monitoring: the figures of ``/monitor`` and ``/metrics``, and their plots.

- throughput, queue depth, arrival-to-result time, rejections and failures by reason;
- the flag rate and the out-of-scope rate per day against the validation reference, with
  3-sigma control limits of a p-chart (the limits widen on days with few images);
- drift of the score distribution against the validation histogram in the model's sidecar;
- agreement with the readers: PPV of flags and, where readers labelled unflagged images, the
  sensitivity, each with a Wilson 95% interval and its n.

The validation split is enriched (about 74% pneumonia), so a flag rate below its reference is
expected in a hospital's case mix: the control limits show change, not error.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import math
import re
from typing import Any

from sqlalchemy.orm import Session

Z95 = 1.959964


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None when n is 0)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def control_limits(p0: float, n: int, sigmas: float = 3.0) -> tuple[float, float]:
    """Lower and upper p-chart limits for a day of ``n`` images around the reference ``p0``."""
    if n <= 0:
        return 0.0, 1.0
    half = sigmas * math.sqrt(p0 * (1 - p0) / n)
    return max(0.0, p0 - half), min(1.0, p0 + half)


def reason_class(reason: str) -> str:
    """A rejection or failure reason as a short class for a metric label: the words before the
    first detail (a colon, a parenthesis, a number, a quote), at most 48 characters."""
    head = re.split(r"[:(\[\"'0-9=]", reason or "unknown", maxsplit=1)[0]
    head = re.sub(r"[^A-Za-z _-]", "", head).strip().lower()
    return (head or "unknown")[:48]


def references(sidecar: dict[str, Any] | None) -> dict[str, Any]:
    """The validation reference of a model: its score histogram (None in an older sidecar),
    flag rate and out-of-scope rate."""
    side = sidecar or {}
    hist = side.get("score_histogram")
    val = (side.get("metrics") or {}).get("validation") or {}
    flag = (hist or {}).get("flag_rate")
    if flag is None and val.get("n"):
        flag = (val.get("tp", 0) + val.get("fp", 0)) / val["n"]
    oos = (hist or {}).get("out_of_scope_rate")
    if oos is None:
        oos = (side.get("atypicality") or {}).get("validation_above")
    return {"histogram": hist, "flag_rate": flag, "out_of_scope_rate": oos}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def agreement(pairs: list[tuple[bool, str, str | None]]) -> dict[str, Any]:
    """PPV and sensitivity from the newest read of each image.

    The reader's truth: a final label when given (pneumonia positive; normal or another
    finding negative); else the verdict, read against the flag (agreeing with a flag, or
    disagreeing with no flag, means pneumonia)."""
    tp = fp = fn = 0
    for flagged, verdict, label in pairs:
        positive = (label == "pneumonia" if label is not None
                    else (verdict == "agree") == flagged)
        if flagged and positive:
            tp += 1
        elif flagged:
            fp += 1
        elif positive:
            fn += 1
    unflagged = sum(1 for f, _, _ in pairs if not f)
    # Without reads of unflagged images no miss can be seen: no sensitivity then.
    ppv_n, sens_n = tp + fp, (tp + fn if unflagged else 0)
    return {"ppv": tp / ppv_n if ppv_n else None, "ppv_ci": wilson(tp, ppv_n), "ppv_n": ppv_n,
            "sensitivity": tp / sens_n if sens_n else None, "sensitivity_ci": wilson(tp, sens_n),
            "sensitivity_n": sens_n, "read_images": len(pairs),
            "unflagged_read": unflagged}


def figures(*, session: Session, days: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything ``/monitor`` shows and ``/metrics`` exports, from the database."""
    from pneumoscreen.db import web as q
    from pneumoscreen.db.queries import count_by_status
    from pneumoscreen.model.drift import drift

    now = now or dt.datetime.now(dt.timezone.utc)
    since = now - dt.timedelta(days=days)
    day_ago = now - dt.timedelta(days=1)
    counts = count_by_status(session=session)
    durations = q.arrival_to_result(session=session, since=day_ago)
    reasons: dict[tuple[str, str], int] = {}
    for status, reason, n in q.status_reasons(session=session):
        key = (status, reason_class(reason))
        reasons[key] = reasons.get(key, 0) + n
    model = q.busiest_model(session=session, since=since) or q.busiest_model(session=session)
    ref = references(None if model is None else model.sidecar)
    daily = q.daily_rates(session=session, since=since,
                          model_version_id=None if model is None else model.id)
    for row in daily:
        row["flag_rate"] = row["flagged"] / row["n"]
        row["outside_rate"] = row["outside"] / row["n"]
        if ref["flag_rate"] is not None:
            row["flag_limits"] = control_limits(ref["flag_rate"], row["n"])
            lo, hi = row["flag_limits"]
            row["flag_alarm"] = not lo <= row["flag_rate"] <= hi
        if ref["out_of_scope_rate"] is not None:
            row["outside_limits"] = control_limits(ref["out_of_scope_rate"], row["n"])
            lo, hi = row["outside_limits"]
            row["outside_alarm"] = not lo <= row["outside_rate"] <= hi
    drift_figures = None
    if model is not None and ref["histogram"]:
        drift_figures = drift(ref["histogram"], q.scores(session=session, since=since,
                                                         model_version_id=model.id))
    return {
        "now": now, "days": days, "counts": counts,
        "queue_depth": counts.get("queued", 0) + counts.get("processing", 0),
        "finished_last_hour": q.finished_since(session=session,
                                               since=now - dt.timedelta(hours=1)),
        "finished_last_day": len(durations),
        "arrival_to_result": {"n": len(durations), "p50": _quantile(durations, 0.5),
                              "p95": _quantile(durations, 0.95), "max": max(durations,
                                                                             default=None)},
        "reasons": [{"status": s, "reason": r, "n": n}
                    for (s, r), n in sorted(reasons.items(), key=lambda kv: -kv[1])],
        "model": None if model is None else {"label": model.label, "sha256": model.file_sha256,
                                             "id": model.id},
        "reference": ref, "daily": daily, "drift": drift_figures,
        "today": next((d for d in daily if d["day"] == now.astimezone(dt.timezone.utc)
                       .date().isoformat()), None),
        "agreement": agreement(q.agreement_pairs(session=session)),
        "exports": q.export_counts(session=session),
        "reads": q.read_counts(session=session),
    }


# ---- plots (server-rendered SVG, readable without JavaScript) ------------------------------

def _svg(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rate_chart(data: dict[str, Any], which: str) -> bytes:
    """The daily flag rate (``which="flag"``) or out-of-scope rate (``"outside"``) with the
    reference and its control limits."""
    plt = _pyplot()
    key, limits = f"{which}_rate", f"{which}_limits"
    ref = data["reference"]["flag_rate" if which == "flag" else "out_of_scope_rate"]
    title = "Flag rate per day" if which == "flag" else "Out-of-scope rate per day"
    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=100)
    daily = data["daily"]
    if daily:
        x = [dt.date.fromisoformat(r["day"]) for r in daily]
        y = [r[key] for r in daily]
        alarm = [r.get(f"{which}_alarm", False) for r in daily]
        ax.plot(x, y, "-", color="#1f4e79", lw=1)
        ax.scatter(x, y, c=["#c00000" if a else "#1f4e79" for a in alarm], s=18, zorder=3,
                   label="observed (red: outside the limits)")
        if ref is not None:
            ax.axhline(ref, color="#555", lw=1, ls="--", label=f"validation {ref:.3f}")
            ax.vlines(x, [r[limits][0] for r in daily], [r[limits][1] for r in daily],
                      color="#aaa", lw=4, alpha=0.6, label="3-sigma limits for the day's n")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no predictions in this window", ha="center", va="center",
                transform=ax.transAxes)
    end = data["now"].date()
    ax.set_xlim(end - dt.timedelta(days=data["days"]), end + dt.timedelta(days=1))
    fig.autofmt_xdate()
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("share of images", fontsize=8)
    fig.tight_layout()
    return _svg(fig)


def score_chart(data: dict[str, Any]) -> bytes:
    """The production score distribution over the validation histogram, as shares per bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=100)
    hist, drift_figures = data["reference"]["histogram"], data["drift"]
    if hist and drift_figures and drift_figures["n"]:
        from pneumoscreen.model.drift import bin_edges_of

        edges = bin_edges_of(hist)
        mids = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        width = edges[1] - edges[0]
        ref_n, obs_n = sum(hist["counts"]), drift_figures["n"]
        ax.bar(mids, [c / ref_n for c in hist["counts"]], width=width, color="#bbb",
               label=f"validation (n={ref_n})")
        ax.step(edges, [c / obs_n for c in drift_figures["observed"]] + [0], where="post",
                color="#1f4e79", lw=1.5, label=f"production (n={obs_n})")
        ax.set_title(f"Score distribution: PSI {drift_figures['psi']:.3f}, KS "
                     f"{drift_figures['ks']:.3f} ({drift_figures['reading']})", fontsize=10)
        ax.legend(fontsize=7)
    else:
        ax.set_title("Score distribution", fontsize=10)
        ax.text(0.5, 0.5, "no validation histogram in the model's sidecar, or no scores",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("probability of pneumonia", fontsize=8)
    ax.set_ylabel("share", fontsize=8)
    fig.tight_layout()
    return _svg(fig)
