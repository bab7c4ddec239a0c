"""``attncourse grade`` (and the ``--learner-repo`` option of ``attncourse release``).

Exit status (whether grading *ran*, not how well the learner did):

* ``0`` — every submission was graded (scores may be anything, including 0) and the
  reports were written. A file that is not a valid notebook is graded too: it scores 0
  with a message, so it also gives 0.
* ``2`` — the grader could not run: bad arguments, no hidden tests for the chapter folder,
  a broken hidden test module, or the reports could not be written.
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_GRADER_ERROR = 0, 2


def add_parser(sub) -> None:
    from attncourse.grading.report import FORMATS
    from attncourse.grading.sandbox import Limits

    d = Limits()
    p = sub.add_parser(
        "grade", help="grade exercise notebooks with the hidden tests (learner code runs sandboxed)",
        description="Grade exercise notebooks (or folders of them) with the hidden tests. The chapter is the "
                    "assignment's (--chapter) or, without it, read from each notebook's metadata (else its file "
                    "name); the report says which. Exit status 0: grading ran (whatever the scores); 2: the "
                    "grader could not run (bad arguments, a missing file, no hidden tests).")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="a notebook, or a folder of notebooks")
    p.add_argument("--format", "-f", default="json,markdown",
                   help=f"comma-separated report formats: {', '.join(FORMATS)} or all (default: json,markdown)")
    p.add_argument("--output", "--out", "-o", default="grading-report",
                   help="folder for the reports (default: grading-report); --out as in `attncourse bench`")
    p.add_argument("--tests", default=None,
                   help="folder of hidden tests test_<chapter>.py (default: tests/autograder)")
    p.add_argument("--chapter", default=None,
                   help="the assignment's chapter, e.g. 01_sdpa: every notebook is graded as this chapter, and one "
                        "whose metadata names another chapter scores 0 with a message (default: each notebook's "
                        "metadata, else its file name)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="grade this many notebooks in parallel (default 1)")
    p.add_argument("--timeout", type=float, default=d.call_timeout,
                   help=f"seconds per call of a learner function (default {d.call_timeout:g})")
    p.add_argument("--memory", type=int, default=d.memory_mb,
                   help=f"address-space limit of the sandbox in MiB (default {d.memory_mb}, which fits Gradescope's "
                        "default 768 MB container; torch alone maps ~625)")
    p.add_argument("--cpu-time", type=int, default=d.cpu_seconds,
                   help=f"CPU seconds per sandbox process (default {d.cpu_seconds})")
    p.add_argument("--total-timeout", type=float, default=d.total_timeout,
                   help=f"sandbox seconds per notebook, from its first ready sandbox: loading, restarts and calls "
                        f"stop there and the remaining tests fail at once (default {d.total_timeout:g})")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the Points line")
    p.add_argument("--debug", action="store_true",
                   help="show pytest's own output and the sandbox's stderr (instructors only: may show hidden tests)")
    p.set_defaults(func=_grade)
    _extend_release(sub)
    from attncourse.grading import gradescope, merge

    gradescope.add_parser(sub)
    merge.add_roster_parser(sub)
    report = sub.add_parser("report", help="work with grading reports (merge the shards of a class run)")
    merge.add_merge_parser(report.add_subparsers(dest="report_command", required=True))


def _grade(args) -> int:
    from attncourse.grading.grader import GraderError, grade_paths
    from attncourse.grading.report import FORMATS, to_markdown, totals, write_reports
    from attncourse.grading.sandbox import Limits

    formats = list(FORMATS) if args.format == "all" else [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        print(f"attncourse grade: unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}",
              file=sys.stderr)
        return EXIT_GRADER_ERROR
    if args.jobs < 1 or args.timeout <= 0 or args.memory < 512 or args.cpu_time < 1:
        print("attncourse grade: --jobs ≥ 1, --timeout > 0, --memory ≥ 512 and --cpu-time ≥ 1 are required",
              file=sys.stderr)
        return EXIT_GRADER_ERROR
    from pathlib import Path

    missing = [p for p in args.submissions if not Path(p).exists()]
    if missing:
        print(f"attncourse grade: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_GRADER_ERROR
    if args.chapter is not None and args.chapter != "from-filename":
        from attncourse.grading.grader import chapters_in, default_tests_dir

        known = chapters_in(Path(args.tests) if args.tests else default_tests_dir())
        if args.chapter not in known:
            print(f"attncourse grade: --chapter {args.chapter}: no hidden tests for it (known: {', '.join(known) or 'none'})",
                  file=sys.stderr)
            return EXIT_GRADER_ERROR
    limits = Limits(call_timeout=args.timeout, memory_mb=args.memory, cpu_seconds=args.cpu_time,
                    total_timeout=args.total_timeout)
    try:
        results = grade_paths(args.submissions, jobs=args.jobs, tests_dir=args.tests, limits=limits,
                              chapter=args.chapter, debug=args.debug)
    except GraderError as exc:
        print(f"attncourse grade: {exc}", file=sys.stderr)
        return EXIT_GRADER_ERROR
    if not results:
        print("attncourse grade: no notebooks found in " + ", ".join(args.submissions), file=sys.stderr)
        return EXIT_GRADER_ERROR
    try:
        written = write_reports(results, formats, args.output)
    except OSError as exc:
        print(f"attncourse grade: cannot write the reports: {exc}", file=sys.stderr)
        return EXIT_GRADER_ERROR
    score, max_score = totals(results)
    if not args.quiet:
        print(to_markdown(results).rsplit("Points", 1)[0].rstrip())
        print("reports: " + ", ".join(str(w) for w in written))
        mem = [r.sandbox.get("peak_rss_mb", {}) for r in results if r.sandbox]
        if mem:
            print("peak memory per job (MiB, resident): grader {}, sandbox {}, zygote {} "
                  "(size --jobs by their sum)".format(*(max(m.get(k, 0) for m in mem)
                                                       for k in ("grader", "sandbox", "zygote"))))
    print(f"Points {score:g}/{max_score:g}")
    return EXIT_OK


# --------------------------------------------------------------------------- release --learner-repo
def _extend_release(sub) -> None:
    """Add ``--learner-repo DIR`` to ``attncourse release`` (defined in attncourse/cli.py)."""
    release = sub.choices.get("release")
    if release is None:
        return
    release.add_argument("--learner-repo", metavar="DIR", default=None,
                         help="also write a learner repository to DIR: book, notebooks, package, README and the "
                              "GitHub Classroom workflow, without solutions/ or tests/")
    plain = release.get_default("func")

    def run(args) -> int:
        code = plain(args)
        if code != 0 or not getattr(args, "learner_repo", None) or getattr(args, "check", False):
            return code
        from attncourse.grading.learner_repo import LearnerRepoError, write_learner_repo

        try:
            files = write_learner_repo(args.learner_repo, root=".", notebooks=args.notebooks)
        except LearnerRepoError as exc:
            print(f"attncourse release: {exc}", file=sys.stderr)
            return 2
        print(f"wrote a learner repository to {args.learner_repo} ({len(files)} files)")
        return 0

    release.set_defaults(func=run)


def main(argv=None) -> int:  # ``python -m attncourse.grading.cli grade ...``
    parser = argparse.ArgumentParser(prog="attncourse")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
