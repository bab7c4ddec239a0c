"""The ``attncourse`` command: ``release``, ``grade`` and ``bench``.

Each subcommand lives beside the code it drives and registers itself through an
``add_parser(subparsers)`` function, so this file stays a table of contents.
"""
from __future__ import annotations

import argparse
import sys


def _release_parser(sub):
    p = sub.add_parser("release", help="write learner notebooks/ from solutions/ (solutions become stubs)",
                       description="Write the learner notebooks: every solution region of solutions/*.ipynb becomes "
                                   "a stub that raises NotImplementedError; outputs are cleared. Deterministic: "
                                   "running it twice changes nothing.")
    p.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    p.add_argument("--notebooks", default="notebooks", help="folder to write learner notebooks to (default: notebooks)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if any learner notebook is missing or stale")
    p.set_defaults(func=_release)


def _release(args) -> int:
    from attncourse.grading.release import ExerciseFormatError, release

    try:
        changed = release(args.solutions, args.notebooks, check=args.check)
    except ExerciseFormatError as exc:
        print(f"attncourse release: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print("stale learner notebooks (run `attncourse release`):", *changed, sep="\n  ")
            return 1
        print("learner notebooks are up to date")
        return 0
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("learner notebooks are already up to date")
    return 0


DESCRIPTION = """The attncourse command.

  attncourse release    write the learner notebooks (notebooks/) from the solutions (solutions/)
  attncourse grade      grade submitted notebooks with the hidden tests (learner code runs sandboxed)
  attncourse gradescope build a Gradescope autograder.zip for one chapter
  attncourse roster     plan, shard and fetch a class's repositories for grading in CI
  attncourse report     merge the reports of sharded grading jobs (CSV, JSON, Markdown)
  attncourse bench      time attention implementations and measure their peak memory

Run `attncourse <command> --help` for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attncourse", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _release_parser(sub)
    import importlib

    for module in ("attncourse.grading.cli", "attncourse.bench"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
