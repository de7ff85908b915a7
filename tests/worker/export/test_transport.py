"""Transport security of results (issue 20, finding 9): C-STORE over TLS (dicoms://), no
credentials over plain http:// unless the network is declared trusted, every credential form
masked in `screen config`, `screen exports` and the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pydicom
import pytest
from live import free_port
from results import screened_study
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.export.destinations import DestinationError, parse_destination
from pneumoscreen.worker.export.run import export_study
from pneumoscreen.worker.receive.scp import CR_DX_STORAGE, ListenConfig, Receiver, tls_context
from pneumoscreen.worker.receive.spool import Spool
from pneumoscreen.worker.settings import Settings, get_settings, mask_credentials

runner = CliRunner()
SR_SC = ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7")


def test_c_store_export_over_tls(tmp_path: Path) -> None:
    """Our own listener over TLS (client certificates required) stands in for the PACS."""
    pytest.importorskip("cryptography", reason="cryptography makes the test's certificates")
    from certs import certificates

    certificates(tmp_path)
    server = tls_context(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    pacs = Receiver(ListenConfig(host="127.0.0.1", port=free_port(), ae_title="PACS",
                                 calling_ae_titles=("PNEUMOSCREEN",), ssl_context=server,
                                 sop_classes=(*CR_DX_STORAGE, *SR_SC)),
                    Spool(tmp_path / "pacs"), lambda _: None)
    pacs.start()
    url = get_settings().effective_database_url
    made = screened_study(tmp_path / "in", url)
    settings = Settings(database_url=url, data_dir=tmp_path / "data",
                        export_tls_ca=tmp_path / "ca.pem", export_tls_cert=tmp_path / "client.pem",
                        export_tls_key=tmp_path / "client.key")
    try:
        dest = parse_destination(f"dicoms://PACS@localhost:{pacs.port}")
        assert dest.label.startswith("dicoms://")
        outcome = export_study(made.study_uid, dest, settings)
        plain = export_study(made.study_uid, parse_destination(
            f"dicom://PACS@localhost:{pacs.port}"), settings)  # the same PACS in the clear
    finally:
        pacs.stop()
    assert outcome.status == "sent", outcome.error
    received = {pydicom.dcmread(f.path).Modality for f in Spool(tmp_path / "pacs").files()}
    assert received == {"SR", "OT"}
    assert plain.status == "pending"  # refused by the TLS-only peer: not delivered


@pytest.mark.parametrize("text", ["http://bob:hunter2@pacs/dicom-web",
                                  "http://tok3n@pacs:8042/dicom-web"])
def test_credentials_over_plain_http_are_refused_unless_trusted(text: str) -> None:
    with pytest.raises(DestinationError, match="in clear") as info:
        parse_destination(text)
    assert "hunter2" not in str(info.value) and "tok3n" not in str(info.value)
    assert parse_destination(text, trusted_network=True).label.count("***") == 1
    assert parse_destination(text.replace("http://", "https://"))  # TLS: fine


def test_every_credential_form_is_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    for text, secret in (("http://TOKEN1@host/x", "TOKEN1"),
                         ("https://u:pw2@h/dicom-web", "pw2"),
                         ("redis://:pw3@h:6379/0", "pw3"),
                         ("https://h/x?password=pw4&a=1", "pw4"),
                         ("https://h/x?access_token=pw5", "pw5")):
        assert secret not in mask_credentials(text), text
    assert mask_credentials("dicom://AET@h:104") == "dicom://AET@h:104"
    monkeypatch.setenv("SCREEN_EXPORT_TO", "https://TOKEN9@h/dicom-web")
    monkeypatch.setenv("SCREEN_BROKER_URL", "redis://TOKEN8@127.0.0.1:1/0")
    get_settings.cache_clear()
    config = runner.invoke(app, ["config", "--format", "json"])
    assert config.exit_code == 0 and "TOKEN9" not in config.stdout
    assert "TOKEN8" not in config.stdout
    screened_study(tmp_path / "in", get_settings().effective_database_url, heatmap=False)
    with caplog.at_level(logging.INFO):
        sent = runner.invoke(app, ["export", "--format", "json"])
    assert "TOKEN9" not in sent.stdout and "TOKEN9" not in caplog.text
    listed = runner.invoke(app, ["exports", "--format", "json"])
    assert "TOKEN9" not in listed.stdout
    assert json.loads(listed.stdout)[0]["destination"] == "https://***@h/dicom-web"
