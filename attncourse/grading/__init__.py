"""Exercise release and autograding (learner code never runs in the grading process).

release.py       the authoring format; ``attncourse release`` (solutions -> learner notebooks)
learner_repo.py  ``attncourse release --learner-repo DIR`` (no solutions, no hidden tests)
submission.py    read a submitted notebook: setup + exercise cells by id, static checks
grader.py        pytest over the hidden tests in this process, the ``learner`` fixture, scores
sandbox.py       parent side of the sandboxed child: zygote, start, load cells, calls, strikes, deadline
child.py         the child: runs the learner's cells and answers calls (untrusted side)
confine.py       limits, capability drop, seccomp, Landlock (applied by the child to itself)
wire.py          the message format: JSON + raw tensor bytes, no pickle
testkit.py       what hidden tests use: ``expect``, ``LearnerFailure``, markers
report.py        JSON, Gradescope, GitHub Classroom, JUnit XML, Markdown
gradescope.py    ``attncourse gradescope NN_topic``: a ready autograder.zip (and what runs in it)
merge.py         class grading: roster, shards, fetch at a deadline, ``attncourse report merge``
cli.py           ``attncourse grade`` (and registers the commands above)
"""
