"""Model download against a real HTTP server on 127.0.0.1 serving a catalogue and a small zip."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from voicebot.models import ModelDownloadError, download_model, list_local_models

NAME = "vosk-model-small-xx-0.1"
MODEL_FILES = {
    "am/final.mdl": b"acoustic model",
    "conf/model.conf": b"--sample-frequency=16000\n",
    "graph/HCLr.fst": b"lookahead graph",
    "graph/Gr.fst": b"grammar fst",
    "README": b"a fake model for tests\n",
}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on a free port; yields (base_url, www_dir, write_catalog)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield base, www
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _make_zip(path: Path, files: dict[str, bytes], top: str | None = NAME) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"{top}/{name}" if top else name, data)
    return path.read_bytes()


def _publish(www: Path, base: str, data: bytes, *, name: str = NAME, md5: str | None = None, **extra) -> str:
    (www / f"{name}.zip").write_bytes(data)
    entry = {
        "lang": "xx", "lang_text": "Test", "name": name, "obsolete": "false", "size": len(data),
        "size_text": "1KiB", "type": "small", "url": f"{base}/{name}.zip", "version": "0.1",
        "md5": md5 if md5 is not None else hashlib.md5(data).hexdigest(),
        **extra,
    }
    others = [
        {"lang": "en-us", "name": "vosk-model-small-en-us-0.15", "obsolete": "false", "type": "small",
         "url": f"{base}/missing.zip", "md5": "0" * 32, "size": 1},
        {"lang": "en-us", "name": "vosk-model-en-us-0.22-lgraph", "obsolete": "false", "type": "big-lgraph",
         "url": f"{base}/missing.zip", "md5": "0" * 32, "size": 1},
    ]
    (www / "model-list.json").write_text(json.dumps([entry, *others]))
    return f"{base}/model-list.json"


def test_a_model_is_downloaded_verified_and_unpacked(server, tmp_path):
    base, www = server
    catalog = _publish(www, base, _make_zip(tmp_path / "m.zip", MODEL_FILES))
    models = tmp_path / "models"
    path = download_model(NAME, models, catalog_url=catalog, progress=False)
    assert path == models / NAME
    for rel, data in MODEL_FILES.items():
        assert (path / rel).read_bytes() == data
    assert sorted(p.name for p in models.iterdir()) == [NAME], "no temporary folders left behind"
    [local] = list_local_models(models)
    assert (local.name, local.path, local.supports_grammar) == (NAME, path, True)


def test_a_zip_without_a_top_folder_and_a_sha256_is_accepted(server, tmp_path):
    base, www = server
    data = _make_zip(tmp_path / "m.zip", MODEL_FILES, top=None)
    catalog = _publish(www, base, data, md5="", sha256=hashlib.sha256(data).hexdigest())
    path = download_model(NAME, tmp_path / "models", catalog_url=catalog, progress=False)
    assert (path / "am" / "final.mdl").read_bytes() == b"acoustic model"


def test_a_checksum_mismatch_leaves_nothing_in_models(server, tmp_path):
    base, www = server
    catalog = _publish(www, base, _make_zip(tmp_path / "m.zip", MODEL_FILES), md5="0" * 32)
    models = tmp_path / "models"
    with pytest.raises(ModelDownloadError, match="checksum mismatch") as err:
        download_model(NAME, models, catalog_url=catalog, progress=False)
    assert "\n" not in str(err.value)
    assert list(models.iterdir()) == []


def test_a_sha256_mismatch_is_caught_even_when_the_md5_matches(server, tmp_path):
    base, www = server
    catalog = _publish(www, base, _make_zip(tmp_path / "m.zip", MODEL_FILES), sha256="f" * 64)
    with pytest.raises(ModelDownloadError, match="sha256"):
        download_model(NAME, tmp_path / "models", catalog_url=catalog, progress=False)


def test_a_download_that_is_not_a_zip_is_refused(server, tmp_path):
    base, www = server
    catalog = _publish(www, base, b"<html>Not Found</html>")
    models = tmp_path / "models"
    with pytest.raises(ModelDownloadError, match="not a zip"):
        download_model(NAME, models, catalog_url=catalog, progress=False)
    assert list(models.iterdir()) == []


def test_a_zip_without_a_model_is_refused(server, tmp_path):
    base, www = server
    catalog = _publish(www, base, _make_zip(tmp_path / "m.zip", {"notes.txt": b"hello"}))
    with pytest.raises(ModelDownloadError, match="does not hold a Vosk model"):
        download_model(NAME, tmp_path / "models", catalog_url=catalog, progress=False)


def test_an_unknown_name_suggests_close_names(server, tmp_path):
    base, www = server
    catalog = _publish(www, base, _make_zip(tmp_path / "m.zip", MODEL_FILES))
    with pytest.raises(ModelDownloadError) as err:
        download_model("vosk-model-small-en-us-0.51", tmp_path / "models", catalog_url=catalog, progress=False)
    message = str(err.value)
    assert "unknown model" in message and "vosk-model-small-en-us-0.15" in message
    assert "\n" not in message


def test_an_unreachable_server_is_a_one_line_offline_error(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelDownloadError) as err:
        download_model(NAME, tmp_path / "models", catalog_url=f"http://127.0.0.1:{port}/model-list.json", progress=False)
    message = str(err.value)
    assert "cannot reach 127.0.0.1" in message and "offline" in message
    assert "\n" not in message


def test_a_missing_archive_is_an_http_error(server, tmp_path):
    base, www = server
    _publish(www, base, b"x")
    with pytest.raises(ModelDownloadError, match="HTTP 404"):
        download_model("vosk-model-small-en-us-0.15", tmp_path / "models", catalog_url=f"{base}/model-list.json",
                       progress=False)


def test_an_existing_model_is_kept_unless_forced(server, tmp_path):
    base, www = server
    catalog = _publish(www, base, _make_zip(tmp_path / "m.zip", MODEL_FILES))
    models = tmp_path / "models"
    old = models / NAME / "am"
    old.mkdir(parents=True)
    (old / "final.mdl").write_bytes(b"old model")
    with pytest.raises(ModelDownloadError, match="already"):
        download_model(NAME, models, catalog_url=catalog, progress=False)
    assert (old / "final.mdl").read_bytes() == b"old model"

    download_model(NAME, models, catalog_url=catalog, progress=False, force=True)
    assert (models / NAME / "am" / "final.mdl").read_bytes() == b"acoustic model"
    assert sorted(p.name for p in models.iterdir()) == [NAME]


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    base, www = server
    catalog = _publish(www, base, _make_zip(tmp_path / "m.zip", MODEL_FILES))
    download_model(NAME, tmp_path / "models", catalog_url=catalog, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert NAME in captured.err


def test_local_models_tell_lookahead_from_full_graph_models(tmp_path):
    (tmp_path / "small" / "am").mkdir(parents=True)
    (tmp_path / "small" / "am" / "final.mdl").write_bytes(b"")
    (tmp_path / "small" / "graph").mkdir()
    (tmp_path / "small" / "graph" / "HCLr.fst").write_bytes(b"")
    (tmp_path / "big" / "am").mkdir(parents=True)
    (tmp_path / "big" / "am" / "final.mdl").write_bytes(b"")
    (tmp_path / "big" / "graph").mkdir()
    (tmp_path / "big" / "graph" / "HCLG.fst").write_bytes(b"")
    (tmp_path / ".small.partial").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "README.md").write_text("models go here")
    found = {m.name: m.supports_grammar for m in list_local_models(tmp_path)}
    assert found == {"big": False, "small": True}
    assert list_local_models(tmp_path / "absent") == []
