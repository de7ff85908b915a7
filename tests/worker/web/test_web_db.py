"""The web's queries on SQLite and on PostgreSQL: the reading list, the image page, reads and
the monitoring figures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from web_fixtures import add_image, film

from pneumoscreen.db import session_scope
from pneumoscreen.db import web as q
from pneumoscreen.worker.web import data
from pneumoscreen.worker.web.monitor import figures


def test_queries_on_both_databases(db_url: str, tmp_path: Path) -> None:
    a = add_image(db_url, film(tmp_path / "a.png"), 0.9, study_uid="1.2.3")
    b = add_image(db_url, film(tmp_path / "b.png"), 0.2, study_uid="1.2.3", view="LL")
    c = add_image(db_url, film(tmp_path / "c.png"), 0.6, in_scope=False, scope_reason="adult")
    with session_scope(db_url) as session:
        user = q.add_user("rita", "reader", "x", session=session)
        with pytest.raises(ValueError, match="exists already"):
            q.add_user("rita", "admin", None, session=session)
        assert q.add_read(a, user.id, "agree", label="pneumonia", subtype="viral",
                          session=session) is not None
        assert q.add_read(b, user.id, "disagree", label="pneumonia", session=session)
        assert q.add_read(999, user.id, "agree", session=session) is None
    with session_scope(db_url) as session:
        rl = data.reading_list(session=session, opened=a)
        assert [r["image_id"] for r in rl.flagged] == [a]
        assert [r["image_id"] for r in rl.outside] == [c]
        assert rl.flagged[0]["read"]["verdict"] == "agree" and not rl.flagged[0]["new"]
        assert rl.outside[0]["new"]  # screened after the page's newest prediction
        assert [r["image_id"] for r in data.reading_list(session=session,
                                                         status="unread").flagged] == []
        page = data.image_page(a, session=session)
        assert page["prediction"]["flagged"] and page["heatmap"][:2] == (7, 7)
        assert [o["image_id"] for o in page["others"]] == [b]
        assert [r["label"] for r in page["reads"]] == ["pneumonia"]
        f = figures(session=session, days=30)
    assert f["counts"]["done"] == 3 and f["queue_depth"] == 0
    assert f["daily"][-1]["n"] == 3 and f["daily"][-1]["flagged"] == 2
    assert f["drift"]["n"] == 3 and f["drift"]["psi"] is not None
    # a: flagged, pneumonia -> TP; b: unflagged, labelled pneumonia -> a miss
    ag = f["agreement"]
    assert (ag["ppv"], ag["ppv_n"], ag["sensitivity"], ag["sensitivity_n"]) == (1.0, 1, 0.5, 2)


def test_read_status_filter_comes_before_the_row_limit(db_url: str, tmp_path: Path) -> None:
    """Read images at the top of the list must not eat the limit of an ``unread`` list (nor
    unread ones that of a ``read`` list)."""
    ids = [add_image(db_url, film(tmp_path / f"{i}.png", seed=i), p)
           for i, p in enumerate((0.95, 0.9, 0.85, 0.8, 0.75))]
    with session_scope(db_url) as session:
        user = q.add_user("rita", "reader", "x", session=session)
        for image_id in ids[:3]:  # the three most probable are read
            q.add_read(image_id, user.id, "agree", session=session)
    with session_scope(db_url) as session:
        def listed(status: str, limit: int) -> list[int]:
            rl = data.reading_list(session=session, status=status, limit=limit)
            return [r["image_id"] for r in rl.flagged + rl.outside]

        assert listed("unread", 2) == ids[3:]
        assert listed("read", 2) == ids[:2]
        assert listed("all", 2) == ids[:2]
        assert listed("unread", 500) == ids[3:] and listed("read", 500) == ids[:3]


def test_daily_rates_are_the_watched_models_and_today_is_today(db_url: str,
                                                               tmp_path: Path) -> None:
    """Another model's flags do not enter the watched model's daily rate (its control limits
    are that model's), and a day without predictions has no "today" (no stale rate)."""
    from sqlalchemy import update

    from pneumoscreen.db import Prediction
    from pneumoscreen.db.queries import get_or_create_model_version

    add_image(db_url, film(tmp_path / "a.png"), 0.9)
    add_image(db_url, film(tmp_path / "b.png"), 0.2)
    add_image(db_url, film(tmp_path / "c.png"), 0.2)
    other_image = add_image(db_url, film(tmp_path / "d.png"), 0.95)
    with session_scope(db_url) as session:
        other = get_or_create_model_version(
            session=session, name="other", version="2.0", file_sha256="cd" * 32,
            input_spec={"height": 64}, threshold=0.5, target_recall=0.95, trained=True)
        session.execute(update(Prediction).where(Prediction.image_id == other_image)
                        .values(model_version_id=other.id))
    with session_scope(db_url) as session:
        f = figures(session=session, days=30)
        assert f["model"]["label"] == "pneumoscreen-test:1.0"
        assert (f["today"]["n"], f["today"]["flagged"]) == (3, 1)
        assert f["daily"] == [f["today"]]
        later = figures(session=session, days=30,
                        now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2))
    assert later["today"] is None and [d["n"] for d in later["daily"]] == [3]
