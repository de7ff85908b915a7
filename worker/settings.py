"""One settings object for the tool, read from ``SCREEN_*`` variables and an optional TOML file.

Precedence, highest first: explicit keyword arguments, environment variables, the config file
(``SCREEN_CONFIG`` or ``<user config dir>/config.toml``), the embedded defaults below.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

APP_NAME = "pneumoscreen"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_config_file() -> Path:
    explicit = os.environ.get("SCREEN_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


class Settings(BaseSettings):
    """Effective configuration. Every field maps to ``SCREEN_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SCREEN_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Per-user state folder.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: a SQLite file in data_dir."
    )
    broker_url: str | None = Field(
        None, description="Celery broker (e.g. redis://127.0.0.1:6379/0); none = run in-process."
    )
    result_backend: str | None = Field(None, description="Celery result backend; optional.")
    model_path: Path | None = Field(None, description="A .keras file; default: the bundled model.")
    batch_size: int = Field(128, ge=1, le=65536, description="Studies per queued task.")
    patient_key: str | None = Field(
        None, description="Key for pseudonymising patient ids; default: made once in data_dir."
    )

    # Ingestion policy (what gets screened); data, not code branches.
    accept_modalities: list[str] = ["CR", "DX"]
    accept_body_parts: list[str] = ["CHEST", "THORAX", "LUNG", "TORSO", ""]
    reject_view_positions: list[str] = ["LL", "RL", "LATERAL", "LAT", "RLD", "LLD"]
    max_pixels: int = Field(
        60_000_000, ge=1, description="Rows*Columns limit (decompression bombs)."
    )
    reduced_resolution: bool = Field(True, description="Decode J2K at a lower resolution level.")
    reduced_min_side: int = Field(
        256, ge=64, description="Reduced decoding keeps at least this many pixels per side."
    )
    reject_presentation_intents: list[str] = ["FOR PROCESSING"]
    non_image_modalities: list[str] = [
        "SR", "PR", "KO", "DOC", "REG", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD",
        "ECG", "HD", "AU", "PLAN", "FID", "RWV",
    ]
    window_percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="Robust window when the file has no VOI LUT or window."
    )

    # Worker runtime.
    decode_threads: int = Field(2, ge=1, le=64, description="Threads decoding the next batch.")
    model_batch_size: int = Field(
        32, ge=1, le=4096,
        description="Studies per model call inside a task; the next chunk decodes meanwhile.",
    )
    visibility_timeout: int = Field(
        3600, ge=5,
        description="Seconds before Redis redelivers an unacknowledged task; also the lease "
        "after which a study left processing by a dead worker is screened again. Keep it "
        "longer than any batch (and than task_time_limit).",
    )
    task_time_limit: int = Field(1800, ge=10, description="Hard time limit of one batch task (s).")
    device: str | None = Field(None, description="TensorFlow device, e.g. /GPU:0; default: auto.")
    mixed_precision: bool = Field(False, description="float16 compute on GPU (mixed_float16).")
    memory_growth: bool = Field(True, description="Allocate GPU memory as needed.")
    tf_intra_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads; 0 = auto.")
    tf_inter_threads: int = Field(0, ge=0, description="TensorFlow inter-op threads; 0 = auto.")
    gpu_per_process: bool = Field(
        False, description="With --concurrency N on N GPUs: pool process i sees only GPU i."
    )

    # Nightly runs.
    inbox_dirs: list[Path] = []
    nightly_cron: str = Field("0 2 * * *", description="Celery beat schedule for nightly runs.")
    nightly_timezone: str = Field("UTC", description="Time zone of nightly_cron (IANA name).")

    @field_validator("nightly_cron")
    @classmethod
    def _five_cron_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"nightly_cron {value!r} must have 5 fields: minute hour day "
                             "month weekday, e.g. '0 2 * * *'")
        return value

    @field_validator("database_url", "broker_url", "result_backend", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=default_config_file())
        return init_settings, env_settings, toml

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'pneumoscreen.sqlite3'}"

    @property
    def eager(self) -> bool:
        """No broker configured: tasks run in this process."""
        return self.broker_url is None

    def effective_patient_key(self) -> bytes:
        """The pseudonymisation key; generated once and kept (mode 600) in data_dir."""
        if self.patient_key:
            return self.patient_key.encode()
        path = self.data_dir / "patient.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


def mask_url(url: str | None) -> str:
    """A URL with its password replaced by ***, for printing and logging."""
    if not url:
        return ""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy-style URL: keep only what follows the credentials
        return url.rsplit("@", 1)[-1]


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
