"""The book builds with warnings as errors (-W).

Notebook execution is switched off for this build: nbval has already executed every notebook in
the same test run (see book/contributing.md, "How CI avoids executing notebooks twice").
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    assert exe, "jupyter-book is not installed (pip install -r requirements.txt)"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    cfg = tmp_path / "_config.yml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run([exe, "build", str(ROOT), "-W", "--keep-going", "--config", str(cfg),
                           "--path-output", str(tmp_path)], capture_output=True, text=True, timeout=600)
    log = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, f"jupyter-book build -W failed:\n{log}"
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists() or (html / "book" / "intro.html").exists()
    page = (html / "book" / "01_sdpa" / "index.html").read_text()
    assert "mathjax" in page.lower()
