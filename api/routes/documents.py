"""`/documents`: list, upload, ingest and remove the documents of the server's own index.

The running server's index object is the one updated, so retrieval sees a change at once.
Uploads are saved under `<workspace>/uploads/` with a sanitised file name (never a path that
the client sent); an upload never replaces a different file of the same name (409). `POST
/documents/ingest` takes a path on the server; resolved with its symlinks, it must lie inside
one of the `documents_roots` (default: `<workspace>/uploads` only), must not be or contain the
workspace's index, and the folder walk does not follow a link out of the roots, so a client
cannot make the server read arbitrary files. Every route needs an `admin` key.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import unicodedata
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Forbidden, PayloadTooLarge, Services, ServicesDep, require_admin
from api.schemas import AUTH_ERRORS, error_responses
from ragtune.errors import InputError, NotFoundError, RagtuneError
from ragtune.settings import Settings, load_settings

router = APIRouter(prefix="/documents", tags=["documents"],
                   dependencies=[Depends(require_admin)],
                   responses=error_responses(*AUTH_ERRORS, 409, 422, 503))

UPLOADS = "uploads"
MAX_NAME = 120
_UNSAFE = re.compile(r"[^\w.\- ()\[\]+,]")


class UploadConflict(RagtuneError):
    """An upload named like an uploaded file whose content differs."""

    http_status = 409


class NotAnIndex(RagtuneError):
    """The server's retriever is not a ragtune document index (a fake or a remote one)."""

    http_status = 409


class IngestRequest(BaseModel):
    """`POST /documents/ingest`."""

    model_config = ConfigDict(extra="ignore")

    path: str = Field(min_length=1, max_length=4096, description="A file or folder on the "
                      "server inside one of its documents_roots (a relative path is taken "
                      "inside the first root).")
    keep_missing: bool = Field(False, description="Keep the chunks of files that disappeared "
                               "from the folder.")


def document_id(path: str) -> str:
    """A stable id for a document (its real path hashed): safe in a URL, reveals nothing."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


def safe_filename(filename: str | None) -> str:
    """The last component of a client's file name, with only safe characters (never a path)."""
    name = unicodedata.normalize("NFC", (filename or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", _UNSAFE.sub("_", name)).strip(" .")
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    stem = stem.strip(" .")[: MAX_NAME - len(suffix) - 1] or "upload"
    return f"{stem}.{suffix.lower()}" if suffix else stem


# ---------------------------------------------------------------------------- helpers
def _settings(request: Request) -> Settings:
    """The app's settings (`app.state.settings`); without them, the workspace of the loaded
    index, else the environment's settings."""
    settings = getattr(request.app.state, "settings", None)
    if settings is not None:
        return settings
    services = getattr(request.app.state, "services", None)
    index_dir = getattr(services.assistant.retriever, "index_dir", None) if services else None
    return load_settings(workspace=Path(index_dir).parent) if index_dir else load_settings()


def _lock(request: Request) -> threading.Lock:
    """One writer at a time inside this server (the index's file lock covers other processes)."""
    lock = getattr(request.app.state, "documents_lock", None)
    if lock is None:
        lock = request.app.state.documents_lock = threading.Lock()
    return lock


def _index(services: Services, settings: Settings, *, create: bool) -> Any:
    """The server's HybridIndex. A server that started without one opens the workspace index
    once it exists (with `create`, builds it) and gives it to the Assistant for retrieval."""
    from retrieval.index import HybridIndex, open_index

    retriever = services.assistant.retriever
    if isinstance(retriever, HybridIndex):
        return retriever
    if retriever is not None:
        raise NotAnIndex(f"this server retrieves with {type(retriever).__name__}, not a ragtune "
                         "index, so documents cannot be managed here")
    try:
        index = open_index(settings, create=create)
    except NotFoundError:
        return None
    services.assistant.retriever = index
    services.index_loaded = True
    return index


def _row(record: Any, uploads: str) -> dict[str, Any]:
    return {"id": document_id(record.path), "source": record.source, "status": record.status,
            "error": record.error, "chunks": record.chunks, "format": record.format,
            "encoding": record.encoding, "size": record.size, "ingested_at": record.ingested_at,
            "uploaded": _inside(record.path, uploads)}


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _listing(index: Any, settings: Settings) -> dict[str, Any]:
    if index is None:
        return {"index": False, "documents": [], "stats": {}}
    uploads = os.path.realpath(settings.paths.root / UPLOADS)
    return {"index": True, "documents": [_row(r, uploads) for r in index.documents()],
            "stats": index.stats()}


def _ingest(services: Services, settings: Settings, lock: threading.Lock,
            paths: list[Path], keep_missing: bool) -> dict[str, Any]:
    """Ingest `paths` into the server's index (blocking); the report and the new listing."""
    from ingest.pipeline import IngestConfig, run_ingest
    from retrieval.index import embedder_spec

    with lock:
        index = _index(services, settings, create=True)
        cfg = IngestConfig.from_settings(paths, settings, embedder=embedder_spec(index.embedder),
                                         keep_missing=keep_missing,
                                         within=tuple(str(r) for r in settings.document_roots))
        report = run_ingest(cfg, index, progress=False)
        return {"report": report.to_dict(), "summary": report.summary(),
                **_listing(index, settings)}


def _allowed_path(raw: str, settings: Settings) -> Path:
    """`raw` resolved (symlinks followed) when it lies inside a document root and is not, nor
    contains, the workspace's index; else Forbidden (403) or InputError (422) with the reason."""
    if "\x00" in raw:
        raise InputError(repr(raw), "a path cannot contain a NUL character", field="path")
    if raw.startswith("~"):
        raise InputError(raw, "`~` is not expanded on the server; give a path inside a "
                         "document root", field="path")
    roots = [os.path.realpath(r) for r in settings.document_roots]
    index = os.path.realpath(settings.paths.index_dir)
    path = Path(raw)
    real = os.path.realpath(path if path.is_absolute() else Path(roots[0]) / path)
    if not any(_inside(real, root) for root in roots):
        raise Forbidden(f"{raw!r} is outside the folders this server may read "
                        f"(documents_roots: {', '.join(roots)}); copy the documents there "
                        "or upload them")
    if _inside(real, index) or _inside(index, real):
        raise Forbidden(f"{raw!r} is or contains the workspace's index {index}; name the "
                        "documents folder itself")
    if not os.path.exists(real):
        raise InputError(raw, "no such file or folder on the server")
    return Path(real)


def _same_content(a: Path, b: Path) -> bool:
    def digest(path: Path) -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    return a.stat().st_size == b.stat().st_size and digest(a) == digest(b)


async def _save_upload(upload: UploadFile, folder: Path, max_bytes: int) -> Path:
    """Stream an upload to `folder/<safe name>` via a temp file. The name is linked without
    replacing anything: the same bytes again are a no-op, different bytes a 409 (UploadConflict)
    saying so, so two uploads with one name never silently overwrite each other."""
    from ingest.discover import SUPPORTED_EXTENSIONS

    name = safe_filename(upload.filename)
    if Path(name).suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise InputError(upload.filename or name, "unsupported file type (supported: "
                         f"{' '.join(sorted(SUPPORTED_EXTENSIONS))})")
    target = folder / name
    tmp = folder / f".{name}.part-{os.getpid()}-{threading.get_ident()}-{id(upload)}"
    written = 0
    try:
        with open(tmp, "wb") as handle:
            while block := await upload.read(1 << 20):
                written += len(block)
                if written > max_bytes:
                    raise PayloadTooLarge(f"{upload.filename}: larger than {max_bytes} bytes "
                                          "(max_file_mb)")
                handle.write(block)
        try:
            os.link(tmp, target)  # atomic, and never replaces an existing file
        except FileExistsError:
            if not _same_content(tmp, target):
                raise UploadConflict(f"uploads/{name} already exists with different content; "
                                     "rename the file, or remove the indexed one first "
                                     "(DELETE /documents/{id})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------------------- routes
@router.get("")
async def list_documents(request: Request, services: ServicesDep) -> dict[str, Any]:
    """List the indexed documents with their status, chunk count and error, and index stats."""
    settings, lock = _settings(request), _lock(request)

    def listing() -> dict[str, Any]:
        with lock:
            return _listing(_index(services, settings, create=False), settings)

    return await run_in_threadpool(listing)


@router.post("", responses=error_responses(413))
async def upload_documents(request: Request, services: ServicesDep,
                           files: Annotated[list[UploadFile], File(description="Documents")]
                           ) -> dict[str, Any]:
    """Save uploaded files under <workspace>/uploads/ and ingest them into the index."""
    settings = _settings(request)
    if not files:
        raise InputError("files", "upload at least one file")
    if len(files) > settings.max_upload_files:
        raise PayloadTooLarge(f"{len(files)} files in one upload; the limit is "
                              f"{settings.max_upload_files} (max_upload_files)")
    folder = settings.paths.root / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    max_bytes = int(settings.max_file_mb * 1024 * 1024)
    saved = [await _save_upload(upload, folder, max_bytes) for upload in files]
    result = await run_in_threadpool(_ingest, services, settings, _lock(request),
                                     sorted(set(saved)), True)
    return {"saved": [p.name for p in saved], **result}


@router.post("/ingest", responses=error_responses(413))
async def ingest_path(body: IngestRequest, request: Request,
                      services: ServicesDep) -> dict[str, Any]:
    """Ingest a file or folder on the server (inside one of its documents_roots)."""
    settings = _settings(request)
    path = _allowed_path(body.path, settings)
    return await run_in_threadpool(_ingest, services, settings, _lock(request), [path],
                                   body.keep_missing)


@router.delete("/{doc_id}", responses=error_responses(404))
async def remove_document(doc_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    """Remove a document and its chunks from the index (an uploaded copy is deleted too)."""
    settings, lock = _settings(request), _lock(request)

    def remove() -> dict[str, Any]:
        with lock:
            index = _index(services, settings, create=False)
            found = next((r for r in (index.documents() if index else [])
                          if document_id(r.path) == doc_id), None)
            if found is None:
                raise NotFoundError(f"no document with id {doc_id!r} in the index; "
                                    "GET /documents lists them")
            with index.writer():
                chunks = index.remove_document(found.path)
            uploads = os.path.realpath(settings.paths.root / UPLOADS)
            if _inside(found.path, uploads):
                Path(found.path).unlink(missing_ok=True)
            return {"removed": found.source, "chunks_removed": chunks,
                    **_listing(index, settings)}

    return await run_in_threadpool(remove)
