"""The book builds without a warning, and its pages load no script or font from the internet."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_toc_notebooks_are_executed_without_errors():
    sys.path.insert(0, str(REPO / "book"))
    from check_notebooks import problems, toc_notebooks

    notebooks = toc_notebooks()
    assert any(p.name == "00_randomized_smoothing.ipynb" for p in notebooks)
    assert [p for nb in notebooks for p in problems(nb)] == []


def test_the_check_catches_a_notebook_error(tmp_path):
    sys.path.insert(0, str(REPO / "book"))
    from check_notebooks import problems

    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [{"cell_type": "code", "source": ["1/0"], "execution_count": 1, "metadata": {}, '
                   '"outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",'
                   ' "traceback": []}]}]}')
    assert problems(bad) == ["bad.ipynb: code cell 0 raised ZeroDivisionError: division by zero"]


@pytest.mark.slow
def test_book_builds_cleanly_and_offline(tmp_path):
    build = tmp_path / "build"
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(REPO), "--path-output", str(build), "--warningiserror",
                           "--keep-going"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = build / "_build" / "html"
    pages = list(html.rglob("*.html"))
    assert (html / "notebooks" / "00_randomized_smoothing.html").exists()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    remote = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["']https?://""")
    offenders = [p.name for p in pages if remote.search(p.read_text(errors="ignore"))]
    assert not offenders, f"pages load remote scripts/styles: {offenders}"
    primer = (html / "notebooks" / "00_randomized_smoothing.html").read_text()
    assert "mathjax/tex-chtml.js" in primer and primer.count("<img") >= 3
