"""Storage URLs: precedence, checks, and secrets never shown (bonas.study.urls)."""

from __future__ import annotations

import pytest

from bonas.config import parse_config
from bonas.core.errors import StorageError
from bonas.study.urls import check_storage_url, mask_url, resolve_storage, shell_url
from tests.helpers import tiny_config_text


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://bob:s3cret@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("postgresql://bob@db/x?password=s3cret", "postgresql://bob@db/x?password=***"),
        (
            "postgresql://bob@db/x?sslmode=require&sslpassword=s3cret&connect_timeout=3",
            "postgresql://bob@db/x?sslmode=require&sslpassword=***&connect_timeout=3",
        ),
        ("mysql+pymysql://u@h/db?auth_token=s3cret", "mysql+pymysql://u@h/db?auth_token=***"),
        ("postgresql://bob:p%40ss@db/x?PASSWORD=s3cret", "postgresql://bob:***@db/x?PASSWORD=***"),
        ("sqlite:///studies/x.db", "sqlite:///studies/x.db"),
        ("postgresql://bob@db/x?sslmode=require", "postgresql://bob@db/x?sslmode=require"),
    ],
)
def test_mask_url_hides_passwords_and_tokens(url, masked):
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(f"cannot connect to {url!r}: refused"), "also inside messages that quote the URL"


def config(storage: str = "", path: str = "/tmp/cfg/study.toml"):
    text = (
        tiny_config_text(name="study").replace("seed = 0", f'seed = 0\nstorage = "{storage}"')
        if storage
        else tiny_config_text(name="study")
    )
    return parse_config(text, source=path)


def test_precedence_flag_then_environment_then_config_then_sqlite_beside_the_config(monkeypatch):
    monkeypatch.delenv("BONAS_STORAGE", raising=False)
    assert resolve_storage(config()) == "sqlite:////tmp/cfg/study.db"
    assert resolve_storage(config("sqlite:///other.db")) == "sqlite:////tmp/cfg/other.db", "relative to the config file"
    monkeypatch.setenv("BONAS_STORAGE", "sqlite:////srv/env.db")
    assert resolve_storage(config("sqlite:///other.db")) == "sqlite:////srv/env.db"
    assert resolve_storage(config(), "sqlite:////srv/flag.db") == "sqlite:////srv/flag.db"


def test_shell_url_never_prints_a_secret_and_still_works_from_the_environment(monkeypatch):
    monkeypatch.setenv("BONAS_STORAGE", "postgresql://bob:s3cret@127.0.0.1/x")
    assert shell_url(config()) == '"${BONAS_STORAGE}"'
    monkeypatch.delenv("BONAS_STORAGE")
    monkeypatch.setenv("PGURL", "postgresql://bob:s3cret@127.0.0.1/x")
    assert shell_url(config("${PGURL}")) == '"${PGURL}"'
    assert shell_url(config(), "postgresql+psycopg://bob@127.0.0.1/x") == "postgresql+psycopg://bob@127.0.0.1/x", (
        "no secret: as is"
    )
    assert "s3cret" not in shell_url(config(), "postgresql://bob:s3cret@127.0.0.1/x")


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("postgresql//user@host/db", "malformed storage URL"),
        ("oracle://u@h/db", "unsupported storage 'oracle'"),
        ("sqlite://", "needs a file path"),
        ("postgresql+psycopg://u@/db", "names no host"),
        ("postgresql+psycopg://u@h", "names no database"),
        ("postgresql+nosuchdriver://u@h/db", "is not installed"),
    ],
)
def test_check_storage_url_says_what_is_wrong(url, fragment):
    with pytest.raises(StorageError, match=fragment):
        check_storage_url(url, "--storage")
