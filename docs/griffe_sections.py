"""A griffe extension: read verinet's docstrings the way they are written.

mkdocstrings loads this file (``extensions:`` in ``mkdocs.yml``) and runs it
on every object before its docstring is parsed. It adapts two habits of
verinet's Google-style docstrings (STYLE.md) that griffe reads otherwise:

* ``Example:`` (singular, as in Keras) is an examples section. griffe only
  parses the plural ``Examples:`` as one (``>>>`` lines become highlighted
  code); a singular ``Example:`` would be an admonition of Markdown, where
  ``>>> x[0]`` lines turn into block quotes and ``[0.9, 0.8]`` into broken
  links.
* ``Args:`` (and ``Attributes:``) entries that name several at once, e.g.
  ``model, x, y: as in ``vn.certify``.`` (the names may wrap onto the next
  line, and a last ``...`` stands for "and the others"), become one entry
  per name with the same description. griffe would warn that no parameter
  is called ``model, x, y``.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ARGS_HEADINGS = {"args:", "arguments:", "params:", "parameters:", "attributes:"}
_NAME = r"\*{0,2}[A-Za-z_]\w*"
_NAMES = re.compile(rf"^{_NAME}(?:\s*,\s*{_NAME})+(?:\s*,\s*\.\.\.)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _split_item(lines: list[str], start: int, indent: int) -> tuple[str, int]:
    """The item's first line, joined with lines while it wraps a name list."""
    head, end = lines[start].strip(), start + 1
    while ":" not in head and head.endswith(",") and end < len(lines):
        if not lines[end].strip() or _indent(lines[end]) <= indent:
            break
        head, end = f"{head} {lines[end].strip()}", end + 1
    return head, end


def expand_shared_args(text: str) -> str:
    """Give each name of a ``a, b, c: description`` entry its own entry."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip().lower() not in _ARGS_HEADINGS:
            continue
        heading = _indent(line)
        item = None
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= heading:
                break  # the section ended
            if not line.strip() or (item is not None and _indent(line) > item):
                out.append(line)
                i += 1
                continue
            item = _indent(line)
            head, end = _split_item(lines, i, item)
            names, colon, rest = head.partition(":")
            if not (colon and _NAMES.match(names.strip())):
                out.append(line)
                i += 1
                continue
            body = []
            while end < len(lines) and (
                not lines[end].strip() or _indent(lines[end]) > item
            ):
                body.append(lines[end])
                end += 1
            while body and not body[-1].strip():
                end -= 1
                body.pop()
            for name in re.split(r"\s*,\s*", names.strip()):
                if name == "...":
                    continue
                out.append(f"{' ' * item}{name}:{rest}")
                out.extend(body)
            i = end
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Read ``Example:`` as examples and split shared ``Args:`` entries."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        value = docstring.value
        if "Example:" in value:
            value = _EXAMPLE.sub(r"\1Examples:", value)
        if "," in value:
            value = expand_shared_args(value)
        docstring.value = value
