"""optuna-dashboard on a real study, driven in a real browser (Debian's chromium via Playwright), plus
the notes, the artifacts and what the server refuses."""

from __future__ import annotations

import base64
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
from bonas.study import open_existing
from tests.conftest import ROOT, make_mixed_study, require
from tests.servers import free_port

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


@pytest.fixture(scope="module")
def dashboard(study_dir):
    port = free_port()
    log = study_dir.parent / "dashboard.log"
    proc = subprocess.Popen([str(BIN / "bonas"), "dashboard", str(study_dir), "--port", str(port)], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, cwd=study_dir.parent)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, proc, log)
    yield url, proc, log
    proc.terminate()
    proc.wait(30)


def test_every_trial_has_an_architecture_note(study_dir):
    from optuna_dashboard._note import get_note_from_system_attrs

    study = open_existing(str(study_dir)).study
    attrs = study._storage.get_study_system_attrs(study._study_id)
    states = {}
    for t in study.trials:
        note = get_note_from_system_attrs(attrs, t._trial_id)["body"]
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
    study = open_existing(str(study_dir)).study
    folder = study_dir.parent / "dash.artifacts"
    files = sorted(folder.iterdir())
    complete = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.values[0])
    assert len(files) == 3 * min(2, len(complete)), files
    metas = [m for t in complete[:2] for m in optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)]
    assert {m.mimetype for m in metas} == {"application/octet-stream", "application/json", "image/png"}
    from bonas.checkpoint import load_checkpoint

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
    metas = {m.filename.rsplit("-", 1)[-1]: m for m in optuna.artifacts.get_all_artifact_meta(best, storage=study._storage)}
    base = f"{url}/artifacts/{study._study_id}/{best._trial_id}"
    status, headers, body = fetch(f"{base}/{metas['curve.png'].artifact_id}")
    assert status == 200 and headers["Content-Type"] == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    assert headers["X-Content-Type-Options"] == "nosniff" and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = fetch(f"{base}/{metas['weights.pt'].artifact_id}")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream" and headers["Content-Disposition"] == "attachment"
    # an HTML upload through the dashboard's own API is refused
    running = study._storage.create_new_trial(study._study_id)
    payload = json.dumps({"file": "data:text/html;base64," + base64.b64encode(b"<script>alert(1)</script>").decode(), "filename": "x.html"})
    status, _, body = fetch(f"{url}/api/artifacts/{study._study_id}/{running}", payload.encode())
    assert status == 400 and b"not text/html" in body
    study._storage.set_trial_state_values(running, TrialState.FAIL)
    # a trial that fell out of the top k: its files are gone, the server says so
    dropped = [t for t in study.trials if t.state == TrialState.COMPLETE and t.number != best.number]
    for t in dropped:
        for m in optuna.artifacts.get_all_artifact_meta(t, storage=study._storage):
            if not (study_dir.parent / "dash.artifacts" / m.artifact_id).exists():
                status, _, body = fetch(f"{url}/artifacts/{study._study_id}/{t._trial_id}/{m.artifact_id}")
                assert status == 410 and b"top-k" in body


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
    proc = subprocess.Popen([str(BIN / "bonas"), "dashboard", str(study_dir), "--host", "0.0.0.0", "--allow-remote", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
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
