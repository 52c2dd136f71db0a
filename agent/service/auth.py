"""Who may use the server: the bearer token, where it comes from, and how a request's is
judged.

The token comes from ``--token``, ``--token-file`` or ``$PARLEY_TOKEN`` (in that order;
the two flags together are refused as ambiguous). ``--token`` shows in ``ps`` to every
user of the machine, so the other two are the ones to use on a shared host.

Browsers cannot set headers on a WebSocket, so a page sends the token as a WebSocket
subprotocol instead: ``parley-token.<token in unpadded base64url>`` (any printable token
survives that encoding), or ``openai-insecure-api-key.<token>`` as the Realtime API's own
browser clients do. Either keeps the token out of the URL, where proxies and logs keep it.

A request's token is compared byte for byte with ``hmac.compare_digest``: one that differs
in any byte, whitespace included, is refused, and how long a refusal takes does not tell
how much of a guess was right.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from websockets.datastructures import Headers

from parley.errors import ConfigError

TOKEN_ENV = "PARLEY_TOKEN"
TOKEN_SUBPROTOCOLS = ("parley-token.", "openai-insecure-api-key.")
"""Prefixes of the subprotocols that carry a token: ours (base64url), the Realtime API's."""
# A token file holds a few dozen bytes. Reading no more than this keeps a wrong path
# (/dev/zero, a log file) from hanging the start or filling memory.
MAX_TOKEN_FILE_BYTES = 4096


class AuthHeaderError(ValueError):
    """A request whose credentials cannot be judged: more than one Authorization header
    (which one would count is up to each proxy on the way, so none does)."""


def resolve_token(
    token: str | None, token_file: str | os.PathLike | None, environ: Mapping[str, str] = os.environ
) -> tuple[str | None, str | None]:
    """The server's bearer token and where it came from (for the log), or ``(None, None)``
    when none is set. A :class:`ConfigError` (one line) says what is wrong with a source."""
    if token is not None and token_file is not None:
        raise ConfigError("pass --token or --token-file, not both")
    if token is not None:
        return check_token(token, "--token"), "--token"
    if token_file is not None:
        return check_token(_read_token_file(Path(token_file)), f"--token-file {token_file}"), (
            "--token-file"
        )
    if TOKEN_ENV in environ:
        return check_token(environ[TOKEN_ENV], f"${TOKEN_ENV}"), f"${TOKEN_ENV}"
    return None, None


def _read_token_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(
            f"--token-file {path}: more than {MAX_TOKEN_FILE_BYTES} bytes, not a token file"
        )
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file {path}: not ASCII text") from None
    # Editors and `echo` end the file with a newline; that is not part of the token.
    return text.removesuffix("\n").removesuffix("\r")


def check_token(token: str, source: str) -> str:
    """``token`` if a client can send it; a :class:`ConfigError` naming ``source`` if not."""
    # A client can only send what survives an HTTP header: the parser strips spaces at
    # either end, so a token with them could never match; refuse it up front instead.
    if not token:
        raise ConfigError(f"the token from {source} is empty")
    if not (token.isascii() and token.isprintable()):
        raise ConfigError(f"the token from {source} must be printable ASCII on one line")
    if token != token.strip():
        raise ConfigError(f"the token from {source} starts or ends with whitespace")
    return token


def authorized(headers: Headers, token: str) -> bool:
    """Whether ``headers`` carry ``Authorization: Bearer <token>`` exactly or, without an
    Authorization header, offer the token as a subprotocol; raises
    :class:`AuthHeaderError` for a request with more than one Authorization header or more
    than one token among its subprotocols (each offer would be one more guess)."""
    values = headers.get_all("Authorization")
    if len(values) > 1:
        raise AuthHeaderError(f"{len(values)} Authorization headers; send exactly one")
    expected = token.encode("ascii")
    if not values:
        offered = subprotocol_token(headers)
        return offered is not None and hmac.compare_digest(offered, expected)
    scheme, sep, given = values[0].partition(" ")
    # Header values are decoded as ISO-8859-1 (websockets), so this gives back the bytes
    # that came over the wire; the token itself is ASCII (checked at start-up).
    return (
        sep == " "
        and scheme.lower() == "bearer"  # the scheme is case-insensitive (RFC 9110 11.1)
        and hmac.compare_digest(given.encode("iso-8859-1"), expected)
    )


def subprotocol_token(headers: Headers) -> bytes | None:
    """The token a browser offered as a WebSocket subprotocol (see the module's doc), or
    None; more than one offer is an :class:`AuthHeaderError`."""
    offered = [
        item.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for item in value.split(",")
    ]
    bearing = [item for item in offered if item.startswith(TOKEN_SUBPROTOCOLS)]
    if len(bearing) > 1:
        raise AuthHeaderError(f"{len(bearing)} tokens among the subprotocols; offer one")
    if not bearing:
        return None
    ours, theirs = TOKEN_SUBPROTOCOLS
    item = bearing[0]
    if item.startswith(theirs):
        return item[len(theirs) :].encode("iso-8859-1")
    encoded = item[len(ours) :]
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None  # not base64url: it carries no token a client could have meant
