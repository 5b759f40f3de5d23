"""Every image the README shows is made by a script: a `docs/make_*.py` declares it in `MAKES`,
writes a file of that name, and `make docs` runs that script. So each README picture can be
regenerated (`make docs`), never only hand-placed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def readme_images(text: str) -> set[str]:
    """The docs/ files the README shows or links: markdown images and links to docs/*.png|gif."""
    found = re.findall(r"\(docs/([\w./-]+\.(?:png|gif|jpg|webp))\)", text)
    found += re.findall(r"`docs/([\w./-]+\.(?:png|gif|jpg|webp))`", text)
    return set(found)


def declared(script: Path) -> tuple[str, ...]:
    """A script's module-level MAKES tuple (read, not run)."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MAKES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def code_without_makes(script: Path) -> str:
    """A script's code less its docstring and its MAKES: where it must name what it writes."""
    tree = ast.parse(script.read_text())
    body = [
        n
        for n in tree.body
        if not (isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "MAKES" for t in n.targets))
    ]
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return ast.unparse(ast.Module(body=body, type_ignores=[]))


def makefile_docs_scripts(text: str) -> set[str]:
    """The scripts the Makefile's `docs` target runs."""
    block = re.search(r"^docs:.*\n((?:\t.*\n)+)", text, re.M)
    return set(re.findall(r"docs/(make_\w+\.py)", block.group(1))) if block else set()


def test_every_readme_image_has_a_script_that_makes_it():
    images = readme_images((ROOT / "README.md").read_text())
    assert {"serve.png", "gallery/controls.png", "gallery/drawers.png"} <= images  # the reader works
    scripts = {s.name: declared(s) for s in DOCS.glob("make_*.py")}
    run_by_make = makefile_docs_scripts((ROOT / "Makefile").read_text())
    for image in sorted(images):
        makers = [name for name, makes in scripts.items() if image in makes]
        assert makers, f"README shows docs/{image}, but no docs/make_*.py declares it in MAKES"
        name = makers[0]
        assert name in run_by_make, f"docs/{name} makes docs/{image} but `make docs` does not run it"
        assert Path(image).name in code_without_makes(DOCS / name), f"docs/{name} declares {image} but never names it"
        assert (DOCS / image).is_file(), f"README shows docs/{image}, which is missing"


def test_the_check_reads_what_it_should():
    text = "![a](docs/gallery/a.png) see `docs/gallery/b.gif` and (docs/c.txt)"
    assert readme_images(text) == {"gallery/a.png", "gallery/b.gif"}
    assert makefile_docs_scripts("docs: install\n\t$(BIN)/python docs/make_x.py\n\nclean:\n") == {"make_x.py"}
