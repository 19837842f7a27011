"""mkdocs hooks: the parts of the site that are generated from the code.

``mkdocs.yml`` loads this file (``hooks:``). It does three things at every
build, so the site cannot drift from the code:

* **Layer tables.** ``layers.md`` holds the placeholders
  ``<!-- layer-table -->`` and ``<!-- bound-rules-table -->``; they become
  ``verinet.layers.registry.support_table()`` (the README's table) and a
  table of each registered layer's bound rules, read from its class. A
  missing placeholder fails the build.
* **Tutorials.** The tutorials are jupytext percent-format sources,
  ``tutorials/NN_name.py``; ``make tutorials`` writes their executed
  notebooks (outputs and figures) to ``docs/tutorials/NN_name.ipynb``. The
  ``Tutorials`` section of the nav is filled with one page per tutorial:
  the executed notebook when there is one, else the ``.py`` source rendered
  without outputs (with a note saying so), so a fresh clone builds too.
  Both give the page the same address, ``tutorials/NN_name/``. An executed
  notebook whose code no longer matches its source gets a note as well.
* **Optional pages.** Nav entries listed in ``OPTIONAL_PAGES`` (pages
  other people write) are dropped while their file does not exist.

``mkdocs serve`` also watches ``tutorials/`` and ``verinet/`` (the
docstrings and the registry).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jupytext
import nbformat
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.verinet")

LAYER_TABLE = "<!-- layer-table -->"
BOUND_RULES_TABLE = "<!-- bound-rules-table -->"
TUTORIALS_SECTION = "Tutorials"
#: Pages that appear in the nav only when their file exists.
OPTIONAL_PAGES = ("scaling.md",)

# Decided in on_config, used by the later events of the same build:
# {src_uri of the page: note to put above it (or None)}.
_tutorial_pages: dict[str, str | None] = {}
_tutorial_sources: list[Path] = []


def _code_cells(notebook) -> list[str]:
    """The code a notebook runs: cells a runner injected and cells of
    ``# ruff: ...`` directives alone (``tutorials/build.py`` drops those) are
    left out."""
    return [
        cell.source.strip()
        for cell in notebook.cells
        if cell.cell_type == "code"
        and cell.source.strip()
        and not all(
            line.startswith("# ruff:")
            for line in cell.source.splitlines()
            if line.strip()
        )
        and "injected-parameters" not in cell.get("metadata", {}).get("tags", [])
    ]


def _tutorials(root: Path, docs_dir: Path) -> dict[str, tuple[str, Path, str | None]]:
    """``{stem: (src_uri, path, note)}`` for every tutorial, by name."""
    sources = {p.stem: p for p in sorted((root / "tutorials").glob("[0-9]*.py"))}
    executed = {p.stem: p for p in sorted((docs_dir / "tutorials").glob("*.ipynb"))}
    pages = {}
    for stem in sorted(set(sources) | set(executed)):
        source, notebook = sources.get(stem), executed.get(stem)
        if notebook is None:
            note = (
                "This page shows the tutorial's source without outputs: its "
                "executed notebook has not been built. Run `make tutorials`, "
                "then build the site again, to see the outputs and figures."
            )
            pages[stem] = (f"tutorials/{stem}.py", source, note)
            continue
        note = None
        if source is not None:
            ran = _code_cells(nbformat.read(notebook, as_version=4))
            if ran != _code_cells(jupytext.read(source)):
                note = (
                    "The outputs on this page come from an earlier version of "
                    f"`tutorials/{stem}.py`: its code has changed since. Run "
                    "`make tutorials` to execute it again."
                )
                log.info("tutorial %s: executed notebook is stale", stem)
        pages[stem] = (f"tutorials/{stem}.ipynb", notebook, note)
    return pages


def _fill_nav(nav: list, docs_dir: Path, tutorial_uris: list[str]) -> list:
    """The nav with the tutorials filled in and absent optional pages dropped."""
    out = []
    for entry in nav:
        if isinstance(entry, dict):
            ((title, value),) = entry.items()
            if title == TUTORIALS_SECTION:
                if tutorial_uris:
                    out.append({title: list(tutorial_uris)})
                continue
            if isinstance(value, list):
                value = _fill_nav(value, docs_dir, tutorial_uris)
            elif value in OPTIONAL_PAGES and not (docs_dir / value).exists():
                continue
            out.append({title: value})
        elif entry in OPTIONAL_PAGES and not (docs_dir / entry).exists():
            continue
        else:
            out.append(entry)
    return out


def on_config(config):
    root = Path(config.config_file_path).resolve().parent
    docs_dir = Path(config.docs_dir)
    pages = _tutorials(root, docs_dir)
    _tutorial_pages.clear()
    _tutorial_sources.clear()
    for src_uri, path, note in pages.values():
        _tutorial_pages[src_uri] = note
        if src_uri.endswith(".py"):
            _tutorial_sources.append(path)
    if config.nav is not None:
        config.nav = _fill_nav(config.nav, docs_dir, list(_tutorial_pages))
    return config


@event_priority(100)  # before mkdocs-jupyter turns the files into notebooks
def on_files(files, config):
    root = Path(config.config_file_path).resolve().parent
    for path in _tutorial_sources:
        files.append(
            File(
                path.relative_to(root).as_posix(),
                src_dir=str(root),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


def on_serve(server, config, builder):
    """``mkdocs serve`` also rebuilds when the tutorials or the code change."""
    root = Path(config.config_file_path).resolve().parent
    for folder in ("tutorials", "verinet"):
        if (root / folder).is_dir():
            server.watch(str(root / folder))
    return server


def on_page_content(html, page, config, files):
    note = _tutorial_pages.get(page.file.src_uri)
    if note is None:
        return html
    import markdown

    title = '<p class="admonition-title">Note</p>'
    body = markdown.markdown(note)
    return f'<div class="admonition note">{title}{body}</div>\n{html}'


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "layers.md":
        return markdown
    for placeholder in (LAYER_TABLE, BOUND_RULES_TABLE):
        if placeholder not in markdown:
            raise PluginError(
                f"docs/layers.md lost its {placeholder} placeholder; docs/hooks.py "
                "fills it with a table generated from verinet.layers.registry."
            )
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from verinet.layers import registry

    markdown = markdown.replace(LAYER_TABLE, registry.support_table())
    return markdown.replace(BOUND_RULES_TABLE, bound_rules_table())


def _rule(spec) -> str:
    from verinet.layers.base import AffineRule, ElementwiseRule, IdentityRule
    from verinet.layers.elementwise_affine import ElementwiseAffineRule
    from verinet.layers.merge import AddRule

    cls = spec.layer
    if spec.composite:
        return "composite: bounded as its registered parts"
    if issubclass(cls, IdentityRule):
        return "identity in bounds (exact)"
    if issubclass(cls, ElementwiseAffineRule):
        return "elementwise affine `a * x + b` (exact)"
    if issubclass(cls, AffineRule):
        return "affine (exact)"
    if issubclass(cls, AddRule):
        return "sum of its inputs (exact)"
    if issubclass(cls, ElementwiseRule):
        if cls.piecewise_linear:
            return "activation: piecewise-linear relaxation (`relax`)"
        return "activation: linear relaxation (`relax`)"
    if getattr(cls, "nonlinear", False):
        return "nonlinear: linear relaxation"
    return "own `bound_interval` / `bound_backward`"


def _complete(spec) -> str:
    from verinet.complete.milp import NONLINEAR_SUPPORTED
    from verinet.layers.base import AffineRule

    if spec.composite:
        return "as its parts"
    if issubclass(spec.layer, AffineRule) or spec.name in NONLINEAR_SUPPORTED:
        return "yes"
    return "no"


#: The bound-rule methods a layer may state itself (see verinet/layers/base.py).
_RULE_METHODS = (
    "interval",
    "backward_affine",
    "affine_params",
    "relax",
    "backward",
    "bound_interval",
    "bound_backward",
)
#: Modules of the generic rule bases, whose methods a layer inherits.
_GENERIC = ("verinet.layers.base", "verinet.layers.elementwise_affine")


def _stated(cls) -> str:
    """The rule methods the layer's own classes define (not the bases)."""
    names = []
    for name in _RULE_METHODS:
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is not None and owner.__module__ not in _GENERIC:
            if owner.__module__.startswith("verinet."):
                names.append(f"`{name}`")
    return ", ".join(names) or "—"


def bound_rules_table() -> str:
    """A Markdown table of each registered layer's bound rules."""
    from verinet.layers import registry

    rows = [
        "| layer | bound rule | states | CROWN in patches form | "
        "MILP / branch and bound |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in registry.registered():
        cls = spec.layer
        if spec.composite:
            patches = "as its parts"
        elif getattr(cls, "supports_patches", False):
            patches = "yes"
        else:
            patches = "no (dense)"
        rows.append(
            f"| `{spec.name}` | {_rule(spec)} | {_stated(cls)} | {patches} | "
            f"{_complete(spec)} |"
        )
    return "\n".join(rows) + "\n"
