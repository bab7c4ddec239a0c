"""Report formats. Every format covers all graded notebooks of one run, written atomically.

=============  ==================  ===========================================================
format         file                for
=============  ==================  ===========================================================
``json``       ``grades.json``     the grader's own record (schema below); instructors, scripts
``gradescope`` ``results.json``    Gradescope's autograder (copy to /autograder/results/)
``classroom``  ``classroom.json``  GitHub Classroom's ``autograding-grading-reporter`` (base64 it
                                   into a step output); also prints ``Points X/Y`` and appends
                                   the Markdown to ``$GITHUB_STEP_SUMMARY`` when that is set
``junit``      ``junit.xml``       CI test viewers (one testsuite per notebook)
``markdown``   ``summary.md``      humans; the GitHub Actions job summary
=============  ==================  ===========================================================

``grades.json`` (schema ``attncourse-grades``, version 1)::

    {"schema": "attncourse-grades", "version": 1, "attncourse": "0.1.0", "graded_at": ISO 8601,
     "score": float, "max_score": float,
     "submissions": [{
        "path": str, "chapter": str | null, "score": float, "max_score": float,
        "chapter_source": "assignment" | "metadata" | "file name" | "only chapter" | null,
        "status": "graded" | "error", "error": str | null,   # error: nothing could be graded
        "notes": [str],                                      # e.g. about the setup cell
        "execution_time": seconds,
        "sandbox": {"confinement": {...}, "restarts": int, "limits": {...},
                    "strikes": {exercise id: [str]},           # timeouts, crashes, out-of-memory
                    "peak_rss_mb": {"grader", "sandbox", "zygote"},  # resident MiB, to size --jobs
                    "startup_s": seconds | null,               # until the first child was ready
                    "sandbox_s": seconds},                     # sandbox time used (--total-timeout)
        "exercises": [{"id", "function", "score", "max_score", "passed", "total",
                       "problem": str | null,              # why every test of it failed
                       "notes": [str]}],
        "tests": [{"name", "exercise", "weight", "status": "passed"|"failed"|"error"|"skipped",
                   "message", "score", "max_score", "duration"}]}]}

Messages never contain hidden inputs or expected values, and never the learner's printed
output (a learner could print anything the sandbox could read).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

FORMATS = {"json": "grades.json", "gradescope": "results.json", "classroom": "classroom.json",
           "junit": "junit.xml", "markdown": "summary.md"}


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _label(sub) -> str:
    return sub.chapter or Path(sub.path).stem


_SOURCES = {"assignment": "the assignment's chapter (--chapter)",
            "metadata": "read from the notebook's metadata; grade with --chapter to pin the assignment's chapter",
            "file name": "guessed from the file name",
            "only chapter": "the only chapter with hidden tests"}


def chapter_line(sub) -> str:
    """Which chapter a submission was graded as, and why: instructors must see it at a glance."""
    if not sub.chapter:
        return "Chapter: unknown"
    why = _SOURCES.get(getattr(sub, "chapter_source", None) or "", "")
    return f"Graded as chapter {sub.chapter}" + (f" ({why})" if why else "")


def totals(results) -> tuple[float, float]:
    return round(sum(r.score for r in results), 6), round(sum(r.max_score for r in results), 6)


# ----------------------------------------------------------------------------- formats
def to_json(results) -> str:
    from attncourse import __version__

    score, max_score = totals(results)
    doc = {"schema": "attncourse-grades", "version": 1, "attncourse": __version__,
           "graded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "score": score, "max_score": max_score, "submissions": [r.to_dict() for r in results]}
    return json.dumps(doc, indent=2) + "\n"


def _exercise_message(sub, ex) -> str:
    if ex.problem:
        return ex.problem
    failed = [t for t in sub.tests if t.exercise == ex.id and t.status != "passed"]
    if not failed:
        return f"all {ex.total} tests passed"
    lines = [f"{ex.passed}/{ex.total} tests passed. Failing:"]
    seen = set()
    for t in failed:
        if t.message in seen:
            continue
        seen.add(t.message)
        lines.append(f"- {t.name}: {t.message}")
        if len(seen) >= 5:
            more = len(failed) - sum(1 for f in failed if f.message in seen)
            if more > 0:
                lines.append(f"- ... and {more} more failing tests")
            break
    return "\n".join(lines)


def to_gradescope(results) -> str:
    score, max_score = totals(results)
    tests, out = [], []
    for sub in results:
        out.append(f"{_label(sub)}: {chapter_line(sub)}: {_fmt(sub.score)}/{_fmt(sub.max_score)}")
        if sub.error:
            out.append(f"{_label(sub)}: {sub.error}")
        out.extend(f"{_label(sub)}: {n}" for n in sub.notes)
        for t in sub.tests:
            tests.append({"name": f"{_label(sub)} · {t.exercise} · {t.name}", "score": round(t.score, 4),
                          "max_score": round(t.max_score, 4),
                          "status": "passed" if t.status == "passed" else "failed",
                          "output": t.message, "visibility": "visible"})
    time = round(sum(r.execution_time for r in results), 3)
    doc = {"score": score, "max_score": max_score, "execution_time": time,
           "output": "\n".join(out) or f"Autograded: {_fmt(score)}/{_fmt(max_score)} points",
           "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}
    return json.dumps(doc, indent=2) + "\n"


def to_classroom(results) -> str:
    """The runner-result JSON read by GitHub Classroom's autograding-grading-reporter."""
    score, max_score = totals(results)
    tests = []
    for sub in results:
        if sub.error:
            tests.append({"name": f"{_label(sub)}: the notebook", "status": "error", "score": 0,
                          "message": sub.error, "line_no": 0, "execution_time": f"{sub.execution_time:.1f}s"})
        for ex in sub.exercises:
            ok = ex.score >= ex.max_score - 1e-9
            tests.append({"name": f"{_label(sub)}: {ex.id} ({_fmt(ex.score)}/{_fmt(ex.max_score)})",
                          "status": "pass" if ok else "fail", "score": round(ex.score, 4),
                          "message": _exercise_message(sub, ex), "line_no": 0,
                          "execution_time": f"{sub.execution_time:.1f}s"})
    status = "error" if any(r.error for r in results) else ("pass" if score >= max_score else "fail")
    return json.dumps({"version": 1, "status": status, "max_score": max_score, "tests": tests}, indent=2) + "\n"


def to_junit(results) -> str:
    root = ET.Element("testsuites", name="attncourse", tests=str(sum(len(r.tests) for r in results)),
                      failures=str(sum(t.status == "failed" for r in results for t in r.tests)),
                      errors=str(sum(t.status == "error" for r in results for t in r.tests) + sum(bool(r.error) for r in results)))
    for sub in results:
        suite = ET.SubElement(root, "testsuite", name=_label(sub), file=sub.path, tests=str(len(sub.tests)),
                              failures=str(sum(t.status == "failed" for t in sub.tests)),
                              errors=str(sum(t.status == "error" for t in sub.tests) + bool(sub.error)),
                              skipped=str(sum(t.status == "skipped" for t in sub.tests)),
                              time=f"{sub.execution_time:.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="score", value=_fmt(sub.score))
        ET.SubElement(props, "property", name="max_score", value=_fmt(sub.max_score))
        if sub.error:
            case = ET.SubElement(suite, "testcase", classname=_label(sub), name="notebook")
            ET.SubElement(case, "error", message=sub.error)
        for t in sub.tests:
            case = ET.SubElement(suite, "testcase", classname=f"{_label(sub)}.{t.exercise}", name=t.name,
                                 time=f"{t.duration:.3f}")
            if t.status in ("failed", "error"):
                ET.SubElement(case, "failure" if t.status == "failed" else "error", message=t.message).text = t.message
            elif t.status == "skipped":
                ET.SubElement(case, "skipped", message=t.message)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def to_markdown(results) -> str:
    score, max_score = totals(results)
    lines = [f"## Autograder: {_fmt(score)}/{_fmt(max_score)} points", ""]
    for sub in results:
        lines.append(f"### `{_md_escape(sub.path)}` ({_label(sub)}): {_fmt(sub.score)}/{_fmt(sub.max_score)}")
        lines.append("")
        lines += [f"**{_md_escape(chapter_line(sub))}**", ""]
        if sub.error:
            lines += [f"**Could not grade this notebook:** {_md_escape(sub.error)}", ""]
        for n in sub.notes:
            lines.append(f"- note: {_md_escape(n)}")
        if sub.exercises:
            lines += ["| exercise | points | tests passed | feedback |", "|---|---|---|---|"]
            for ex in sub.exercises:
                mark = "✅" if ex.score >= ex.max_score - 1e-9 else ("⏳" if ex.problem is None and any(
                    "not implemented" in t.message for t in sub.tests if t.exercise == ex.id) else "❌")
                first = ex.problem or next((t.message for t in sub.tests if t.exercise == ex.id
                                            and t.status != "passed"), "")
                notes = "; ".join(ex.notes)
                fb = _md_escape((first + (" — " + notes if notes else ""))[:400])
                lines.append(f"| {mark} `{ex.id}` | {_fmt(ex.score)}/{_fmt(ex.max_score)} | {ex.passed}/{ex.total} | {fb} |")
            lines.append("")
            groups: dict[tuple[str, str], list[str]] = {}
            for t in sub.tests:
                problem = next((e.problem for e in sub.exercises if e.id == t.exercise), None)
                if t.status in ("passed", "skipped") or problem or t.message.endswith("not implemented yet"):
                    continue
                groups.setdefault((t.exercise, t.message), []).append(t.name)
            if groups:
                lines += ["<details><summary>Failing tests</summary>", ""]
                for (ex_id, msg), names in list(groups.items())[:40]:
                    which = f"`{_md_escape(names[0])}`" + (f" and {len(names) - 1} more" if len(names) > 1 else "")
                    lines.append(f"- `{ex_id}` · {which}: {_md_escape(msg)}")
                lines += ["", "</details>", ""]
    lines.append(f"Points {_fmt(score)}/{_fmt(max_score)}")
    return "\n".join(lines) + "\n"


WRITERS = {"json": to_json, "gradescope": to_gradescope, "classroom": to_classroom,
           "junit": to_junit, "markdown": to_markdown}


def write_reports(results, formats, output: str | Path) -> list[Path]:
    """Write each requested format into ``output``; returns the paths written."""
    output = Path(output)
    written = []
    for fmt in formats:
        path = output / FORMATS[fmt]
        _atomic_write(path, WRITERS[fmt](results))
        written.append(path)
    if "classroom" in formats and os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(to_markdown(results))
    return written
