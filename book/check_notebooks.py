"""Refuse to build the book from a notebook that was not fully executed or holds an error.

The book renders stored outputs (execution is off in _config.yml), so this check is what
makes a notebook error fail the build. Usage: python book/check_notebooks.py [notebooks...]
(default: every notebook listed in _toc.yml).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [REPO / f"{f}.ipynb" for f in files if (REPO / f"{f}.ipynb").exists()]


def problems(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        if cell.get("execution_count") is None:
            found.append(f"{path.name}: code cell {i} was never executed")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"{path.name}: code cell {i} raised {out.get('ename')}: {out.get('evalue')}")
    return found


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or toc_notebooks()
    issues = [p for path in paths for p in problems(path)]
    for issue in issues:
        print(issue, file=sys.stderr)
    if issues:
        print("re-execute the notebook(s), e.g. `make notebooks`, before building the book", file=sys.stderr)
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
