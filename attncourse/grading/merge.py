"""Grading a whole class where learners cannot change the workflow: roster, shards, fetch, merge.

The instructors' workflow (``.github/workflows/grade-class.yml``, see ``book/instructors.md``)
runs these steps; each is a subcommand here and of ``attncourse``::

    roster check  ROSTER                          # validate the roster file
    roster shards ROSTER --shards N               # the matrix: [0, 1, ..., N-1] (at most one per learner)
    roster fetch  ROSTER --shard I/N --deadline T --chapter C --dest DIR
                                                  # clone shard I's repositories, take each one's last
                                                  # commit at or before T, copy its notebook to
                                                  # DIR/<learner>/<C>.ipynb, and write DIR/fetch.json
    (attncourse grade DIR --chapter C --jobs 2 --format json,markdown -o OUT; cp DIR/fetch.json OUT/)
    report merge  OUT_0 OUT_1 ... --roster ROSTER -o FINAL
                                                  # one CSV for the gradebook, JSON and Markdown

**One merge function**, :func:`merge`: every learner of the roster must be in exactly one
shard. A learner missing from every shard, one found in two shards, or one that is not on
the roster is a *problem*: the merge still writes every record it has (a missing learner gets
a row with status ``missing`` and no score — never a silent zero; a duplicate keeps one row per
shard), lists the problems at the top of the Markdown and in the JSON, and exits with status 2.

The roster is a CSV file with a header: ``learner,repository`` and optionally ``path`` (the
notebook inside the repository; default ``notebooks/<chapter>.ipynb``). ``repository`` is
``owner/name`` on GitHub, a URL, or a local path. Lines starting with ``#`` are comments.
A private repository is cloned with the token in the environment variable
``ATTNCOURSE_GIT_TOKEN`` (sent as an HTTP header, never on a command line or in a log).

This module uses the standard library only, so the plan and merge jobs can run it as
``python attncourse/grading/merge.py ...`` without installing torch.
"""
from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LEARNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
FETCH = "fetch.json"
GRADES = "grades.json"
EXIT_OK, EXIT_PROBLEMS = 0, 2


class RosterError(Exception):
    pass


@dataclass(frozen=True)
class Learner:
    learner: str
    repository: str
    path: str | None = None
    line: int = 0

    def url(self) -> str:
        r = self.repository
        if re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", r) and not Path(r).exists():
            return f"https://github.com/{r}.git"
        return r


# ----------------------------------------------------------------------------- roster
def read_roster(path: str | Path) -> list[Learner]:
    """Parse and validate a roster; raises :class:`RosterError` naming every bad line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RosterError(f"cannot read the roster {path}: {exc.strerror or exc}") from None
    rows = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise RosterError(f"{path}: the roster is empty")
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in rows)))
    fields = [f.strip() for f in reader.fieldnames or []]
    if "learner" not in fields or "repository" not in fields:
        raise RosterError(f"{path}: the first line must be a header with the columns learner,repository[,path] "
                          f"(found {','.join(fields)})")
    learners, problems, seen, repos = [], [], {}, {}
    for (lineno, _), row in zip(rows[1:], reader):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k}
        name, repo, nb = row.get("learner", ""), row.get("repository", ""), row.get("path") or None
        if not LEARNER_RE.match(name):
            problems.append(f"line {lineno}: learner {name!r} must be letters, digits, '.', '_' or '-'")
            continue
        if not repo:
            problems.append(f"line {lineno}: learner {name} has no repository")
            continue
        if name in seen:
            problems.append(f"line {lineno}: learner {name} is already on line {seen[name]}")
            continue
        if repo in repos:
            problems.append(f"line {lineno}: repository {repo} is already on line {repos[repo]}")
            continue
        if nb and (nb.startswith("/") or ".." in Path(nb).parts):
            problems.append(f"line {lineno}: path {nb!r} must be relative, inside the repository")
            continue
        seen[name], repos[repo] = lineno, lineno
        learners.append(Learner(name, repo, nb, lineno))
    if problems:
        raise RosterError(f"{path}: " + "; ".join(problems))
    if not learners:
        raise RosterError(f"{path}: no learners after the header")
    return learners


def shard_of(roster: list[Learner], index: int, count: int) -> list[Learner]:
    """Learner ``i`` (in roster order) goes to shard ``i % count``: balanced and deterministic."""
    if count < 1 or not 0 <= index < count:
        raise RosterError(f"shard {index}/{count}: need 0 <= index < count")
    return [lr for i, lr in enumerate(roster) if i % count == index]


def shard_indices(roster: list[Learner], count: int) -> list[int]:
    """The matrix: ``count`` shards, but never more than there are learners (no empty shard)."""
    return list(range(max(1, min(count, len(roster)))))


def parse_deadline(text: str) -> datetime:
    """ISO 8601 with a time zone (``2026-03-01T23:59:00+01:00`` or ``...Z``); ``now`` for a snapshot."""
    if text.strip().lower() == "now":
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RosterError(f"deadline {text!r}: use ISO 8601, e.g. 2026-03-01T23:59:00+01:00") from None
    if when.tzinfo is None:
        raise RosterError(f"deadline {text!r} has no time zone (add +00:00, Z or your offset)")
    return when


# ----------------------------------------------------------------------------- fetch
def _git(args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=timeout)


def _git_env() -> dict:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/true", LC_ALL="C")
    token = os.environ.get("ATTNCOURSE_GIT_TOKEN")
    if token:  # like actions/checkout: an HTTP header for github.com, not in the URL or argv
        auth = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.https://github.com/.extraheader",
                   GIT_CONFIG_VALUE_0=f"AUTHORIZATION: basic {auth}")
    env.pop("ATTNCOURSE_GIT_TOKEN", None)
    return env


def _clean(text: bytes) -> str:
    out = text.decode(errors="replace").strip().splitlines()
    return (out[-1] if out else "")[:200]


def fetch_one(lr: Learner, deadline: datetime, chapter: str, dest: Path, path_template: str) -> dict:
    """Clone one repository, find its last commit at or before the deadline, copy the notebook."""
    nb_path = lr.path or path_template.format(chapter=chapter)
    record = {"learner": lr.learner, "repository": lr.repository, "path": nb_path, "commit": None,
              "committed_at": None, "head": None, "commits_after_deadline": 0, "notebook": None,
              "status": "fetch error", "message": ""}
    env = _git_env()
    with tempfile.TemporaryDirectory(prefix="attncourse-fetch-") as tmp:
        repo = Path(tmp) / "repo.git"
        try:
            clone = _git(["clone", "--quiet", "--bare", "--filter=blob:none", lr.url(), str(repo)], env=env)
        except subprocess.TimeoutExpired:
            record["message"] = "cloning timed out"
            return record
        if clone.returncode != 0:
            record["message"] = f"could not clone {lr.repository}: {_clean(clone.stderr)}"
            return record
        head = _git(["rev-parse", "HEAD"], cwd=repo, env=env)
        if head.returncode != 0:
            record.update(status="no submission", message="the repository has no commits")
            return record
        record["head"] = head.stdout.decode().strip()
        stamp = deadline.isoformat()
        found = _git(["rev-list", "-1", "--first-parent", f"--before={stamp}", "HEAD"], cwd=repo, env=env)
        sha = found.stdout.decode().strip()
        after = _git(["rev-list", "--count", "--first-parent", f"--since={stamp}", "HEAD"], cwd=repo, env=env)
        record["commits_after_deadline"] = int(after.stdout.decode().strip() or 0) if after.returncode == 0 else 0
        if not sha:
            record.update(status="no submission", message=f"no commit at or before the deadline {stamp}")
            return record
        when = _git(["show", "-s", "--format=%cI", sha], cwd=repo, env=env)
        record.update(commit=sha, committed_at=when.stdout.decode().strip() or None)
        blob = _git(["show", f"{sha}:{nb_path}"], cwd=repo, env=env)
        if blob.returncode != 0:
            record.update(status="no submission", message=f"{nb_path} does not exist at commit {sha[:12]}")
            return record
        out = dest / lr.learner / f"{chapter}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob.stdout)
        record.update(status="fetched", notebook=f"{lr.learner}/{chapter}.ipynb")
    return record


def fetch(roster: list[Learner], index: int, count: int, deadline: datetime, chapter: str, dest: str | Path,
          path_template: str = "notebooks/{chapter}.ipynb") -> dict:
    """Fetch one shard into ``dest`` and write ``dest/fetch.json``; returns that document."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    learners = {}
    for lr in shard_of(roster, index, count):
        learners[lr.learner] = fetch_one(lr, deadline, chapter, dest, path_template)
    doc = {"schema": "attncourse-fetch", "version": 1, "chapter": chapter, "deadline": deadline.isoformat(),
           "shard": [index, count], "learners": learners}
    (dest / FETCH).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


# ----------------------------------------------------------------------------- merge
def load_shard(folder: str | Path) -> dict:
    """``{"name", "grades", "fetch"}`` of one shard's output folder (either file may be missing)."""
    folder = Path(folder)
    shard = {"name": folder.name, "grades": None, "fetch": None}
    for key, name in (("grades", GRADES), ("fetch", FETCH)):
        p = folder / name
        if p.is_file():
            try:
                shard[key] = json.loads(p.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise RosterError(f"{p}: not valid JSON ({exc})") from None
    if shard["grades"] is None and shard["fetch"] is None:
        raise RosterError(f"{folder}: neither {GRADES} nor {FETCH} (is this a shard's output folder?)")
    return shard


def _learner_of(path: str) -> str:
    return Path(path).parent.name


def merge(shards: list[dict], roster: list[Learner] | None = None) -> dict:
    """Merge shard outputs into one class report: ``{"learners": [...], "problems": [...], ...}``.

    Every record of every shard is kept. Problems (each a sentence): a roster learner in no
    shard (a row with status ``missing``), a learner in two or more shards (one row per shard,
    status ``duplicate``), a learner not on the roster (status ``not on the roster``), and a
    fetched notebook that has no grade (status ``not graded``).
    """
    found: dict[str, list[dict]] = {}
    chapters, deadlines, exercise_ids, max_scores = set(), set(), [], []
    for shard in shards:
        fetched = (shard.get("fetch") or {}).get("learners", {}) or {}
        if shard.get("fetch"):
            chapters.add(shard["fetch"].get("chapter"))
            deadlines.add(shard["fetch"].get("deadline"))
        graded = {}
        for sub in (shard.get("grades") or {}).get("submissions", []):
            graded.setdefault(_learner_of(sub.get("path", "")), []).append(sub)
            if sub.get("chapter"):
                chapters.add(sub["chapter"])
            if sub.get("max_score"):
                max_scores.append(sub["max_score"])
            for ex in sub.get("exercises", []):
                if ex["id"] not in exercise_ids:
                    exercise_ids.append(ex["id"])
        for name in sorted(set(fetched) | set(graded)):
            f = fetched.get(name, {})
            subs = graded.get(name, [])
            rec = {"learner": name, "shard": shard["name"], "repository": f.get("repository"),
                   "commit": f.get("commit"), "committed_at": f.get("committed_at"),
                   "commits_after_deadline": f.get("commits_after_deadline"),
                   "status": None, "score": None, "max_score": None, "exercises": {}, "message": f.get("message", "")}
            if len(subs) > 1:
                rec["status"] = "duplicate"
                rec["message"] = f"{len(subs)} notebooks graded for this learner in one shard"
            elif subs:
                s = subs[0]
                rec.update(score=s.get("score"), max_score=s.get("max_score"),
                           exercises={e["id"]: e["score"] for e in s.get("exercises", [])},
                           status="graded" if s.get("status") == "graded" else "graded (unusable file)",
                           message=s.get("error") or rec["message"])
            elif f.get("status") == "fetched":
                rec["status"] = "not graded"
                rec["message"] = "the notebook was fetched but the shard has no grade for it"
            else:
                rec["status"] = f.get("status") or "unknown"
            found.setdefault(name, []).append(rec)
    max_score = max(max_scores) if max_scores else None
    problems, rows = [], []
    names = [lr.learner for lr in roster] if roster is not None else sorted(found)
    on_roster = set(names)
    repo_of = {lr.learner: lr.repository for lr in roster or []}
    for name in names + sorted(set(found) - on_roster):
        recs = found.get(name, [])
        if not recs:
            problems.append(f"learner {name} is in no shard's report (a failed or missing shard?): not graded")
            rows.append({"learner": name, "shard": None, "repository": repo_of.get(name), "commit": None,
                         "committed_at": None, "commits_after_deadline": None, "status": "missing", "score": None,
                         "max_score": max_score, "exercises": {}, "message": "not in any shard's report"})
            continue
        if len(recs) > 1:
            problems.append(f"learner {name} is in {len(recs)} shards ({', '.join(r['shard'] for r in recs)}): "
                            "the shards overlap; every copy is kept, none is chosen")
            for r in recs:
                r["status"] = "duplicate"
        if name not in on_roster:
            problems.append(f"learner {name} (shard {recs[0]['shard']}) is not on the roster")
            for r in recs:
                r["status"] = "not on the roster"
        for r in recs:
            if r["status"] == "not graded":
                problems.append(f"learner {name}: {r['message']} (shard {r['shard']})")
            if r["status"] == "no submission":  # nothing at the deadline: a real 0 for the gradebook
                r["score"], r["max_score"] = 0.0, max_score
            if r["repository"] is None:
                r["repository"] = repo_of.get(name)
            rows.append(r)
    return {"schema": "attncourse-class-grades", "version": 1, "chapter": _one(chapters), "deadline": _one(deadlines),
            "max_score": max_score, "exercises": exercise_ids, "shards": [s["name"] for s in shards],
            "problems": problems, "learners": rows}


def _one(values: set):
    """The value all shards agree on, else the sorted list of them (so a mix-up is visible)."""
    vals = sorted(v for v in values if v)
    return vals[0] if len(vals) == 1 else (vals or None)


CSV_HEAD = ["learner", "repository", "status", "score", "max_score"]
CSV_TAIL = ["commit", "committed_at", "commits_after_deadline", "shard", "message"]


def _num(x) -> str:
    if x is None:
        return ""
    return f"{x:.4f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def to_csv(doc: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEAD + doc["exercises"] + CSV_TAIL)
    for r in doc["learners"]:
        w.writerow([r["learner"], r["repository"] or "", r["status"], _num(r["score"]), _num(r["max_score"])]
                   + [_num(r["exercises"].get(ex)) for ex in doc["exercises"]]
                   + [r["commit"] or "", r["committed_at"] or "", _num(r["commits_after_deadline"]), r["shard"] or "",
                      (r["message"] or "").replace("\n", " ")[:300]])
    return buf.getvalue()


def to_markdown(doc: dict) -> str:
    rows = doc["learners"]
    graded = [r for r in rows if r["score"] is not None]
    lines = [f"## Class grades: chapter {doc['chapter']}", "",
             f"Deadline {doc['deadline']} · {len(rows)} rows · {len(graded)} with a score · "
             f"{len(doc['shards'])} shards", ""]
    if doc["problems"]:
        lines += [f"**{len(doc['problems'])} problem(s): the merge is incomplete; nothing was dropped.**", ""]
        lines += [f"- {p}" for p in doc["problems"]] + [""]
    lines += ["| learner | status | score | commit | note |", "|---|---|---|---|---|"]
    for r in rows:
        score = f"{_num(r['score'])}/{_num(r['max_score'])}" if r["score"] is not None else "—"
        note = (r["message"] or "").replace("|", "\\|").replace("\n", " ")[:120]
        lines.append(f"| {r['learner']} | {r['status']} | {score} | {(r['commit'] or '')[:10]} | {note} |")
    return "\n".join(lines) + "\n"


def write(doc: dict, output: str | Path) -> list[Path]:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in (("grades.csv", to_csv(doc)), ("class-grades.json", json.dumps(doc, indent=2) + "\n"),
                       ("summary.md", to_markdown(doc))):
        p = output / name
        tmp = output / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        out.append(p)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(to_markdown(doc))
    return out


# ----------------------------------------------------------------------------- CLI
def add_roster_parser(sub) -> None:
    p = sub.add_parser("roster", help="class grading: check a roster, plan shards, fetch a shard's notebooks",
                       description=__doc__.split("\n\n")[0])
    rs = p.add_subparsers(dest="roster_command", required=True)
    c = rs.add_parser("check", help="validate a roster file")
    c.add_argument("roster")
    s = rs.add_parser("shards", help="print the shard indices for a GitHub Actions matrix (JSON)")
    s.add_argument("roster")
    s.add_argument("--shards", type=int, required=True)
    s.add_argument("--github-output", action="store_true", help="also append shards=[...] to $GITHUB_OUTPUT")
    f = rs.add_parser("fetch", help="clone one shard's repositories at the deadline and copy their notebooks")
    f.add_argument("roster")
    f.add_argument("--shard", required=True, help="I/N: this is shard I of N (0-based)")
    f.add_argument("--deadline", required=True, help="ISO 8601 with a time zone, or 'now'")
    f.add_argument("--chapter", required=True)
    f.add_argument("--dest", required=True)
    f.add_argument("--path", default="notebooks/{chapter}.ipynb",
                   help="the notebook inside each repository (default notebooks/{chapter}.ipynb)")
    p.set_defaults(func=_roster_cli)


def add_merge_parser(report_sub) -> None:
    m = report_sub.add_parser("merge", help="merge the shards' reports into one class report (CSV, JSON, Markdown)")
    m.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="each shard's output folder (grades.json, fetch.json)")
    m.add_argument("--roster", default=None, help="the roster: every learner on it must be in exactly one shard")
    m.add_argument("--output", "-o", default="class-report", help="folder to write to (default class-report)")
    m.set_defaults(func=_merge_cli)


def _roster_cli(args) -> int:
    try:
        roster = read_roster(args.roster)
        if args.roster_command == "check":
            print(f"{args.roster}: {len(roster)} learners")
        elif args.roster_command == "shards":
            idx = shard_indices(roster, args.shards)
            print(json.dumps(idx))
            if args.github_output and os.environ.get("GITHUB_OUTPUT"):
                with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as fh:
                    fh.write(f"shards={json.dumps(idx)}\ncount={len(idx)}\n")
        else:
            m = re.fullmatch(r"(\d+)/(\d+)", args.shard)
            if not m:
                raise RosterError(f"--shard {args.shard}: use I/N, e.g. 0/4")
            doc = fetch(roster, int(m.group(1)), int(m.group(2)), parse_deadline(args.deadline), args.chapter,
                        args.dest, args.path)
            counts: dict[str, int] = {}
            for rec in doc["learners"].values():
                counts[rec["status"]] = counts.get(rec["status"], 0) + 1
                if rec["status"] != "fetched":
                    print(f"  {rec['learner']}: {rec['status']}: {rec['message']}")
            print(f"shard {args.shard}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    except RosterError as exc:
        print(f"attncourse roster: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _merge_cli(args) -> int:
    try:
        roster = read_roster(args.roster) if args.roster else None
        doc = merge([load_shard(s) for s in args.shards], roster)
    except RosterError as exc:
        print(f"attncourse report merge: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    written = write(doc, args.output)
    print(f"{len(doc['learners'])} rows -> " + ", ".join(str(p) for p in written))
    if doc["problems"]:
        print(f"attncourse report merge: {len(doc['problems'])} problem(s); every record was written:", file=sys.stderr)
        for p in doc["problems"]:
            print(f"  - {p}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def main(argv=None) -> int:
    """``python attncourse/grading/merge.py roster ...|report merge ...`` (no torch needed)."""
    ap = argparse.ArgumentParser(prog="merge.py")
    sub = ap.add_subparsers(dest="command", required=True)
    add_roster_parser(sub)
    report = sub.add_parser("report", help="reports")
    add_merge_parser(report.add_subparsers(dest="report_command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
