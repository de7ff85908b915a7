"""The schema and its migrations, on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pneumoscreen.db import Batch, Image, ImageStatus, ModelVersion, Prediction, session_scope
from pneumoscreen.db.migrate import current, head_revision
from pneumoscreen.db.queries import get_or_create_model_version
from pneumoscreen.db.session import get_engine


def _model_version(session: sa.orm.Session, sha: str = "a" * 64) -> ModelVersion:
    return get_or_create_model_version(
        session=session, name="m", version="1", file_sha256=sha, input_spec={"height": 8},
        threshold=0.3, target_recall=0.95, trained=True)


class TestMigrations:
    def test_first_use_upgrades_to_head(self, db_url: str) -> None:
        engine = get_engine(db_url)
        assert current(engine) == head_revision() == "0013"
        tables = set(sa.inspect(engine).get_table_names())
        assert {"studies", "batches", "predictions", "model_versions", "evaluation_reports",
                "runs", "alembic_version"} <= tables

    def test_models_match_migrations(self, db_url: str) -> None:
        """Autogenerate finds nothing to do: the migration and the models agree."""
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        from pneumoscreen.db.models import Base

        engine = get_engine(db_url)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []


    def test_upgrade_keeps_rows_and_downgrade_works(self, db_url: str) -> None:
        from pneumoscreen.db.migrate import alembic_config, upgrade

        engine = sa.create_engine(db_url)
        try:
            upgrade(engine, "0001")
            with engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO studies (sha256, source_path, format, status, attempts) "
                    "VALUES ('s', '/a.png', 'png', 'queued', 0)"))
            upgrade(engine, "head")
            with engine.connect() as conn:
                row = conn.execute(sa.text("SELECT source_path, claim_token FROM studies")).one()
            assert tuple(row) == ("/a.png", None)
            from alembic import command

            cfg = alembic_config(engine)
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "0001")
            assert current(engine) == "0001"
            columns = {c["name"] for c in sa.inspect(engine).get_columns("studies")}
            assert "claim_token" not in columns
        finally:
            engine.dispose()


class TestConstraints:
    def test_study_sha256_unique(self, db_url: str) -> None:
        with session_scope(db_url) as s:
            s.add(Image(sha256="x" * 64, source_path="/a", format="png"))
        with pytest.raises(IntegrityError), session_scope(db_url) as s:
            s.add(Image(sha256="x" * 64, source_path="/b", format="png"))

    def test_sop_instance_uid_unique_when_present(self, db_url: str) -> None:
        with session_scope(db_url) as s:
            s.add_all([Image(sha256="1" * 64, source_path="/a", format="png"),
                       Image(sha256="2" * 64, source_path="/b", format="png"),
                       Image(sha256="3" * 64, source_path="/c", format="dicom",
                             sop_instance_uid="1.2.3")])
        with pytest.raises(IntegrityError), session_scope(db_url) as s:
            s.add(Image(sha256="4" * 64, source_path="/d", format="dicom",
                        sop_instance_uid="1.2.3"))

    def test_one_prediction_per_study_and_model(self, db_url: str) -> None:
        with session_scope(db_url) as s:
            study = Image(sha256="y" * 64, source_path="/a", format="png", batch=Batch())
            mv = _model_version(s)
            s.add(study)
            s.flush()
            s.add(Prediction(image_id=study.id, model_version_id=mv.id, probability=0.9,
                             threshold=0.3, flagged=True))
            ids = (study.id, mv.id)
        with pytest.raises(IntegrityError), session_scope(db_url) as s:
            s.add(Prediction(image_id=ids[0], model_version_id=ids[1], probability=0.1,
                             threshold=0.3, flagged=False))

    def test_insert_ignore_skips_the_duplicate(self, db_url: str) -> None:
        from pneumoscreen.db.upsert import insert_ignore

        with session_scope(db_url) as s:
            study = Image(sha256="z" * 64, source_path="/a", format="png")
            s.add(study)
            mv = _model_version(s)
            s.flush()
            row = {"image_id": study.id, "model_version_id": mv.id, "probability": 0.5,
                   "threshold": 0.3, "flagged": True}
            stmt = insert_ignore(s, Prediction, ["study_id", "model_version_id"])
            s.execute(stmt, [row])
            s.execute(stmt, [{**row, "probability": 0.1}])
        with session_scope(db_url) as s:
            probs = s.scalars(sa.select(Prediction.probability)).all()
        assert probs == [0.5]

    def test_status_is_validated(self, db_url: str) -> None:
        with session_scope(db_url) as s:
            s.add(Image(sha256="q" * 64, source_path="/a", format="png",
                        status=ImageStatus.rejected, reason="Modality CT"))
        with session_scope(db_url) as s:
            assert s.scalars(sa.select(Image.status)).one() is ImageStatus.rejected

    def test_timestamps_come_back_timezone_aware(self, db_url: str) -> None:
        with session_scope(db_url) as s:
            s.add(Image(sha256="t" * 64, source_path="/a", format="png"))
        with session_scope(db_url) as s:
            created = s.scalars(sa.select(Image.created_at)).one()
            latest = s.scalar(sa.select(sa.func.max(Image.created_at)))
        assert created.tzinfo is not None and latest == created

    def test_model_version_created_once(self, db_url: str) -> None:
        with session_scope(db_url) as s:
            first = _model_version(s).id
        with session_scope(db_url) as s:
            assert _model_version(s).id == first
            assert s.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 1


def test_concurrent_first_use(db_url: str) -> None:
    """Processes that meet a fresh database together all end up at head, none fails (on SQLite
    two `screen submit` side by side once failed with "table model_versions already exists")."""
    import subprocess
    import sys

    code = ("import sys; from pneumoscreen.db.session import create_migrated_engine;"
            "from pneumoscreen.db.migrate import current;"
            "print(current(create_migrated_engine(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert [out.strip() for out, _ in results] == [head_revision()] * 3
