"""One settings object for the tool, read from ``SCREEN_*`` variables and an optional TOML file.

Precedence, highest first: explicit keyword arguments, environment variables, the config file
(``SCREEN_CONFIG`` or ``<user config dir>/config.toml``), the embedded defaults below.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pneumoscreen.model.runtime import RuntimeConfig
    from pneumoscreen.worker.ingest import IngestConfig

APP_NAME = "pneumoscreen"


class _Defaults:
    """Ingestion's own defaults (``AcceptancePolicy()``, ``DecodeOptions()``), restated so that
    reading the settings does not import pydicom: read-only commands must start fast.
    ``tests/worker/test_settings.py`` checks they stay equal."""

    modalities = ("CR", "DX")
    body_parts = ("CHEST", "THORAX", "LUNG", "TORSO", "")
    reject_views = ("LL", "RL", "LATERAL", "LAT", "RLD", "LLD")
    reject_intents = ("FOR PROCESSING",)
    non_image_modalities = ("SR", "PR", "KO", "DOC", "REG", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE",
                            "RTRECORD", "ECG", "HD", "AU", "PLAN", "FID", "RWV")
    max_pixels = 60_000_000
    reduced = True
    min_side = 256
    budget_bytes = 64 << 20
    percentiles = (0.5, 99.5)


_POLICY = _DECODE = _Defaults
# The floor of reduced decoding for small networks: at 1/8 of a 1024-px film, a JPEG 2000 level
# moved a 96-px network input by 0.036 (mean absolute) from full decoding; at 224 px, 0.017.
AUTO_MIN_SIDE = 224


def cron_fields(expression: str) -> tuple[str, str, str, str, str]:
    """The five fields of a cron expression (minute hour day month weekday), or ValueError."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expression!r} must have 5 fields: minute hour "
                         "day-of-month month day-of-week, e.g. '0 2 * * *'")
    return fields[0], fields[1], fields[2], fields[3], fields[4]


def ae_title(value: str) -> str:
    """A valid DICOM AE title (1-16 printable ASCII characters, no backslash), or ValueError."""
    text = value.strip()
    if not 1 <= len(text) <= 16 or not all(" " <= c <= "~" and c != "\\" for c in text):
        raise ValueError(f"AE title {value!r} must be 1-16 printable ASCII characters without "
                         "a backslash")
    return text


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_config_file() -> Path:
    explicit = os.environ.get("SCREEN_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


# Settings holding lists (or pairs): each accepts a JSON list or comma-separated values.
LIST_FIELDS = ("model_dirs", "accept_modalities", "accept_body_parts", "reject_view_positions",
               "reject_presentation_intents", "non_image_modalities", "inbox_dirs",
               "calling_ae_titles", "listen_sop_classes", "export_to", "window_percentiles",
               "scope_age_years")
DATABASE_SCHEMES = ("sqlite", "postgresql")


def list_or_commas(value: Any) -> Any:
    """A JSON list (``[...]``), or a string of comma-separated values; other types as they are."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        import json

        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not a JSON list ({exc}); write a JSON list or comma-separated "
                             "values") from None
    return [part.strip() for part in text.split(",") if part.strip()]


def check_database_url(url: str) -> None:
    """ValueError naming the fix unless ``url`` is a SQLite or PostgreSQL URL (read from its
    scheme, so the settings import no database driver)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    backend = scheme.split("+", 1)[0].lower()
    if backend not in DATABASE_SCHEMES:
        shown = f"{scheme!r} databases are" if scheme else "this URL is"
        raise ValueError(f"{shown} not supported; use sqlite:////path/file.sqlite3 or "
                         "postgresql+psycopg://user@host/db")


# The storage SOP classes `screen listen` accepts by default: CR, DX for presentation, DX for
# processing (pydicom's constants, written out: settings load for every command and pydicom
# only when needed; receive.scp.CR_DX_STORAGE is built from pydicom's and a test keeps them
# equal).
CR_DX_STORAGE = ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",
                 "1.2.840.10008.5.1.4.1.1.1.1.1")

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
    model_dirs: Annotated[list[Path], NoDecode] = Field(
        [], description="Folders a registered model version may be loaded from, besides the "
        "bundled folder and the configured model's folder.")
    task_size: int = Field(128, ge=1, le=65536, description="Images per queued task.")
    patient_key: str | None = Field(
        None, description="Key for pseudonymising patient ids (at least 32 bytes); default: "
        "made once in data_dir (without a broker only)."
    )
    audit_key_file: Path | None = Field(
        None, description="A file holding the audit chain's key (at least 32 bytes, mode 600); "
        "default: derived from the patient key.")
    signing_key_file: Path | None = Field(
        None, description="Message signing (Celery's auth serializer): this process's private "
        "key (PEM). With signing_cert_file and signing_cert_store, every task message is signed "
        "and only signed ones are accepted.")
    signing_cert_file: Path | None = Field(
        None, description="Message signing: this process's certificate (PEM).")
    signing_cert_store: Path | None = Field(
        None, description="Message signing: a folder of the certificates whose messages are "
        "trusted.")
    patient_key_file: Path | None = Field(
        None, description="A file holding the pseudonym key (e.g. a Docker secret); with a "
        "broker, this or patient_key is required."
    )

    # Ingestion policy (what gets screened); data, not code branches. The defaults are
    # ingestion's own (AcceptancePolicy, DecodeOptions): one source of truth.
    accept_modalities: Annotated[list[str], NoDecode] = list(_POLICY.modalities)
    accept_body_parts: Annotated[list[str], NoDecode] = list(_POLICY.body_parts)
    reject_view_positions: Annotated[list[str], NoDecode] = list(_POLICY.reject_views)
    max_pixels: int = Field(
        _DECODE.max_pixels, ge=1, description="Rows*Columns limit (decompression bombs)."
    )
    max_file_bytes: int | None = Field(
        None, ge=1, description="Image files larger than this are refused from their size alone, "
        "before hashing or parsing; default: max_pixels x 2 bytes x 2 + 64 MiB.",
    )
    reduced_resolution: bool = Field(
        _DECODE.reduced, description="Decode at the resolution the network needs (J2K levels, "
        "JPEG DCT scaling)."
    )
    reduced_min_side: int = Field(
        0, ge=0,
        description="Reduced decoding keeps at least this many pixels per side (at least 64); "
        f"0 = the model's input size but at least 224 (a deeper wavelet level drifts from full "
        f"decoding), or {_DECODE.min_side} where no model is involved.",
    )
    decode_budget_mb: int = Field(
        _DECODE.budget_bytes >> 20, ge=1,
        description="Memory one decode may produce (rows x columns x samples x bytes, checked "
        "from the headers before decoding; reduced decoding counts its reduced size), MiB.",
    )
    reject_presentation_intents: Annotated[list[str], NoDecode] = list(_POLICY.reject_intents)
    non_image_modalities: Annotated[list[str], NoDecode] = list(_POLICY.non_image_modalities)
    window_percentiles: Annotated[tuple[float, float], NoDecode] = Field(
        _DECODE.percentiles, description="Robust window when the file has no VOI LUT or window."
    )

    # Worker runtime.
    decode_threads: int = Field(2, ge=1, le=64, description="Threads decoding the next chunk "
                                "when decode_processes is 0.")
    decode_processes: int = Field(
        2, ge=0, le=64,
        description="Processes decoding the next chunk (C decoders hold the GIL, and a process "
        "can be stopped when it overruns decode_timeout); 0 = threads in the worker itself, with "
        "no time limit.",
    )
    decode_timeout: float = Field(
        60.0, gt=0, description="Seconds one file may take to decode (decode_processes > 0).")
    chunk_size: int = Field(
        32, ge=1, le=4096,
        description="Images per model call (a chunk) inside a task; the next chunk decodes "
        "meanwhile.",
    )
    visibility_timeout: int = Field(
        3600, ge=5,
        description="Seconds before Redis redelivers an unacknowledged task; also the lease "
        "after which an image left processing by a dead worker is screened again. Keep it "
        "longer than any task takes (and than task_time_limit). A killed task comes back at "
        "the first sweep after this long; sweeps run every quarter of it (2-100 s).",
    )
    task_time_limit: int = Field(
        1800, ge=10, description="Hard time limit of one screening task (s).")
    sweep_seconds: int = Field(
        300, ge=0,
        description="Every this many seconds (Celery beat), and once when a worker starts, "
        "images left queued or processing past their lease with no live task on the broker "
        "(say, after a Redis restart) are enqueued again; 0 turns the periodic sweep off.",
    )
    device: str | None = Field(None, description="TensorFlow device, e.g. /GPU:0; default: auto.")
    mixed_precision: bool = Field(False, description="float16 compute on GPU (mixed_float16).")
    memory_growth: bool = Field(True, description="Allocate GPU memory as needed.")
    tf_intra_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads; 0 = auto.")
    tf_inter_threads: int = Field(0, ge=0, description="TensorFlow inter-op threads; 0 = auto.")
    gpu_per_process: bool = Field(
        False, description="With --concurrency N on N GPUs: pool process i sees only GPU i."
    )

    # Explanations and the intended-use guard.
    heatmaps: Literal["flagged", "all", "none"] = Field(
        "flagged", description="Grad-CAM maps for: flagged images, all screened ones, none.")
    scope_age_years: Annotated[tuple[float, float], NoDecode] = Field(
        (0.0, 10.0), description="The validated age range (years): the training films are "
        "pediatric. Older or younger patients are marked outside scope.")

    # Sending results back (DICOM SR, heatmap SC): see worker/export.
    export_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Where results go after screening: dicom://AET@host:port "
        "(C-STORE), http(s)://host/.../dicom-web (STOW-RS), file:///folder. A JSON list, or "
        "comma-separated.")
    export_ae_title: str = Field(
        "PNEUMOSCREEN", min_length=1, max_length=16,
        description="Our calling AE title for C-STORE exports.")
    export_timeout: float = Field(
        30.0, gt=0, le=600, description="Seconds for one network step of an export (connect, "
        "association, each response).")
    export_retries: int = Field(
        8, ge=0, le=100, description="Unused since the export outbox (retries go on until "
        "export_give_up_after); kept so that existing configurations still load.")
    export_retry_delay: float = Field(
        30.0, ge=0.1, le=3600, description="Seconds before the first retry of an export; "
        "doubled each time, at most export_retry_max_delay.")
    export_retry_max_delay: float = Field(
        3600.0, ge=1, le=86400, description="Longest wait between two tries of an export (s).")
    export_give_up_after: float = Field(
        7 * 86400.0, ge=1, le=365 * 86400, description="An export still not delivered this many "
        "seconds after it was first due is failed, with its last error (default 7 days).")
    export_outbox_seconds: float = Field(
        10.0, ge=0.5, le=3600, description="How often the outbox looks for exports due (in the "
        "worker's beat, `screen listen` and an embedded screening run).")
    export_trusted_network: bool = Field(
        False, description="Allow credentials in an http:// (not https://) DICOMweb destination: "
        "only on a network you trust, as they travel in clear.")
    export_tls_ca: Path | None = Field(
        None, description="PEM CA file to verify a dicoms:// PACS (default: the system's).")
    export_tls_cert: Path | None = Field(
        None, description="PEM client certificate shown to a dicoms:// PACS that asks for one.")
    export_tls_key: Path | None = Field(None, description="PEM private key of export_tls_cert.")

    # Nightly runs.
    inbox_dirs: Annotated[list[Path], NoDecode] = []
    nightly_cron: str = Field("0 2 * * *", description="Celery beat schedule for nightly runs.")
    nightly_timezone: str = Field("UTC", description="Time zone of nightly_cron (IANA name).")

    # Receiving over DICOM (`screen listen`).
    listen_host: str = Field("127.0.0.1", description="Address `screen listen` binds to "
                             "(0.0.0.0 for every interface, e.g. in a container).")
    listen_port: int = Field(11112, ge=1, le=65535, description="DICOM port of `screen listen`.")
    listen_ae_title: str = Field("PNEUMOSCREEN", description="Our AE title (the called AE).")
    calling_ae_titles: Annotated[list[str], NoDecode] = Field(
        [], description="Calling AE titles allowed to send to `screen listen`; empty refuses "
        "everyone.")
    study_stable_seconds: float = Field(
        30.0, ge=0, le=86400, description="A received study is registered and enqueued once no "
        "new instance arrived for this long (Orthanc's stable-study rule).")
    listen_sop_classes: Annotated[list[str], NoDecode] = Field(
        list(CR_DX_STORAGE),
        description="Storage SOP classes `screen listen` accepts (default CR, DX for "
        "presentation, DX for processing); others are refused.")
    listen_tls_cert: Path | None = Field(None, description="PEM certificate: listen over TLS.")
    listen_tls_key: Path | None = Field(None, description="PEM private key of listen_tls_cert.")
    listen_tls_ca: Path | None = Field(
        None, description="PEM CA file: with TLS, senders must present a certificate it signed.")
    listen_max_associations: int = Field(8, ge=1, le=256,
                                         description="Concurrent associations accepted.")
    listen_max_pdu: int = Field(65536, ge=4096, le=4194304, description="Maximum PDU we receive.")
    listen_timeout: float = Field(60.0, ge=1, le=3600,
                                  description="ACSE, DIMSE and network timeouts (s).")
    listen_max_per_address: int = Field(
        4, ge=1, le=256, description="Connections one network address may hold open at once; "
        "more are closed at once, before anything is read.")
    listen_request_deadline: float = Field(
        10.0, ge=1, le=600, description="Seconds from a connection to its complete association "
        "request (TLS handshake included); a slower peer is cut before any AE-title check.")
    spool_max_gb: float = Field(
        0.0, ge=0, description="The spool's size limit (GB; 0: none): beyond it a C-STORE is "
        "answered 0xA700 (out of resources).")
    spool_min_free_gb: float = Field(
        1.0, ge=0, description="Free space to keep on the spool's disk (GB): below it a C-STORE "
        "is answered 0xA700.")
    spool_retention_days: float | None = Field(
        None, ge=0, description="Delete a spooled file this many days after its study is final "
        "and its result delivered (default: keep every file).")

    # The reading list in a browser (`screen web`) and Prometheus metrics.
    web_host: str = Field("127.0.0.1", description="Address `screen web` binds to.")
    web_port: int = Field(8700, ge=1, le=65535, description="Port of `screen web`.")
    web_secret_key_file: Path | None = Field(
        None, description="A file holding the key that signs session cookies (e.g. a Docker "
        "secret, at least 32 bytes); default: made once in data_dir (web.key).")
    web_secure_cookies: bool = Field(
        False, description="Send the session cookie over HTTPS only (set it behind a TLS "
        "proxy).")
    web_session_hours: float = Field(12.0, gt=0, le=720,
                                     description="A session lasts this long.")
    web_login_attempts: int = Field(
        5, ge=1, le=1000, description="Failed sign-ins per user name and per client address "
        "within web_login_window seconds before sign-in is refused for that window.")
    web_login_window: float = Field(300.0, ge=1, le=86400,
                                    description="The window of web_login_attempts (s).")
    web_trusted_user_header: str | None = Field(
        None, description="Single sign-on behind a trusted reverse proxy: the request header "
        "(e.g. X-Remote-User) naming an existing, enabled user. Off by default; honoured only "
        "from web_trusted_proxies.")
    web_trusted_proxies: list[str] = Field(
        ["127.0.0.1", "::1"], description="Client addresses whose web_trusted_user_header is "
        "believed.")
    web_public_metrics: bool = Field(
        False, description="Serve /metrics without a session (for a Prometheus on a trusted "
        "network); otherwise it needs one.")
    web_public_healthz: bool = Field(True, description="Serve /healthz without a session.")
    web_refresh_seconds: float = Field(10.0, ge=1, le=3600,
                                       description="The reading list refreshes this often.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="`screen worker` and `screen listen` serve Prometheus "
        "/metrics on this port (0: none).")
    metrics_host: str = Field("127.0.0.1", description="Address of that /metrics.")
    monitor_days: int = Field(30, ge=1, le=365,
                              description="Days the monitoring page and its plots cover.")

    @field_validator("listen_ae_title")
    @classmethod
    def _one_ae_title(cls, value: str) -> str:
        return ae_title(value)

    @field_validator("listen_sop_classes")
    @classmethod
    def _uids(cls, value: list[str]) -> list[str]:
        if value == list(CR_DX_STORAGE):
            return value  # pydicom's own (a test keeps them equal): no import of the ingester
        # Imported here: settings load for every command, the ingester only when this is set.
        from pneumoscreen.worker.ingest.vr import is_uid

        for uid in value:
            if not is_uid(uid):
                raise ValueError(f"{uid!r} is not a DICOM UID")
        return value

    @field_validator("calling_ae_titles")
    @classmethod
    def _ae_titles(cls, value: list[str]) -> list[str]:
        return [ae_title(v) for v in value]

    @field_validator("nightly_cron")
    @classmethod
    def _five_cron_fields(cls, value: str) -> str:
        cron_fields(value)
        return value

    @field_validator("reduced_min_side")
    @classmethod
    def _min_side_floor(cls, value: int) -> int:
        if 0 < value < 64:
            raise ValueError("reduced_min_side must be 0 (the model's input size) or at least 64")
        return value

    @field_validator(*LIST_FIELDS, mode="before")
    @classmethod
    def _list_or_commas(cls, value: Any) -> Any:
        """A JSON list, or one or more values separated by commas (a plain value is a list of
        one): ``SCREEN_CALLING_AE_TITLES=ORTHANC`` and ``SCREEN_INBOX_DIRS=/a,/b`` both work."""
        return list_or_commas(value)

    @field_validator("database_url", mode="after")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        if value is not None:
            check_database_url(value)
        return value

    @field_validator("database_url", "broker_url", "result_backend", "patient_key_file",
                     "audit_key_file",
                     "signing_key_file", "signing_cert_file", "signing_cert_store",
                     "web_secret_key_file", "web_trusted_user_header", mode="before")
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
        from pneumoscreen.db.session import may_create

        if may_create():  # a read-only command creates nothing, not even the data directory
            private_dir(self.data_dir)
        return f"sqlite:///{self.data_dir / 'pneumoscreen.sqlite3'}"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction on the configured database."""
        from pneumoscreen.db.queries import DEFAULT_MODEL_KEY
        from pneumoscreen.db.session import session_scope
        from pneumoscreen.model.names import sidecar_sha256

        with session_scope(self.effective_database_url) as session:
            # The lists show the default model's predictions (db.queries): name it.
            session.info[DEFAULT_MODEL_KEY] = sidecar_sha256(self.model_path)
            yield session

    def ingest_config(self, *, reduced: bool | None = None, input_size: int | None = None,
                      with_key: bool = True) -> IngestConfig:
        """What ingestion is told: the acceptance policy, decoder options and pseudonym key.

        ``input_size``: the model's, the floor of reduced decoding unless reduced_min_side is set.
        ``with_key=False``: no pseudonym key (showing a film pseudonymises nothing: the web).
        """
        from pneumoscreen.worker.ingest import AcceptancePolicy, DecodeOptions, IngestConfig

        policy = AcceptancePolicy.of(
            modalities=self.accept_modalities, body_parts=self.accept_body_parts,
            reject_views=self.reject_view_positions,
            reject_intents=self.reject_presentation_intents,
            non_image_modalities=self.non_image_modalities)
        decode = DecodeOptions(
            max_pixels=self.max_pixels,
            reduced=self.reduced_resolution if reduced is None else reduced,
            min_side=self.reduced_min_side or (max(input_size, AUTO_MIN_SIDE) if input_size
                                               else _DECODE.min_side),
            budget_bytes=self.decode_budget_mb << 20,
            percentiles=(float(self.window_percentiles[0]), float(self.window_percentiles[1])))
        return IngestConfig(policy, decode, self.effective_patient_key() if with_key else None,
                            max_file_bytes=self.max_file_bytes)

    def runtime_config(self) -> RuntimeConfig:
        """TensorFlow's runtime settings (threads computed when left at 0)."""
        from pneumoscreen.model.runtime import auto_runtime

        return auto_runtime(device=self.device, mixed_precision=self.mixed_precision,
                            memory_growth=self.memory_growth,
                            intra_threads=self.tf_intra_threads,
                            inter_threads=self.tf_inter_threads,
                            decode_threads=self.decode_processes or self.decode_threads)

    @property
    def signing(self) -> tuple[Path, Path, Path] | None:
        """(key, certificate, certificate store) when message signing is configured; all three
        or none (ValueError naming the missing ones)."""
        parts = {"SCREEN_SIGNING_KEY_FILE": self.signing_key_file,
                 "SCREEN_SIGNING_CERT_FILE": self.signing_cert_file,
                 "SCREEN_SIGNING_CERT_STORE": self.signing_cert_store}
        missing = [name for name, value in parts.items() if value is None]
        if len(missing) == len(parts):
            return None
        if missing:
            raise ValueError(f"message signing needs all three settings; missing: "
                             f"{', '.join(missing)}")
        return self.signing_key_file, self.signing_cert_file, self.signing_cert_store  # type: ignore[return-value]

    @property
    def eager(self) -> bool:
        """No broker configured: tasks run in this process."""
        return self.broker_url is None

    def effective_patient_key(self) -> bytes:
        """The pseudonymisation key: SCREEN_PATIENT_KEY, else SCREEN_PATIENT_KEY_FILE, else
        (no broker only) one generated once and kept (mode 600) in data_dir.

        PatientKeyError for a key under 32 bytes, an empty or unreadable key file, or a broker
        with no explicit key (the submitter and every worker must share one key).
        """
        if self.patient_key is not None:
            key, source = self.patient_key.encode(), "SCREEN_PATIENT_KEY"
        elif self.patient_key_file is not None:
            source = f"the key file {self.patient_key_file}"
            try:
                check_key_file_mode(self.patient_key_file)
                key = self.patient_key_file.read_bytes().strip()
            except OSError as exc:
                raise PatientKeyError(f"cannot read {source}: {exc.strerror}") from exc
        elif self.broker_url is not None:
            raise PatientKeyError(
                "with a broker configured, the submitter and every worker must share one patient "
                "key: set SCREEN_PATIENT_KEY_FILE (or SCREEN_PATIENT_KEY) to the same key "
                "everywhere (e.g. `openssl rand -hex 32 > patient.key`)")
        else:
            path = self.data_dir / "patient.key"
            source = f"the key file {path}"
            from pneumoscreen.db.session import may_create

            if not path.exists() and not may_create():
                raise PatientKeyError(f"no patient key at {path}, and this command only reads: "
                                      "set SCREEN_PATIENT_KEY_FILE to the key the database was "
                                      "written with")
            if not path.exists():
                private_dir(self.data_dir)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:  # another process created it first
                    pass
                else:
                    with os.fdopen(fd, "w") as fh:
                        fh.write(secrets.token_hex(32))
            key = path.read_bytes().strip()
        if len(key) < MIN_KEY_BYTES:
            raise PatientKeyError(
                f"the patient key from {source} is {len(key)} bytes; it needs at least "
                f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)")
        weakness = key_weakness(key)
        if weakness:
            raise PatientKeyError(
                f"the patient key from {source} is too easy to guess ({weakness}); make a "
                "random one, e.g. `openssl rand -hex 32`")
        return key

    def effective_audit_key(self) -> bytes | None:
        """SCREEN_AUDIT_KEY_FILE's key (checked like the patient key), or None: derived."""
        if self.audit_key_file is None:
            return None
        source = f"the audit key file {self.audit_key_file}"
        try:
            check_key_file_mode(self.audit_key_file)
            key = self.audit_key_file.read_bytes().strip()
        except OSError as exc:
            raise PatientKeyError(f"cannot read {source}: {exc.strerror}") from exc
        weakness = (f"{len(key)} bytes, under {MIN_KEY_BYTES}" if len(key) < MIN_KEY_BYTES
                    else key_weakness(key))
        if weakness:
            raise PatientKeyError(f"{source} holds a weak key ({weakness}); make a random one, "
                                  "e.g. `openssl rand -hex 32`")
        return key

    @property
    def patient_key_source(self) -> str:
        """Where the pseudonym key comes from, for `screen config` (never the key itself)."""
        if self.patient_key is not None:
            return "*** (SCREEN_PATIENT_KEY)"
        if self.patient_key_file is not None:
            return f"*** (the key file {self.patient_key_file})"
        if self.broker_url is not None:
            return "(none: a broker needs SCREEN_PATIENT_KEY_FILE or SCREEN_PATIENT_KEY)"
        return f"*** (generated, in {self.data_dir / 'patient.key'})"


class PatientKeyError(ValueError):
    """The pseudonym key is missing, too short or unreadable (one line naming the fix)."""


MIN_KEY_BYTES = 32
# Estimated entropy a key must carry: the estimate of `openssl rand -hex 16` (128 random bits in
# 32 characters) is 110-125, of `openssl rand -hex 32` over 220; a word repeated far less.
# The Shannon estimate of a random 32-hex-digit key (128 bits) fell below 96 about 1 in 20,000
# times; 64 refused none of 300,000 random keys (hex 16, hex 32, urlsafe 32).
MIN_KEY_BITS = 64


def key_weakness(key: bytes) -> str | None:
    """Why ``key`` is an obvious pattern (a short repeated unit, a run of consecutive characters,
    too few distinct characters, too little estimated entropy), or None.

    The estimate is the key's length times the Shannon entropy of its character frequencies:
    a crude upper bound that a random key passes easily and a pattern does not.
    """
    import math
    from collections import Counter

    n = len(key)
    for unit in range(1, n // 2 + 1):
        if n % unit == 0 and key[:unit] * (n // unit) == key:
            return f"the same {unit} character{'s' if unit > 1 else ''} repeated"
    steps = [key[i + 1] - key[i] for i in range(n - 1)]
    if sum(abs(step) <= 1 for step in steps) >= 0.75 * len(steps):
        return "mostly runs of consecutive or equal characters"
    counts = Counter(key)
    if len(counts) < 8:
        return f"only {len(counts)} distinct characters"
    bits = -sum(c * math.log2(c / n) for c in counts.values())
    if bits < MIN_KEY_BITS:
        return f"about {bits:.0f} bits of entropy, under {MIN_KEY_BITS}"
    return None


def check_key_file_mode(path: Path) -> None:
    """PatientKeyError when a key file is readable by its group or others (as ssh refuses a
    private key); OSError when it cannot be read at all."""
    mode = path.stat().st_mode
    # A Docker secret under /run/secrets is private to its container whatever its mode.
    if mode & 0o077 and not path.resolve().is_relative_to("/run/secrets"):
        raise PatientKeyError(
            f"the key file {path} is readable by others (mode {mode & 0o777:o}): "
            f"run `chmod 600 {path}`")


def private_dir(path: Path) -> Path:
    """Create ``path`` as 0700, or tighten it to 0700 when it is ours and open to others (the
    data directory holds the database and the key)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077 and not st.st_mode & 0o1000:
        path.chmod(0o700)
    return path


def mask_url(url: str | None) -> str:
    """A URL with every credential replaced by ***, for printing and logging."""
    if not url:
        return ""
    return mask_credentials(url)


# The user information of a URL: everything between "://" and the LAST "@" of the word (a
# password may hold "/" or "@"); and the values of query parameters that carry secrets.
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s]*)@(?=[^@\s]*(\s|$))")
_SECRET_PARAM = re.compile(
    r"([?&;](?:password|passwd|pwd|pass|token|access_token|api[_-]?key|key|secret|auth|"
    r"authorization|sig|signature)=)[^&#;\s]*", re.IGNORECASE)


def _userinfo(match: re.Match[str]) -> str:
    scheme, info = match.group(1), match.group(2)
    user, colon, _ = info.partition(":")
    if colon:  # user:password -> user:***
        return f"{scheme}{user}:***@"
    if scheme.lower() in ("dicom://", "dicoms://"):  # an AE title, not a credential
        return match.group(0)
    return f"{scheme}***@"  # a lone token


def mask_credentials(text: str) -> str:
    """``text`` with a URL's password (``user:***@``), a lone token (``***@``) and secret
    query values (``?password=***``) masked; a dicom:// URL's AE title stays."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(_userinfo, text))



@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
