"""The hidden tests run only under the grader (``attncourse grade``), never in the normal suite.

They need the ``learner`` fixture that the grader provides, so a plain ``python -m pytest``
from the repository root skips this folder. The grader runs pytest with ``--noconftest``,
so this file never affects grading.
"""
collect_ignore_glob = ["*.py"]
