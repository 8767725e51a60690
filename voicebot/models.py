"""Getting Vosk models onto disk: the catalogue, a verified download, an atomic unpack.

The catalogue is the JSON list Vosk itself publishes (``model-list.json``): one
object per model with ``name``, ``url``, ``md5``, ``size``, ``lang``, ``type``
("small", "big", "big-lgraph", ...), ``version`` and ``obsolete`` ("true"/"false").
A model is unpacked into a hidden temporary folder inside ``models_dir`` and
renamed into place only when complete, so an interrupted or corrupt download
never leaves a half-written model where the recognizer would find it.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from voicebot.errors import VoicebotError

DEFAULT_CATALOG_URL = "https://alphacephei.com/vosk/models/model-list.json"
TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20


class ModelDownloadError(VoicebotError):
    """A model could not be listed, fetched, verified or unpacked; one-line message."""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One model the catalogue offers; ``size_bytes`` is 0 when unknown."""

    name: str
    url: str
    lang: str = ""
    type: str = ""
    size_bytes: int = 0
    md5: str = ""
    sha256: str = ""
    obsolete: bool = False


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A Vosk model folder under models/.

    ``supports_grammar`` is True for models decoded with a lookahead graph
    (``graph/HCLr.fst`` + ``Gr.fst``: the small models and ``-lgraph`` ones),
    which accept a per-state grammar; big ``HCLG.fst`` models decode openly.
    """

    name: str
    path: Path
    supports_grammar: bool


def list_local_models(models_dir: Path) -> list[LocalModel]:
    """The Vosk models present in ``models_dir``, by name (hidden and partial folders skipped)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = []
    for path in sorted(models_dir.iterdir()):
        if path.name.startswith(".") or not path.is_dir() or not _is_vosk_model(path):
            continue
        lookahead = any((path / sub / "HCLr.fst").is_file() for sub in ("graph", "."))
        found.append(LocalModel(name=path.name, path=path, supports_grammar=lookahead))
    return found


def _is_vosk_model(path: Path) -> bool:
    return (path / "am" / "final.mdl").is_file() or (path / "final.mdl").is_file()


def fetch_catalog(catalog_url: str = DEFAULT_CATALOG_URL) -> list[CatalogEntry]:
    """The models the catalogue offers, with their urls made absolute."""
    raw = _read_url(catalog_url)
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ModelDownloadError(f"model catalogue at {catalog_url} is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ModelDownloadError(f"model catalogue at {catalog_url} is not a list of models")
    entries = []
    for item in items:
        if not isinstance(item, dict) or not item.get("name") or not item.get("url"):
            continue
        try:
            size = int(item.get("size") or 0)
        except (TypeError, ValueError):
            size = 0
        entries.append(
            CatalogEntry(
                name=str(item["name"]),
                url=urllib.parse.urljoin(catalog_url, str(item["url"])),
                lang=str(item.get("lang", "")),
                type=str(item.get("type", "")),
                size_bytes=size,
                md5=str(item.get("md5") or "").lower(),
                sha256=str(item.get("sha256") or "").lower(),
                obsolete=str(item.get("obsolete", "false")).lower() == "true",
            )
        )
    return entries


def download_model(
    name: str,
    models_dir: Path,
    *,
    catalog_url: str = DEFAULT_CATALOG_URL,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download model ``name`` from the catalogue into ``models_dir/name``; returns that folder.

    The archive is checked against the catalogue's sha256 (or md5) before it is
    unpacked. An existing model is kept unless ``force``.
    """
    models_dir = Path(models_dir)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelDownloadError(f"invalid model name {name!r}")
    target = models_dir / name
    if target.exists() and not force:
        raise ModelDownloadError(f"model {name} is already in {models_dir} (download again with --force)")

    entries = fetch_catalog(catalog_url)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        close = difflib.get_close_matches(name, [e.name for e in entries if not e.obsolete], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see https://alphacephei.com/vosk/models"
        raise ModelDownloadError(f"unknown model {name!r}{hint}")

    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelDownloadError(f"cannot create {models_dir}: {exc.strerror or exc}") from None
    with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".partial", dir=models_dir) as tmp:
        archive = Path(tmp) / "model.zip"
        _download(entry, archive, progress)
        _verify(entry, archive)
        unpacked = _unpack(entry, archive, Path(tmp) / "unpacked")
        _move_into_place(unpacked, target, Path(tmp) / "replaced")
    return target


def _read_url(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise ModelDownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(url, exc) from None


def _unreachable(url: str, exc: BaseException) -> ModelDownloadError:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, socket.timeout) or isinstance(exc, TimeoutError):
        reason = f"no answer within {TIMEOUT_S:g} s"
    host = urllib.parse.urlsplit(url).hostname or url
    detail = getattr(reason, "strerror", None) or str(reason)
    return ModelDownloadError(f"cannot reach {host}: {detail} (offline?)")


def _download(entry: CatalogEntry, archive: Path, progress: bool) -> None:
    try:
        with urllib.request.urlopen(entry.url, timeout=TIMEOUT_S) as response, archive.open("wb") as out:
            total = int(response.headers.get("Content-Length") or entry.size_bytes or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.name,
                file=sys.stderr, disable=not progress,
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise ModelDownloadError(f"download of {entry.name} failed: HTTP {exc.code} {exc.reason} ({entry.url})") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout) as exc:
        raise _unreachable(entry.url, exc) from None
    except http.client.HTTPException as exc:
        raise ModelDownloadError(f"download of {entry.name} broke off: {exc!r} (try again)") from None
    except OSError as exc:
        raise ModelDownloadError(f"cannot write {archive.parent}: {exc.strerror or exc}") from None


def _verify(entry: CatalogEntry, archive: Path) -> None:
    algorithm, expected = ("sha256", entry.sha256) if entry.sha256 else ("md5", entry.md5)
    if not expected:
        return
    digest = hashlib.new(algorithm)
    with archive.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelDownloadError(
            f"checksum mismatch for {entry.name}: {algorithm} is {digest.hexdigest()}, "
            f"the catalogue says {expected} (download damaged? try again)"
        )


def _unpack(entry: CatalogEntry, archive: Path, dest: Path) -> Path:
    """Extract the archive; returns the model's root (the archive's single top folder, if it has one)."""
    if not zipfile.is_zipfile(archive):
        raise ModelDownloadError(f"download of {entry.name} is not a zip archive ({entry.url})")
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n and not n.startswith("__MACOSX/")]
            for member in names:
                parts = Path(member).parts
                if Path(member).is_absolute() or ".." in parts:
                    raise ModelDownloadError(f"archive of {entry.name} holds an unsafe path: {member}")
            zf.extractall(dest, members=names)
    except zipfile.BadZipFile as exc:
        raise ModelDownloadError(f"archive of {entry.name} is damaged: {exc}") from None
    except OSError as exc:
        raise ModelDownloadError(f"cannot unpack {entry.name}: {exc.strerror or exc}") from None
    tops = [p for p in dest.iterdir() if p.name != "__MACOSX"]
    root = tops[0] if len(tops) == 1 and tops[0].is_dir() else dest
    if not _is_vosk_model(root):
        raise ModelDownloadError(f"archive of {entry.name} does not hold a Vosk model (no am/final.mdl)")
    return root


def _move_into_place(unpacked: Path, target: Path, trash: Path) -> None:
    """Rename the finished model into place; a replaced model goes to the temporary folder, deleted with it."""
    try:
        if target.exists():
            target.rename(trash)
        unpacked.rename(target)
    except OSError as exc:
        if trash.exists() and not target.exists():
            trash.rename(target)
        raise ModelDownloadError(f"cannot move the model into {target}: {exc.strerror or exc}") from None
