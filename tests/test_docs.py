"""The documentation site builds strictly and shows what the code says.

``mkdocs build --strict`` fails on any warning: a broken link or anchor, a
docstring mkdocstrings cannot parse, a nav entry without a page. The
generated parts are checked against the code: the layer tables list every
registered layer, and the API reference renders ``vn.certify``'s docstring.
"""

import html
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import verinet as vn

ROOT = Path(__file__).resolve().parents[1]
#: module -> the package that provides it (for the error message).
DOCS_PACKAGES = {
    "mkdocs": "mkdocs",
    "material": "mkdocs-material",
    "mkdocstrings": "mkdocstrings",
    "mkdocstrings_handlers.python": "mkdocstrings-python",
    "mkdocs_jupyter": "mkdocs-jupyter",
}


def _missing_packages() -> list[str]:
    missing = []
    for module, package in DOCS_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing_packages()
    if missing:
        pytest.fail(
            f"The docs toolchain is not installed (missing: {', '.join(missing)}). "
            "It is part of the dev extras: pip install -e '.[dev]'.",
            pytrace=False,
        )
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "KERAS_BACKEND": "torch", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        "mkdocs build --strict failed:\n" + result.stdout + result.stderr
    )
    return out


def _first_column(page: str) -> list[list[str]]:
    """The first-column code names of each table on an HTML page."""
    tables = re.findall(r"<table>(.*?)</table>", page, flags=re.S)
    return [re.findall(r"<tr>\s*<td><code>(\w+)</code></td>", t) for t in tables]


def test_layer_tables_list_every_registered_layer(site):
    page = (site / "layers" / "index.html").read_text(encoding="utf-8")
    names = sorted(spec.name for spec in vn.layers.registered())
    tables = [rows for rows in _first_column(page) if rows]
    # The support table (the README's) and the bound-rules table.
    assert len(tables) == 2, f"expected two layer tables, found {len(tables)}"
    for rows in tables:
        assert rows == names


def test_api_reference_renders_certify_docstring(site):
    page = (site / "api" / "certify" / "index.html").read_text(encoding="utf-8")
    summary = inspect.getdoc(vn.certify).splitlines()[0]
    assert html.escape(summary, quote=False) in page
    assert 'id="verinet.certify.certify.certify"' in page


def test_every_tutorial_has_a_page(site):
    stems = [p.stem for p in sorted((ROOT / "tutorials").glob("[0-9]*.py"))]
    for stem in stems:
        assert (site / "tutorials" / stem / "index.html").is_file(), stem


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_freshly_built_notebook_is_not_called_stale():
    """The site marks an executed notebook stale when its code differs from
    the tutorial's: the cells ``tutorials/build.py`` drops (ruff directives)
    must not count as a difference, and a real edit must."""
    import jupytext

    hooks = _load(ROOT / "docs" / "hooks.py")
    build = _load(ROOT / "tutorials" / "build.py")
    for path in sorted((ROOT / "tutorials").glob("[0-9]*.py")):
        source = jupytext.read(path)
        built = jupytext.read(path)
        built.cells = [c for c in built.cells if not build._lint_only(c)]
        assert hooks._code_cells(built) == hooks._code_cells(source), path.name
        edited = [c for c in built.cells if c.cell_type == "code"]
        edited[-1].source += "\nprint('changed')"
        assert hooks._code_cells(built) != hooks._code_cells(source), path.name
