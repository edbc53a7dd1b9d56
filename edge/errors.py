"""Every error we expect, mapped to an HTTP status and a JSON body in one table.

The packager, catalog and storage raise their own exceptions; this is the
only place that knows their HTTP meaning.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse

from origin.catalog import CatalogError
from origin.media import FlavorError
from origin.http_storage import StorageTimeout
from origin.storage import StorageError
from packager.errors import MediaError, NotFound, UnsupportedMedia
from packager.preview import EmptyPreview

from auth.content_keys import MissingPeriodKey

from .http import RangeNotSatisfiable
from .key_store import KeyStoreError
from .thumbnails import ThumbnailUnavailable
from .urls import BadRequest, NoSuchResource
from .viewer import Denied

log = logging.getLogger("vodgate.edge")

CLIENT_ERROR_CACHE = "public, max-age=10"  # a typo'd URL may be fixed soon: cache briefly
SERVER_ERROR_CACHE = "no-store"


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None, personal: bool = False) -> JSONResponse:
    """``personal``: the answer depends on who asked (access control): no shared cache may keep it."""
    cache = SERVER_ERROR_CACHE if personal or status >= 500 else CLIENT_ERROR_CACHE
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers={"Cache-Control": cache, **(headers or {})})


def response_for(exc: Exception) -> JSONResponse:
    """Map an exception raised while serving a media request to its response."""
    if isinstance(exc, Denied):
        return error_response(exc.status, exc.code, str(exc), personal=True)
    if isinstance(exc, EmptyPreview):
        return error_response(403, exc.code, str(exc), personal=True)
    if isinstance(exc, BadRequest):
        return error_response(400, exc.code, str(exc))
    if isinstance(exc, (NoSuchResource, CatalogError)):
        return error_response(404, exc.code, str(exc))
    if isinstance(exc, NotFound):
        return error_response(404, exc.code, str(exc))
    if isinstance(exc, ThumbnailUnavailable):  # logged by the thumbnailer
        return error_response(503, exc.code, str(exc))
    if isinstance(exc, (KeyStoreError, MissingPeriodKey)):  # logged by the key store, once a minute
        return error_response(503, exc.code, str(exc), {"Retry-After": "5"})
    if isinstance(exc, RangeNotSatisfiable):
        return error_response(416, "range_not_satisfiable", str(exc), {"Content-Range": f"bytes */{exc.length}"})
    if isinstance(exc, FlavorError):
        status = 415 if isinstance(exc.error, UnsupportedMedia) else 500
        return error_response(status, exc.error.code, f"flavor file {exc.key}: {exc.error}")
    if isinstance(exc, MediaError):
        log.warning("bad media: %s", exc)
        return error_response(500, exc.code, str(exc))
    if isinstance(exc, StorageTimeout):
        log.warning("storage timeout: %s", exc)
        return error_response(504, "storage_timeout", str(exc))
    if isinstance(exc, StorageError):
        log.warning("storage error: %s", exc)
        return error_response(502, "storage_error", str(exc))
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "unexpected server error (logged)")
