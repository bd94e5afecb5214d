"""BonasStorage keeps RDBStorage's contract (pickling, copying, return values), retries every call a worker
makes on a transient error, fails at once on a permanent one, and does not reap for staleness it shared."""

from __future__ import annotations

import copy
import pickle
import re
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from bonas.config import load_config
from bonas.core.errors import StorageError
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.retry import Fault, classify
from bonas.study.storage import BonasStorage, open_storage
from bonas.study.urls import resolve_storage
from tests.helpers import require, write_tiny_config
from tests.servers import MYSQL_URL, PG_URL, fresh_database, mysql_available, pg_available

pytestmark = pytest.mark.slow  # worker processes, database servers, a browser or a scheduler: not in make test-fast


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
        return
    require(pg_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    url, drop = fresh_database(PG_URL)
    yield url
    drop()


def test_a_pickled_storage_works_and_keeps_its_settings(url):
    storage = open_storage(url, heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="p", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    clone = pickle.loads(pickle.dumps(storage))
    assert isinstance(clone, BonasStorage) and (clone.heartbeat_interval, clone.grace_period) == (1, 3)
    again = optuna.load_study(study_name="p", storage=clone)
    assert [t.number for t in again.trials] == [0, 1]
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(optuna.load_study(study_name="p", storage=storage).trials) == 3


def test_retrying_lives_on_the_class_so_a_copy_calls_itself():
    storage = BonasStorage("sqlite:///:memory:")
    assert not [name for name in vars(storage) if hasattr(BonasStorage, name)], "no method is shadowed by a per-instance closure"
    twin = copy.copy(storage)
    sid = twin.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "c")
    assert twin.get_study_name_from_id(sid) == "c"
    assert BonasStorage.get_trial.__wrapped__ is optuna.storages.RDBStorage.get_trial


def _kind(statement: str) -> tuple[str, str]:
    """('INSERT', 'trials'), ('SELECT', 'trial_params'), ...: the verb and the first table named."""
    verb = statement.split(None, 1)[0].upper()
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+[`\"]?(\w+)", statement, re.IGNORECASE)
    return verb, table[1] if table else ""


class FailEachKindOnce:
    """A SQLAlchemy hook that makes the first statement of every (verb, table) kind fail as a dropped
    connection would: what a database restart does to each kind of call."""

    def __init__(self, engine):
        self.failed: list[tuple[str, str]] = []
        sqlalchemy.event.listen(engine, "before_cursor_execute", self)

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        kind = _kind(statement)
        if kind not in self.failed:
            self.failed.append(kind)
            raise sqlalchemy.exc.OperationalError(
                statement, parameters, ConnectionError("injected: server closed the connection")
            )


def test_every_kind_of_storage_call_a_worker_makes_survives_a_transient_error(tmp_path, caplog):
    path = write_tiny_config(
        tmp_path, "flaky", n_trials=3, epochs=2, extra="[workers]\nheartbeat_interval = 1\ngrace_period = 30\n"
    )
    config = load_config(path)
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    worker.study.enqueue_trial(
        {
            "n_blocks": 1,
            "b0_width": 8,
            "b0_pool": "max",
            "b0_bn": True,
            "head": "flatten",
            "n_dense": 0,
            "lr": 0.02,
            "weight_decay": 1e-5,
        }
    )
    hook = FailEachKindOnce(worker.storage.engine)
    summary = worker.run(n_trials=3, timeout=0)
    assert summary.finished == 3 and summary.failed == 0
    best = worker.study.best_trial  # the best-trial query too
    trials = worker.study.get_trials()
    assert [t.state for t in trials].count(TrialState.FAIL) == 0 and best in trials
    hot = {
        ("INSERT", "trials"),
        ("SELECT", "trials"),
        ("INSERT", "trial_params"),
        ("INSERT", "trial_values"),
        ("INSERT", "trial_intermediate_values"),
        ("INSERT", "trial_user_attributes"),
        ("INSERT", "trial_heartbeats"),
        ("UPDATE", "trials"),
        ("INSERT", "study_system_attributes"),
    }
    assert hot <= set(hook.failed), f"kinds not exercised: {hot - set(hook.failed)}"
    assert sum("storage unavailable" in r.getMessage() for r in caplog.records) >= len(hot)
    print(f"{len(hook.failed)} kinds of statement failed once each and were retried: {sorted(hook.failed)}")


@pytest.mark.parametrize("server", ["postgresql", "mariadb", "sqlite"])
def test_permanent_errors_fail_within_seconds_with_one_line(tmp_path, server):
    if server == "postgresql":
        require(pg_available(), "PostgreSQL is not running on 127.0.0.1:5432")
        url = PG_URL.rsplit("/", 1)[0] + "/bonas_no_such_database"
    elif server == "mariadb":
        require(mysql_available(), "MariaDB/MySQL is not running on 127.0.0.1:3306")
        url = MYSQL_URL.replace("root@", "root:wrong-pw-7@")
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        if server == "sqlite":  # a table dropped under a running worker
            storage = open_storage(f"sqlite:///{tmp_path / 'dropped.db'}")
            trial = optuna.create_study(study_name="d", storage=storage).ask()
            with storage.engine.begin() as conn:
                conn.execute(sqlalchemy.text("DROP TABLE trial_heartbeats"))
            start = time.monotonic()
            storage.record_heartbeat(trial._trial_id)
        else:
            open_storage(url)
    assert time.monotonic() - start < 5, "not retried as if the database were restarting"
    line = str(err.value)
    assert "\n" not in line and "retrying cannot fix this" in line and "wrong-pw-7" not in line


def test_classify_tells_transient_from_permanent():
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionError("server closed the connection unexpectedly"))
    auth = sqlalchemy.exc.OperationalError("", {}, Exception('FATAL:  password authentication failed for user "bob"'))
    table = sqlalchemy.exc.OperationalError("", {}, Exception("no such table: trials"))
    assert classify(lost) == Fault.TRANSIENT and classify(auth) == classify(table) == Fault.PERMANENT
    assert classify(ValueError("a bug")) == Fault.OTHER
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = lost
    assert classify(wrapped) == Fault.TRANSIENT


def test_a_worker_just_cut_off_reaps_nothing_until_its_peers_could_beat_again(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="r", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3.5)  # SQLite's clock has whole seconds
    assert [s.trial_id for s in storage.stale_trials(study._study_id)] == [trial._trial_id], "silent past the grace period"
    storage._last_failure = time.monotonic()  # this process could not reach the database just now
    assert storage.stale_trials(study._study_id) == [], "its own outage explains the silence"
    storage._last_failure = time.monotonic() - (2 + 8 + 1) - 0.1
    assert [s.trial_id for s in storage.stale_trials(study._study_id)] == [trial._trial_id]


def test_after_an_outage_longer_than_the_grace_period_a_cut_off_worker_reaps_no_peer(tmp_path):
    """The database is down 7 s with a grace period of 4 s. When it is back, a peer's trial has not written a
    heartbeat for 7+ s — stale to anyone who was connected all along (a fresh storage sees it so) — but a
    worker that was itself cut off during the outage reaps nothing: the silence was shared."""
    import threading

    from tests.servers import PrivatePostgres

    require(Path("/usr/lib/postgresql").is_dir(), "PostgreSQL server binaries are not installed")
    server = PrivatePostgres(durable=True)  # the heartbeat written before the stop survives it
    try:
        url = server.url()
        storage = open_storage(url, heartbeat_interval=1, grace_period=4)
        study = optuna.create_study(study_name="o", storage=storage)
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)
        server.stop()
        calling = threading.Thread(target=storage.get_all_studies)  # this worker's next call meets the outage
        calling.start()
        time.sleep(7)
        server.start()
        calling.join(120)
        fresh = open_storage(url, heartbeat_interval=1, grace_period=4)
        assert [s.trial_id for s in fresh.stale_trials(study._study_id)] == [trial._trial_id], "silent past the grace period"
        assert storage.stale_trials(study._study_id) == [], "the worker that was cut off too does not reap it"
        assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING
    finally:
        server.close()
