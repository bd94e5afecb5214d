"""optuna-dashboard for bonas studies, served safely.

``serve`` starts the dashboard on the study's storage and artifact store (the notes it shows are written
by bonas.results.notes), on 127.0.0.1 unless told otherwise, behind a small WSGI filter: artifacts are served only
as PNG/JPEG/JSON/CSV/text or as downloads (never as HTML or SVG, which could run script in the dashboard's
origin), uploads of other types are refused, and the "any origin may read" CORS header is dropped.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import os
import re
import sys
from pathlib import Path

from bonas.core.errors import UsageError
from bonas.study.storage import storage_of
from bonas.study.studies import Opened

INLINE_TYPES = {"image/png", "image/jpeg", "application/json", "text/csv", "text/plain"}
UPLOAD_TYPES = INLINE_TYPES | {"application/octet-stream"}
ARTIFACT_ID = re.compile(r"[0-9a-fA-F-]+")  # optuna-dashboard's own route pattern


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SafeArtifacts:
    """WSGI filter in front of optuna-dashboard's app (see the module docstring)."""

    def __init__(self, app, artifact_dir: str):
        self.app = app
        self.artifact_dir = artifact_dir

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "POST" and path.startswith("/api/artifacts/"):
            refused = self._refuse_upload(environ)
            if refused:
                body = json.dumps({"reason": refused}).encode()
                start_response("400 Bad Request", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
        if not path.startswith("/artifacts/"):
            return self.app(environ, start_response)
        artifact_id = path.rstrip("/").rsplit("/", 1)[-1]
        if not ARTIFACT_ID.fullmatch(artifact_id) or ".." in path:  # never a path: artifact ids are uuids
            body = b"No such artifact."
            start_response(
                "404 Not Found",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("X-Content-Type-Options", "nosniff")],
            )
            return [body]
        if not os.path.isfile(os.path.join(self.artifact_dir, artifact_id)):
            body = b"This artifact was removed: bonas keeps the files of the top-k trials only (artifacts.keep_top_k)."
            start_response(
                "410 Gone",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("X-Content-Type-Options", "nosniff")],
            )
            return [body]

        def filtered_start(status, headers, exc_info=None):
            headers = [(k, v) for k, v in headers if k.lower() != "access-control-allow-origin"]
            ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
            if ctype.split(";")[0].strip().lower() not in INLINE_TYPES:
                headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
                headers += [("Content-Type", "application/octet-stream"), ("Content-Disposition", "attachment")]
            headers.append(("X-Content-Type-Options", "nosniff"))
            headers.append(("Content-Security-Policy", "default-src 'none'; img-src 'self'; sandbox"))
            return start_response(status, headers, exc_info)

        return self.app(environ, filtered_start)

    @staticmethod
    def _refuse_upload(environ) -> str | None:
        import io

        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)  # the app reads it again
        try:
            filename = json.loads(raw or b"{}").get("filename", "")
        except ValueError:
            return None  # let the dashboard answer malformed requests itself
        mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if mimetype not in UPLOAD_TYPES:
            return f"bonas serves only PNG, JPEG, JSON, CSV, text and binary artifacts, not {mimetype} ({filename})"
        return None


def make_app(storage, artifact_dir: Path):
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    return SafeArtifacts(wsgi(storage, artifact_store=FileSystemArtifactStore(str(artifact_dir))), str(artifact_dir))


def serve(storage, artifact_dir: Path, host: str, port: int, quiet: bool = False) -> None:
    """Blocks, serving until interrupted (wsgiref, threaded: fine for one person browsing)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            if not quiet:
                super().log_message(*args)

    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"optuna\.importance")  # per page view otherwise
    httpd = make_server(host, port, make_app(storage, artifact_dir), server_class=Server, handler_class=QuietHandler)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


def run_dashboard(opened: Opened, host: str, port: int, allow_remote: bool, quiet: bool) -> None:
    """`bonas dashboard`: refuse a non-loopback address unless allowed, then serve the study."""
    from bonas.study.artifacts import artifact_dir

    if not is_loopback(host) and not allow_remote:
        raise UsageError(
            f"--host {host} would expose the dashboard, which has no authentication, beyond this machine; "
            "add --allow-remote if you mean it (or tunnel: ssh -L 8080:127.0.0.1:8080 host)"
        )
    folder = artifact_dir(opened.config, opened.url)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_loopback(host):
        print(
            f"bonas: warning: serving on {host}: anyone who can reach this port can read and change the study "
            "(no authentication)",
            file=sys.stderr,
        )
    print(
        f"optuna-dashboard for study {opened.study.study_name!r}: http://{host}:{port}/dashboard/ (artifacts: {folder}); "
        "Ctrl-C stops it",
        flush=True,
    )
    try:
        serve(storage_of(opened.study), folder, host, port, quiet=quiet)
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror}; choose another --port") from None
    except KeyboardInterrupt:
        pass
