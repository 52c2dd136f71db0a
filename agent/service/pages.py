"""The browser client's files, served by ``serve`` at ``/`` and ``/web/<name>``.

The page is plain HTML and JavaScript modules kept in ``web/`` beside this module: no build
step, nothing fetched from anywhere but this server. Every file is read once, when the
server starts, so a request never touches the disk and no path from a request reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEB_DIR = Path(__file__).with_name("web")
PREFIX = "/web/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page may talk to this server only, and nothing may frame it. 'self' in connect-src
# covers ws:// and wss:// to the same host and port (CSP level 3).
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


class WebPages:
    """The files of the browser client, by request path."""

    def __init__(self, folder: Path = WEB_DIR) -> None:
        self.assets: dict[str, Asset] = {}
        for path in sorted(folder.iterdir()):
            kind = CONTENT_TYPES.get(path.suffix)
            if kind is not None and path.is_file():
                self.assets[PREFIX + path.name] = Asset(path.read_bytes(), kind)
        if PREFIX + "index.html" not in self.assets:
            raise FileNotFoundError(f"{folder}/index.html: the browser client is missing")
        self.assets["/"] = self.assets[PREFIX + "index.html"]

    def get(self, path: str) -> Asset | None:
        return self.assets.get(path)
