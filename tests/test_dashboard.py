"""optuna-dashboard on a real study, driven in a real browser (Debian's chromium via Playwright), plus
the notes, the artifacts and what the server refuses."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bonas.cli import main
from bonas.config import load_config
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.storage import storage_of, study_id, trial_id
from bonas.study.studies import open_existing
from bonas.study.urls import resolve_storage
from tests.helpers import ROOT, make_mixed_study, require, write_tiny_config
from tests.servers import free_port

pytestmark = pytest.mark.slow  # worker processes, database servers, a browser or a scheduler: not in make test-fast

CHROMIUM = "/usr/bin/chromium"
OUTPUT = ROOT / "test-output"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """5 trials with notes, artifacts of the top 2, pruned and failed trials among them."""
    return make_mixed_study(tmp_path_factory.mktemp("dash"), "dash")


def wait_until_serving(url: str, proc: subprocess.Popen, log: Path | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/studies", timeout=2)
            return
        except OSError:
            assert proc.poll() is None, log.read_text() if log else proc.returncode
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def serving(config: Path):
    """`bonas dashboard <config>` on a free port; yields (url, process, log file)."""
    port = free_port()
    log = config.parent / "dashboard.log"
    proc = subprocess.Popen(
        [str(BIN / "bonas"), "dashboard", str(config), "--port", str(port)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc, log)
        yield url, proc, log
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def dashboard(study_dir):
    with serving(study_dir) as served:
        yield served


@pytest.fixture(scope="module")
def evicted(tmp_path_factory):
    """A study that keeps the top 1: a hopeless trial (lr 1e-7, chance accuracy) is kept while it is the only
    one, then a good one takes its place and its files are removed. Yields (config, study, hopeless, good)."""
    folder = tmp_path_factory.mktemp("evict")
    path = write_tiny_config(folder, "evict", n_trials=2, epochs=2, pruner="none", pruner_extra="", keep_top_k=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BONAS_DATA_DIR", str(folder / "data"))
        config = load_config(path)
        url = resolve_storage(config)
        worker = Worker(config, url, prepare_worker(config, url, verbose=False))
        good = {
            "n_blocks": 1,
            "b0_width": 8,
            "b0_pool": "max",
            "b0_bn": True,
            "head": "flatten",
            "n_dense": 0,
            "lr": 0.02,
            "weight_decay": 1e-5,
        }
        worker.study.enqueue_trial({**good, "lr": 1e-7})
        worker.study.enqueue_trial(good)
        worker.run(n_trials=2, timeout=0)
    hopeless, best = worker.study.trials
    return path, worker.study, hopeless, best


def test_every_trial_has_an_architecture_note(study_dir):
    from optuna_dashboard._note import get_note_from_system_attrs

    study = open_existing(str(study_dir)).study
    attrs = storage_of(study).get_study_system_attrs(study_id(study))
    states = {}
    for t in study.trials:
        note = get_note_from_system_attrs(attrs, trial_id(t))["body"]
        states[t.state] = note
        assert note.startswith(f"### Trial {t.number}: {t.state.name}")
        assert "- **ended** " in note
        if t.state != TrialState.FAIL:
            assert "| layer | type | output | params | FLOPs |" in note and "| classifier | Linear |" in note
            assert f"**{t.user_attrs['params']:,}**" in note
    assert "pruned at epoch 0" in states[TrialState.PRUNED]
    assert "- **ended** error: ValueError" in states[TrialState.FAIL]
    assert "bonas study `dash`" in get_note_from_system_attrs(attrs, None)["body"]


def test_top_k_artifacts_only(study_dir):
    """The top 2 keep weights, ArchSpec, curve and training state; every other trial's files are gone."""
    study = open_existing(str(study_dir)).study
    folder = study_dir.parent / "dash.artifacts"
    files = {p.name for p in folder.iterdir()}
    complete = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.values[0])
    metas = [m for t in complete[:2] for m in optuna.artifacts.get_all_artifact_meta(t, storage=storage_of(study))]
    kinds = sorted(m.filename.split("-", 2)[2] for m in metas)
    assert kinds == sorted(["weights.pt", "arch.json", "curve.png", "state.ckpt"] * min(2, len(complete))), kinds
    assert files == {m.artifact_id for m in metas}, "nothing else is left in the store"
    assert {m.mimetype for m in metas} == {"application/octet-stream", "application/json", "image/png"}
    from bonas.model.checkpoint import load_checkpoint

    weights = next(m for m in metas if m.filename.endswith("-weights.pt"))
    net, ckpt = load_checkpoint(folder / weights.artifact_id)
    assert ckpt["info"]["study"] == "dash" and len(ckpt["classes"]) == 10


def fetch(url: str, data: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_artifacts_are_served_safely(dashboard, study_dir):
    url, _, _ = dashboard
    study = open_existing(str(study_dir)).study
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])
    metas = {m.filename.rsplit("-", 1)[-1]: m for m in optuna.artifacts.get_all_artifact_meta(best, storage=storage_of(study))}
    base = f"{url}/artifacts/{study_id(study)}/{trial_id(best)}"
    status, headers, body = fetch(f"{base}/{metas['curve.png'].artifact_id}")
    assert status == 200 and headers["Content-Type"] == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    assert headers["X-Content-Type-Options"] == "nosniff" and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = fetch(f"{base}/{metas['weights.pt'].artifact_id}")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment"
    # an HTML upload through the dashboard's own API is refused
    running = storage_of(study).create_new_trial(study_id(study))
    page = base64.b64encode(b"<script>alert(1)</script>").decode()
    payload = json.dumps({"file": "data:text/html;base64," + page, "filename": "x.html"})
    status, _, body = fetch(f"{url}/api/artifacts/{study_id(study)}/{running}", payload.encode())
    assert status == 400 and b"not text/html" in body
    storage_of(study).set_trial_state_values(running, TrialState.FAIL)


def test_a_trial_pushed_out_of_the_top_k_answers_410(evicted):
    """The hopeless trial was kept (top 1 while alone), then pushed out by the good one: its artifact URLs
    (weights, ArchSpec, curve, training state) answer 410 Gone, the good trial's are served. Fails if the keeper
    stopped removing files (200) or the server stopped saying why (optuna-dashboard alone answers 500 for a missing file)."""
    path, study, hopeless, good = evicted
    assert [hopeless.state, good.state] == [TrialState.COMPLETE, TrialState.COMPLETE] and good.values[0] > hopeless.values[0]
    folder = path.parent / "evict.artifacts"
    gone = optuna.artifacts.get_all_artifact_meta(hopeless, storage=storage_of(study))
    kept = optuna.artifacts.get_all_artifact_meta(good, storage=storage_of(study))
    assert len(gone) == len(kept) == 4, "both trials uploaded weights, ArchSpec, curve and training state while in the top 1"
    assert not any((folder / m.artifact_id).exists() for m in gone) and all((folder / m.artifact_id).exists() for m in kept)
    with serving(path) as (url, _, _):
        for m in gone:
            status, headers, body = fetch(f"{url}/artifacts/{study_id(study)}/{trial_id(hopeless)}/{m.artifact_id}")
            assert status == 410 and b"top-k" in body, (m.filename, status, body)
            assert headers["X-Content-Type-Options"] == "nosniff"
        for m in kept:
            status, _, body = fetch(f"{url}/artifacts/{study_id(study)}/{trial_id(good)}/{m.artifact_id}")
            assert status == 200 and body == (folder / m.artifact_id).read_bytes()


def test_html_and_svg_artifacts_are_served_as_downloads(evicted, tmp_path):
    """HTML and SVG written straight through Optuna's artifact API (no bonas upload filter in the way), on a
    trial and on the study, declared text/html and image/svg+xml: the server hands them out as opaque
    downloads, never as a page or an image the browser would render (and run the script of)."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    path, study, _, _ = evicted
    store = FileSystemArtifactStore(str(path.parent / "evict.artifacts"))
    files = {
        "page.html": (b"<html><script>alert(1)</script></html>", "text/html"),
        "pic.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(2)"/>', "image/svg+xml"),
    }
    tid = storage_of(study).create_new_trial(study_id(study))
    trial = storage_of(study).get_trial(tid)
    urls = {}
    for name, (content, mimetype) in files.items():
        (tmp_path / name).write_bytes(content)
        on_trial = upload_artifact(
            artifact_store=store,
            file_path=str(tmp_path / name),
            study_or_trial=trial,
            storage=storage_of(study),
            mimetype=mimetype,
        )
        on_study = upload_artifact(artifact_store=store, file_path=str(tmp_path / name), study_or_trial=study, mimetype=mimetype)
        urls[f"{name} on the trial"] = (f"/artifacts/{study_id(study)}/{tid}/{on_trial}", content)
        urls[f"{name} on the study"] = (f"/artifacts/{study_id(study)}/{on_study}", content)
    storage_of(study).set_trial_state_values(tid, TrialState.FAIL)
    with serving(path) as (url, _, _):
        for what, (route, content) in urls.items():
            status, headers, body = fetch(url + route)
            assert status == 200 and body == content, what
            assert (headers["Content-Type"], headers["Content-Disposition"]) == ("application/octet-stream", "attachment"), what
            assert headers["X-Content-Type-Options"] == "nosniff", what
            assert "html" not in headers["Content-Type"] and "svg" not in headers["Content-Type"], what


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written: no client-side normalisation or quoting of dots and slashes."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_artifact_route_refuses_path_traversal(dashboard, study_dir):
    """Paths that climb out of the artifact store (plain, %-encoded, double-encoded, absolute, backslashes)
    answer 404 and never a file's contents, whether the file exists or not."""
    url, _, _ = dashboard
    study = open_existing(str(study_dir)).study
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])
    real = optuna.artifacts.get_all_artifact_meta(best, storage=storage_of(study))[0].artifact_id
    config_text = study_dir.read_bytes()  # a file one level above the store: dash.toml beside dash.artifacts
    sid, tid = study_id(study), trial_id(best)
    attempts = [
        f"/artifacts/{sid}/{tid}/..%2F..%2Fetc%2Fpasswd",
        f"/artifacts/{sid}/{tid}/../../etc/passwd",
        f"/artifacts/{sid}/{tid}/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        f"/artifacts/{sid}/{tid}/%252e%252e%252fetc%252fpasswd",
        f"/artifacts/{sid}/{tid}/%2Fetc%2Fpasswd",
        f"/artifacts/{sid}/{tid}/..%5C..%5Cetc%5Cpasswd",
        f"/artifacts/{sid}/{tid}/..%2F{study_dir.name}",
        f"/artifacts/{sid}/{tid}/{real}/..%2F..%2F{study_dir.name}",
        f"/artifacts/{sid}/..%2F{study_dir.name}",
        f"/artifacts/{sid}/{tid}/..",
        "/artifacts/1/1/../../x",
        "/artifacts/1/1/..%2F..%2Fx",
    ]
    for path in attempts:
        status, body = raw_get(url, path)
        assert (status, body) == (404, b"No such artifact."), (path, status, body[:200])
        assert b"root:" not in body and config_text not in body and b"[budget]" not in body, path
    status, body = raw_get(url, f"/artifacts/{sid}/{tid}/{real}")  # the same route with a real id still works
    assert status == 200 and body


def test_dashboard_binds_loopback_only(dashboard):
    url, _, _ = dashboard
    port = int(url.rsplit(":", 1)[1])
    addresses = [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split() if ":" not in a]
    require(bool(addresses), "this machine has no non-loopback IPv4 address to probe")
    with pytest.raises(OSError):
        socket.create_connection((addresses[0], port), timeout=2)


def test_non_loopback_host_needs_a_flag(study_dir, capsys):
    assert main(["dashboard", str(study_dir), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no authentication" in err and "--allow-remote" in err


def test_allow_remote_warns(study_dir):
    port = free_port()
    argv = [str(BIN / "bonas"), "dashboard", str(study_dir), "--host", "0.0.0.0", "--allow-remote", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "warning" in err and "no authentication" in err


def test_browse_a_trial_note_in_chromium(dashboard, study_dir):
    require(Path(CHROMIUM).exists(), "Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, _, _ = dashboard
    study = open_existing(str(study_dir)).study
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "dashboard-trial-note.png"
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{url}/dashboard/")
        page.get_by_text("dash", exact=False).first.click()  # the study card on the home page
        page.wait_for_url("**/dashboard/studies/*")
        page.goto(page.url.rstrip("/") + "/trials")
        page.get_by_text(f"Trial {best.number}", exact=True).first.click()
        note = page.get_by_text(f"Trial {best.number}: COMPLETE", exact=False).first
        note.wait_for(timeout=20_000)
        body = page.inner_text("body")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert f"Trial {best.number}: COMPLETE, val_acc {best.values[0]:.4f}" in body
    assert "classifier" in body and "FLOPs per image" in body and best.user_attrs["arch_line"] in body
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_make_dashboard_target_exists():
    out = subprocess.run(["make", "-n", "dashboard", "STUDY=digits"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "bonas dashboard studies/digits.toml" in out
