"""No token in any log line: one redaction applied to every record, whichever logger and handler.

Tokens travel in query strings, and query strings reach logs by several roads: uvicorn's access log
prints the request target, httpx logs every request an edge sends upstream ("HTTP Request: GET
http://origin/...?token=..."), and an exception's message may carry a URL. A filter on each handler
would miss the handlers ``uvicorn.run`` installs after ``vodgate serve`` configured logging (its
``dictConfig`` replaces the uvicorn loggers' handlers), so the redaction is done where every record
is made: :func:`install` wraps the log record factory, and each record is redacted once, before any
filter, handler or formatter sees it.

What is redacted (``auth.tokens.redact_text``): the value of every query parameter that vodgate would
read as a token (``token=`` / ``hdnts=``, percent-encoded names like ``%74oken=`` too), every native
token anywhere else in the line (``?%20token=%20vg1...``, an encoded URL in a parameter, dots written
``%2E``), and Akamai ``hmac=`` fields; and the user and password of every URL (``http://***@origin``:
httpx logs the URL of each request an edge sends to an upstream configured as ``http://user:pw@origin``,
and of each read from such a ``[storage] base_url``). The message, each argument (uvicorn's access
formatter reads them one by one, so their number and types are kept), the traceback and the stack text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Callable

from auth.tokens import redact_text as redact_tokens

_PLAIN = (int, float, bool, type(None))
_URL_CREDENTIALS = re.compile(r"(?<=//)[^/\s'\"@]+@")


def redact_text(text: str) -> str:
    """``text`` without tokens and without the credentials of any URL in it."""
    text = redact_tokens(text)
    return _URL_CREDENTIALS.sub("***@", text) if "@" in text else text


class RedactTokens(logging.Filter):
    """Rewrites a record in place so that no token survives in what it will print; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> None:
    if isinstance(record.msg, str):
        record.msg = redact_text(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_redact_arg(a) for a in args)
    elif isinstance(args, Mapping):
        record.args = {k: _redact_arg(v) for k, v in args.items()}
    if record.exc_info and not record.exc_text:  # formatted here, once: formatters reuse exc_text
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    # a token split over several arguments, or in a message object's str(): judge the whole line
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it as usual, with the redacted arguments
        return
    redacted = redact_text(message)
    if redacted != message:
        record.msg, record.args = redacted, ()


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _PLAIN):
        return value
    shown = str(value)  # httpx logs its URL objects: what %s would print
    redacted = redact_text(shown)
    return value if redacted == shown else redacted


def install() -> None:
    """Redact every log record made in this process from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts_tokens", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        redact_record(record)
        return record

    redacting: Callable[..., logging.LogRecord] = make_record
    redacting.redacts_tokens = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting)
