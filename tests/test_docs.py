"""docs/results.md is rendered from bench/results/*.json: committed as rendered, honest about staleness, every
table naming its source. Standard library and git only: no torch, no training stack."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bench import render
from tests.helpers import ROOT

RESULTS = re.compile(r"bench/results/([\w.-]+\.json)")


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return render.render(ROOT)


@pytest.fixture(scope="module")
def page(pages) -> str:
    return pages[render.PAGE]


def test_the_committed_page_is_what_the_results_render(pages):
    """A figure cannot drift from its file, in docs/results.md or in the README's results block, and a code change
    that makes a result stale fails here until the pages are rendered again (`python bench/render.py`)."""
    assert render.README in pages, "the README has its results block"
    diffs = render.check(ROOT, pages)
    assert not diffs, "docs/results.md or README.md is out of date; run `python bench/render.py`:\n" + "".join(diffs)[:4000]


def tables(text: str) -> list[tuple[str, str]]:
    """(the text from the table's heading to the table's end, the table) for every Markdown table."""
    lines, out, start = text.splitlines(), [], 0
    for i, line in enumerate(lines):
        if line.startswith("#"):
            start = i
        is_row, next_row = line.startswith("|"), i + 1 < len(lines) and lines[i + 1].startswith("|")
        if is_row and not next_row:
            first = i
            while first > 0 and lines[first - 1].startswith("|"):
                first -= 1
            out.append(("\n".join(lines[start : i + 1]), "\n".join(lines[first : i + 1])))
    return out


def test_every_table_names_its_results_file(page):
    found = tables(page)
    assert len(found) >= 20, len(found)
    for context, table in found:
        named = RESULTS.findall(context) + [f for f in re.findall(r"`([\w.-]+\.json)`", table)]
        assert named, f"a table without its source:\n{context[-1500:]}"
        for name in named:
            assert (ROOT / "bench" / "results" / name).exists(), name


def test_every_results_file_is_on_the_page_with_its_commit_date_and_machine(page):
    res = render.Results(ROOT)
    for source in res.all_sources():
        assert f"`{source.file}`" in page, source.file
        assert f"Source: {source.name}" in page, source.name
        assert f"commit {source.fresh.short}" in page and source.date[:10] in page and source.machine in page


# ---------------------------------------------------------------------------------------------- the staleness rule


def git(root: Path, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> tuple[Path, str]:
    """A throwaway repository: bonas/data/cache.py committed, and a results file naming that commit."""
    git(tmp_path, "init", "-q")
    (tmp_path / "bonas" / "data").mkdir(parents=True)
    (tmp_path / "bonas" / "data" / "cache.py").write_text("CACHE = 1\n")
    (tmp_path / "bonas" / "cli.py").write_text("def main(): ...\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "code")
    sha = git(tmp_path, "rev-parse", "HEAD")
    write_result(tmp_path, sha)
    return tmp_path, sha


def write_result(root: Path, commit: str) -> None:
    results = root / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    record = {"command": "python bench/data_path.py", "git_commit": commit, "date": "2026-11-28T20:41:14+00:00"}
    record |= {"machine": {"cpu": "Test CPU", "cores": 2}, "bench": "data_path"}
    (results / "fake.json").write_text(json.dumps(record))


def source(root: Path) -> render.Source:
    return render.Results(root).source("fake.json")


def test_a_result_is_fresh_while_its_paths_are_unchanged(repo):
    root, sha = repo
    (root / "bonas" / "cli.py").write_text("def main(): return 0\n")  # not a path data_path exercises
    s = source(root)
    assert s.fresh.status == "fresh" and not s.fresh.changed
    assert "⚠" not in s.cite() and f"commit {sha[:7]}" in s.cite() and "Test CPU, 2 cores" in s.cite()


def test_a_changed_path_in_the_working_tree_makes_it_stale_and_is_named(repo):
    root, sha = repo
    (root / "bonas" / "data" / "cache.py").write_text("CACHE = 2\n")
    s = source(root)
    assert s.fresh.status == "stale" and s.fresh.changed == ("bonas/data/cache.py",)
    label = s.cite().splitlines()[0]
    assert label.startswith(f"> ⚠ stale: measured at {sha[:7]} (2026-11-28)"), label
    assert "bonas/data/ (1 file: cache.py)" in label, label


def test_the_label_does_not_depend_on_later_history(repo):
    """Committing the change that made a result stale leaves its label as it was: only the trees are compared."""
    root, _ = repo
    (root / "bonas" / "data" / "cache.py").write_text("CACHE = 2\n")
    before = source(root).cite()
    git(root, "commit", "-q", "-am", "change the cache")
    assert source(root).cite() == before


def test_a_new_file_counts_before_it_is_added_as_after_it_is_committed(repo):
    """A page rendered before `git add` equals the one a clean clone renders after the commit (CI renders that)."""
    root, _ = repo
    (root / "bonas" / "data" / "stream.py").write_text("STREAM = 1\n")
    before = source(root)
    assert before.fresh.changed == ("bonas/data/stream.py",)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a new module")
    assert source(root).cite() == before.cite()


def test_an_old_module_of_a_layer_counts_for_it(repo):
    """Before the reorganisation, bonas/data.py is the data layer: a change to it makes data_path stale."""
    root, sha = repo
    (root / "bonas" / "data.py").write_text("OLD = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "old layout")
    write_result(root, git(root, "rev-parse", "HEAD"))
    (root / "bonas" / "data.py").write_text("OLD = 2\n")
    s = source(root)
    assert s.fresh.status == "stale" and "bonas/data/ (1 file: data.py)" in s.fresh.groups


def test_a_dirty_commit_says_it_ran_on_uncommitted_changes(repo):
    root, sha = repo
    write_result(root, sha + "-dirty")
    s = source(root)
    assert s.fresh.status == "unverifiable" and s.fresh.dirty
    assert "uncommitted changes on top of " + sha[:7] in s.cite()
    (root / "bonas" / "data" / "cache.py").write_text("CACHE = 2\n")
    stale = source(root)
    assert stale.fresh.status == "stale" and "uncommitted changes" in stale.fresh.label(stale.date)


@pytest.mark.parametrize("commit", ["unknown", "", "0123456789abcdef0123456789abcdef01234567"])
def test_an_unknown_or_missing_commit_cannot_be_checked(repo, commit):
    root, _ = repo
    write_result(root, commit)
    s = source(root)
    assert s.fresh.status == "unverifiable"
    assert "its freshness cannot be checked" in s.cite().splitlines()[0]
    assert "unverifiable" in s.fresh.summary()


def test_check_prints_a_diff_when_the_page_differs(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / render.PAGE).write_text("old line\n")
    assert render.check(tmp_path, {render.PAGE: "old line\n"}) == []
    diff = "".join(render.check(tmp_path, {render.PAGE: "new line\n"}))
    assert "-old line" in diff and "+new line" in diff
