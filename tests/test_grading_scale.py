"""Grading at scale: a class roster sharded and merged, and a bounded worst case per submission.

* roster -> shards -> fetch at a deadline -> grade -> merge, with a fake roster of local git
  repositories whose commits have dates on both sides of the deadline (the workflow
  .github/workflows/grade-class.yml runs the same commands);
* the merge is one function: shards that overlap or miss a learner give a clear error, and
  every record is still written;
* strikes: a function that crashes or runs out of memory twice fails its remaining tests at
  once (the others keep their marks), and the submission's time limit stops everything else;
* a chapter's ``SANDBOX`` table extends the child's environment.
No timing assertions: the worst-case times are measured by ``benchmarks/grading.py --worst``.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from attncourse.grading import merge as class_merge
from attncourse.grading.grader import GraderError, grade_notebook, grade_paths, sandbox_options
from attncourse.grading.report import write_reports
from attncourse.grading.sandbox import Limits

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "autograder"
CHAPTER = "01_sdpa"
DEADLINE = "2026-03-01T23:59:00+00:00"
_spec = importlib.util.spec_from_file_location("_scale_hostile", ROOT / "tests" / "grading_corpus" / "hostile.py")
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)

pytestmark = pytest.mark.skipif(not hostile.RELEASED.exists() or shutil.which("git") is None,
                                reason="needs the released chapter-01 notebook and git")


# ----------------------------------------------------------------------------- a fake class
def _commit(repo: Path, files: dict[str, Path | None], when: str, message: str) -> str:
    for rel, src in files.items():
        dest = repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    env = dict(os.environ, GIT_AUTHOR_NAME="learner", GIT_AUTHOR_EMAIL="l@example.org", GIT_COMMITTER_NAME="learner",
               GIT_COMMITTER_EMAIL="l@example.org", GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=repo, check=True, env=env)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, env=env, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """Four learners: a stub before the deadline and the solution after it (alice), only a late commit
    (bob), another chapter's notebook under the assignment's name (carol), a repository that does not exist
    (dave). Two shards are fetched and graded as the workflow does."""
    tmp = tmp_path_factory.mktemp("class")
    nb = f"notebooks/{CHAPTER}.ipynb"
    repos = {}
    for name in ("alice", "bob", "carol"):
        repos[name] = tmp / "repos" / name
        repos[name].mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repos[name], check=True)
    before, after = "2026-03-01T20:00:00+00:00", "2026-03-02T09:00:00+00:00"
    deadline_commit = _commit(repos["alice"], {nb: hostile.RELEASED}, before, "my attempt")
    _commit(repos["alice"], {nb: hostile.SOLUTION}, after, "finished, too late")
    _commit(repos["bob"], {"README.md": ROOT / "README.md"}, "2026-02-01T10:00:00+00:00", "start")
    _commit(repos["bob"], {nb: hostile.SOLUTION}, after, "late")
    _commit(repos["carol"], {nb: ROOT / "solutions" / "02_self_attention.ipynb"}, before, "oops")
    roster = tmp / "roster.csv"
    roster.write_text("# learner,repository\nlearner,repository\n"
                      + "".join(f"{n},{repos[n]}\n" for n in ("alice", "bob", "carol"))
                      + f"dave,{tmp / 'repos' / 'dave'}\n")
    learners = class_merge.read_roster(roster)
    shards = class_merge.shard_indices(learners, 2)
    outs = []
    for i in shards:
        dest, out = tmp / f"submissions-{i}", tmp / f"shard-{i}"
        doc = class_merge.fetch(learners, i, len(shards), class_merge.parse_deadline(DEADLINE), CHAPTER, dest)
        notebooks = sorted(dest.rglob("*.ipynb"))
        if notebooks:  # as the workflow: grade the shard's folder with the chapter pinned
            write_reports(grade_paths([dest], tests_dir=TESTS, chapter=CHAPTER, jobs=1), ["json"], out)
        out.mkdir(exist_ok=True)
        shutil.copy(dest / "fetch.json", out / "fetch.json")
        outs.append((out, doc))
    return {"tmp": tmp, "roster": roster, "learners": learners, "shards": outs, "deadline_commit": deadline_commit}


def test_roster_is_checked(tmp_path):
    bad = tmp_path / "roster.csv"
    bad.write_text("learner,repository\nalice,o/a\nalice,o/b\n../x,o/c\nbob,o/a\n")
    with pytest.raises(class_merge.RosterError) as err:
        class_merge.read_roster(bad)
    msg = str(err.value)
    assert "line 3: learner alice is already on line 2" in msg and "'../x'" in msg and "repository o/a" in msg
    (tmp_path / "nohead.csv").write_text("alice,o/a\n")
    with pytest.raises(class_merge.RosterError, match="header"):
        class_merge.read_roster(tmp_path / "nohead.csv")
    with pytest.raises(class_merge.RosterError, match="time zone"):
        class_merge.parse_deadline("2026-03-01T23:59")


def test_shards_are_balanced_and_cover_everyone_once(classroom):
    learners = classroom["learners"]
    assert class_merge.shard_indices(learners, 2) == [0, 1] and class_merge.shard_indices(learners, 9) == [0, 1, 2, 3]
    parts = [[lr.learner for lr in class_merge.shard_of(learners, i, 3)] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(lr.learner for lr in learners) and max(map(len, parts)) <= 2


def test_fetch_takes_the_last_commit_before_the_deadline(classroom):
    fetched = {}
    for _, doc in classroom["shards"]:
        fetched.update(doc["learners"])
    alice = fetched["alice"]
    assert alice["status"] == "fetched" and alice["commit"] == classroom["deadline_commit"]
    assert alice["commits_after_deadline"] == 1
    assert fetched["bob"]["status"] == "no submission" and "does not exist at commit" in fetched["bob"]["message"]
    assert fetched["dave"]["status"] == "fetch error" and "could not clone" in fetched["dave"]["message"]


def test_merge_gives_one_gradebook_row_per_learner(classroom, tmp_path):
    from attncourse.cli import main

    out = tmp_path / "final"
    code = main(["report", "merge", *(str(o) for o, _ in classroom["shards"]), "--roster", str(classroom["roster"]),
                 "-o", str(out)])
    assert code == 0
    rows = {r["learner"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert list(rows) == ["alice", "bob", "carol", "dave"]                       # roster order
    assert rows["alice"]["status"] == "graded" and rows["alice"]["score"] == "0"  # the stub, at the deadline
    assert rows["alice"]["commit"] == classroom["deadline_commit"] and rows["alice"]["max_score"] == "10"
    assert rows["alice"]["stable_softmax"] == "0" and "sdpa" in rows["alice"]
    assert (rows["bob"]["status"], rows["bob"]["score"], rows["bob"]["max_score"]) == ("no submission", "0", "10")
    assert rows["carol"]["score"] == "0" and "chapter 02_self_attention" in rows["carol"]["message"]
    assert rows["dave"]["status"] == "fetch error" and rows["dave"]["score"] == ""  # not a silent zero
    doc = json.loads((out / "class-grades.json").read_text())
    assert doc["chapter"] == CHAPTER and doc["deadline"] == DEADLINE and doc["problems"] == []
    assert "| alice | graded | 0/10 |" in (out / "summary.md").read_text()


def test_merge_of_a_missing_or_overlapping_shard_is_a_clear_error_and_loses_nothing(classroom, tmp_path):
    from attncourse.cli import main

    (s0, _), (s1, _) = classroom["shards"]
    learners = classroom["learners"]
    missing = class_merge.merge([class_merge.load_shard(s0)], learners)
    assert [p for p in missing["problems"] if "bob" in p] and [p for p in missing["problems"] if "dave" in p]
    statuses = {r["learner"]: r["status"] for r in missing["learners"]}
    assert statuses == {"alice": "graded", "bob": "missing", "carol": "graded (unusable file)", "dave": "missing"}
    assert all(r["score"] is None for r in missing["learners"] if r["status"] == "missing")

    overlap = class_merge.merge([class_merge.load_shard(p) for p in (s0, s1, s0)], learners)
    assert any("alice is in 2 shards" in p for p in overlap["problems"])
    assert [r["status"] for r in overlap["learners"] if r["learner"] == "alice"] == ["duplicate", "duplicate"]
    assert len(overlap["learners"]) == 6                                       # every copy is kept

    out = tmp_path / "partial"
    assert main(["report", "merge", str(s0), "--roster", str(classroom["roster"]), "-o", str(out)]) == 2
    text = (out / "summary.md").read_text()
    assert "problem(s): the merge is incomplete; nothing was dropped" in text and "learner bob is in no shard" in text
    assert len(list(csv.DictReader((out / "grades.csv").open()))) == 4
    stray = tmp_path / "stray.csv"                                            # a learner not on the roster
    stray.write_text("learner,repository\nalice,x\n")
    odd = class_merge.merge([class_merge.load_shard(s0)], class_merge.read_roster(stray))
    assert any("carol" in p and "not on the roster" in p for p in odd["problems"])


# ----------------------------------------------------------------------------- a bounded worst case
@pytest.mark.slow
def test_crash_and_out_of_memory_strike_out_and_the_others_keep_their_marks(tmp_path):
    nb = hostile.with_sources({
        "stable_softmax": "import os\ndef softmax(x, dim=-1):\n    os._exit(1)\n",
        "causal_mask": ("def causal_mask(tq, tk):\n    hog = []\n    while True:\n"
                        "        hog.append(b'x' * (16 << 20))\n"),
        "padding_mask": hostile.solution_source("padding_mask"),
    })  # sdpa: the released stub
    limits = Limits(call_timeout=5, memory_mb=800)
    r = grade_notebook(hostile.write(nb, tmp_path / "strikes.ipynb"), tests_dir=TESTS, limits=limits)
    ex = {e.id: e for e in r.exercises}
    assert ex["padding_mask"].score == 2 and r.score == 2
    assert all(t.message.endswith("not implemented yet") for t in r.tests if t.exercise == "sdpa")
    assert r.sandbox["strikes"] == {"stable_softmax": ["ended the sandbox process"] * 2,
                                    "causal_mask": ["ran out of memory"] * 2}
    msgs = [t.message for t in r.tests if t.exercise == "causal_mask"]
    assert "MemoryError" in msgs[0] and all("already failed 2 times" in m for m in msgs[2:])
    assert r.sandbox["restarts"] >= 3 and r.sandbox["confinement"]["oom_first"] is True
    assert r.sandbox["peak_rss_mb"]["grader"] > 0 and r.sandbox["peak_rss_mb"]["sandbox"] > 0


@pytest.mark.slow
def test_the_submission_time_limit_stops_everything(tmp_path):
    nb = hostile.with_sources({ex: f"import time\ndef {fn}(*a, **k):\n    time.sleep(1.5)\n"
                               for ex, fn in (("stable_softmax", "softmax"), ("causal_mask", "causal_mask"),
                                              ("padding_mask", "padding_mask"),
                                              ("sdpa", "scaled_dot_product_attention"))})
    r = grade_notebook(hostile.write(nb, tmp_path / "slow.ipynb"), tests_dir=TESTS,
                       limits=Limits(call_timeout=2, total_timeout=4))
    assert r.score == 0 and not r.sandbox["strikes"]             # slow, never over the per-call limit
    budget = [t for t in r.tests if "grading time limit for this submission (4 s) was reached" in t.message]
    assert len(budget) >= len(r.tests) - 4                      # only a few calls could run in 4 s


def test_a_chapter_sandbox_table_extends_the_child(tmp_path):
    tests = tmp_path / "hidden"
    tests.mkdir()
    (tests / "test_99_probe.py").write_text(
        "import pytest, torch\nfrom attncourse.grading.testkit import expect\n"
        'EXERCISES = {"probe": {"function": "probe", "points": 1}}\n'
        'SANDBOX = {"env": {"ATTNCOURSE_PROBE": "7"}}\n'
        '@pytest.mark.exercise("probe")\ndef test_probe(learner):\n'
        '    expect(learner.probe(), torch.tensor(7.0), what="probe()")\n')
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"attncourse": {"chapter": "99_probe"}}, "cells": [
        {"cell_type": "code", "metadata": {"tags": ["setup"]}, "source": "import os, torch\n", "outputs": [],
         "execution_count": None},
        {"cell_type": "code", "metadata": {"attncourse": {"id": "probe"}}, "outputs": [], "execution_count": None,
         "source": "def probe():\n    return torch.tensor(float(os.environ.get('ATTNCOURSE_PROBE', '0')))\n"}]}
    path = tmp_path / "99_probe.ipynb"
    path.write_text(json.dumps(nb))
    assert sandbox_options(tests / "test_99_probe.py") == {"env": {"ATTNCOURSE_PROBE": "7"}}
    r = grade_notebook(path, tests_dir=tests)
    assert r.score == r.max_score == 1
    (tests / "test_99_probe.py").write_text('SANDBOX = {"evil": 1}\n')
    with pytest.raises(GraderError, match="SANDBOX may only have"):
        grade_notebook(path, tests_dir=tests)
