"""Every workflow under .github/workflows/ is valid, offline.

* against the GitHub-workflow JSON schema that check-jsonschema vendors (no network);
* jobs: every ``needs`` names a job, every ``needs.<job>.outputs.<name>`` a declared output of
  a job it needs, every job output a step ``id`` of that job;
* every ``run:`` block parses as bash (``${{ ... }}`` expressions replaced by a word);
* the class-grading template never runs in a public repository and is not given to learners.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def _load(path: Path):
    from ruamel.yaml import YAML  # YAML 1.2, like GitHub: `on` stays a string

    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema():
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (requirements.txt)")
    from importlib.resources import files

    return json.loads((files("check_jsonschema.builtin_schemas.vendor") / "github-workflows.json").read_text())


def test_there_are_workflows():
    names = {p.name for p in WORKFLOWS}
    assert {"classroom.yml", "grade-class.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_schema(path, schema):
    import jsonschema

    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(_load(path)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_jobs_needs_outputs_and_run_blocks(path, tmp_path):
    wf = _load(path)
    jobs = wf["jobs"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        assert set(needs) <= set(jobs), f"{name} needs unknown jobs {set(needs) - set(jobs)}"
        ids = {s.get("id") for s in job.get("steps", []) if s.get("id")}
        for out, value in (job.get("outputs") or {}).items():
            for ref in re.findall(r"steps\.([\w-]+)\.outputs", str(value)):
                assert ref in ids, f"{name}.outputs.{out} reads step {ref!r}, which {name} does not have"
        text = json.dumps(job)
        for other, output in re.findall(r"needs\.([\w-]+)\.outputs\.([\w-]+)", text):
            assert other in needs, f"{name} reads needs.{other} without needing it"
            assert output in (jobs[other].get("outputs") or {}), f"{name} reads {other}.outputs.{output}: not declared"
        for i, step in enumerate(job.get("steps", [])):
            if "run" in step:
                script = tmp_path / f"{name}-{i}.sh"
                script.write_text(EXPR.sub("EXPR", step["run"]))
                check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
                assert check.returncode == 0, f"{path.name} {name} step {i}: {check.stderr}"
            if "uses" in step:
                assert re.search(r"@v\d+$|@[0-9a-f]{40}$", step["uses"]), f"unpinned action {step['uses']}"


def test_class_workflow_is_for_private_instructor_repositories_only():
    wf = _load(ROOT / ".github" / "workflows" / "grade-class.yml")
    assert "github.event.repository.private" in wf["jobs"]["plan"]["if"]
    assert wf["jobs"]["grade"]["strategy"]["fail-fast"] is False
    assert "always()" in wf["jobs"]["merge"]["if"]
    text = (ROOT / ".github" / "workflows" / "grade-class.yml").read_text()
    for command in ("roster check", "roster shards", "roster fetch", "report merge", "--chapter", "--jobs"):
        assert command in text
    from attncourse.grading.learner_repo import COPY_FILES

    assert ".github/workflows/grade-class.yml" not in COPY_FILES


def test_the_schema_check_catches_mistakes(schema):
    import jsonschema

    def errors(mutate):
        wf = _load(ROOT / ".github" / "workflows" / "grade-class.yml")
        mutate(wf)
        return list(jsonschema.Draft7Validator(schema).iter_errors(wf))

    assert errors(lambda wf: wf["jobs"]["grade"].__setitem__("step", wf["jobs"]["grade"].pop("steps")))  # a typo
    assert errors(lambda wf: wf.__setitem__("job", wf.pop("jobs")))
    assert not errors(lambda wf: None)
