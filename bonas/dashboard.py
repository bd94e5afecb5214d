"""optuna-dashboard for bonas studies: trial notes that explain each architecture, and a safe server.

Every trial gets a Markdown note (optuna-dashboard's note API): the architecture as a table of layers,
output shapes, parameters and FLOPs, totals, epochs run and why the trial ended. ``serve`` starts the
dashboard on the study's storage and artifact store, on 127.0.0.1 unless told otherwise, behind a small
WSGI filter: artifacts are served only as PNG/JPEG/JSON/CSV/text or as downloads (never as HTML or SVG,
which could run script in the dashboard's origin), uploads of other types are refused, and the
"any origin may read" CORS header is dropped.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import os
from typing import Any

import optuna
from optuna_dashboard import save_note

from bonas.leaderboard import si
from bonas.model import LayerRow

INLINE_TYPES = {"image/png", "image/jpeg", "application/json", "text/csv", "text/plain"}
UPLOAD_TYPES = INLINE_TYPES | {"application/octet-stream"}


def note_markdown(
    number: int,
    state: str,
    value: float | None,
    arch_line: str | None,
    rows: list[LayerRow] | None,
    epochs: int | None,
    max_epochs: int,
    reason: str,
    train: dict[str, Any] | None,
    seconds: float | None,
    kept: bool = False,
) -> str:
    head = f"### Trial {number}: {state}" + (f", val_acc {value:.4f}" if value is not None else "")
    lines = [head, ""]
    if arch_line:
        lines += [f"`{arch_line}`", ""]
    if rows:
        lines += ["| layer | type | output | params | FLOPs |", "|---|---|---|---:|---:|"]
        for r in rows:
            shape = "×".join(str(s) for s in r.output_shape)
            lines.append(f"| {r.name} | {r.kind} | {shape} | {r.params:,} | {si(r.flops)} |")
        total_p, total_f = sum(r.params for r in rows), sum(r.flops for r in rows)
        lines += [f"| **total** | | | **{total_p:,}** | **{si(total_f)}** |", ""]
        lines.append(f"- **parameters** {total_p:,} · **FLOPs per image** {total_f:,} ({si(total_f)})")
    if epochs is not None:
        lines.append(f"- **epochs run** {epochs} of {max_epochs}")
    lines.append(f"- **ended** {reason}")
    if train:
        knobs = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in train.items())
        lines.append(f"- **training** {knobs}")
    if seconds is not None:
        lines.append(f"- **training time** {seconds:.1f} s")
    if kept:
        lines.append("- **artifacts** weights (checkpoint), ArchSpec and learning curve, kept while this trial is in the top k")
    return "\n".join(lines) + "\n"


def write_note(trial: optuna.Trial, body: str) -> None:
    save_note(trial, body)


def study_note(config_dict: dict[str, Any], data_info: dict[str, Any], command: str) -> str:
    space = config_dict.get("space", {})
    lines = [
        f"## bonas study `{config_dict.get('name')}`",
        "",
        f"- **data** {data_info.get('dataset')}: {data_info.get('n_train')} train / {data_info.get('n_val')} validation images, "
        f"input {'×'.join(map(str, data_info.get('input_shape', [])))}, {data_info.get('n_classes')} classes",
        f"- **sampler** {config_dict.get('sampler', {}).get('name')}, **pruner** {config_dict.get('pruner', {}).get('name')}, "
        f"**epochs per trial** {config_dict.get('training', {}).get('max_epochs')}",
        f"- **space** blocks {space.get('n_blocks')}, widths {space.get('widths') or space.get('width_range')}, kernels {space.get('kernel_sizes')}, "
        f"pooling {space.get('pooling')}, heads {space.get('heads')}, dense layers {space.get('dense_layers')}",
        f"- **reproduce** `{command}`",
        "",
        "Each trial's note shows its architecture layer by layer; the resolved config, package versions and "
        "hardware are in the study's user attributes.",
    ]
    return "\n".join(lines) + "\n"


# --- serving -----------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SafeArtifacts:
    """WSGI filter in front of optuna-dashboard's app (see the module docstring)."""

    def __init__(self, app, artifact_dir: str | None = None):
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
        if self.artifact_dir is not None and not os.path.isfile(os.path.join(self.artifact_dir, os.path.basename(artifact_id))):
            body = b"This artifact was removed: bonas keeps the files of the top-k trials only (artifacts.keep_top_k)."
            start_response("410 Gone", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("X-Content-Type-Options", "nosniff")])
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


def make_app(storage, artifact_store):
    from optuna_dashboard import wsgi

    base = getattr(artifact_store, "_base_path", None)
    return SafeArtifacts(wsgi(storage, artifact_store=artifact_store), str(base) if base is not None else None)


def serve(storage, artifact_store, host: str, port: int, quiet: bool = False) -> None:
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
    httpd = make_server(host, port, make_app(storage, artifact_store), server_class=Server, handler_class=QuietHandler)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
