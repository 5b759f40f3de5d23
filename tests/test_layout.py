"""The package's shape: no function longer than about a screen (issue 13)."""

import ast
from pathlib import Path

import pixgen

PACKAGE = Path(pixgen.__file__).parent
MAX_LINES = 60
SKIP: set[str] = set()  # every module keeps the limit, the shapes training script included


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() in SKIP:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
