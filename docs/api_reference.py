"""Render the API reference for plugin authors from the docstrings (``make docs``).

Run as ``python docs/api_reference.py [OUTPUT_FOLDER]`` (default ``build/docs/api``; open its
``index.html``). It documents what a plugin may rely on, with pdoc: :mod:`metastudio.api` (every
name in its ``__all__``), the hook specifications (:mod:`metastudio.plugins.hookspecs`) and the
pytest plugin's fixtures (:mod:`metastudio.testing`). The HTML is built on demand and not kept
in git: the docstrings are the source, so the reference cannot fall out of date with the code,
and generated pages would only add noise to every change.

pdoc reads a variable's documentation from the module it renders, but the constants that
``metastudio.api`` re-exports (``HOOK_API_VERSION``, ``ROLES``, ``DISTORT``...) are documented
where they are defined, by a ``#:`` comment above the assignment or a string just below it;
:func:`constant_doc` finds that text (a declared hyperparameter's is its help) and this script
hands it to pdoc. ``tests/test_api_reference.py`` checks with the same functions that every name
has one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

#: The modules of the reference.
MODULES = ("metastudio.api", "metastudio.plugins.hookspecs", "metastudio.testing")
DEFAULT_OUTPUT = Path("build/docs/api")


def _source_tree(module_name: str) -> tuple[ast.Module, list[str]]:
    module = importlib.import_module(module_name)
    source = inspect.getsource(module)
    return ast.parse(source), source.splitlines()


def imported_from(module_name: str) -> dict[str, str]:
    """Name -> the module it is imported from, for the ``from X import name`` statements of
    ``module_name`` (at its top level)."""
    tree, _ = _source_tree(module_name)
    return {alias.asname or alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.module for alias in node.names}


def _assigned(node: ast.stmt) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    names = []
    for target in targets:
        names += [e.id for e in (target.elts if isinstance(target, ast.Tuple) else [target]) if isinstance(e, ast.Name)]
    return names


def constant_doc(module_name: str, name: str) -> str:
    """The documentation of the module-level variable ``name`` where it is defined: the string
    statement just below its assignment, else the ``#:`` comment lines just above it; for a name
    ``module_name`` imports, looked up in the module it comes from. "" when there is none."""
    tree, lines = _source_tree(module_name)
    body = tree.body
    for i, node in enumerate(body):
        if name not in _assigned(node):
            continue
        following = body[i + 1] if i + 1 < len(body) else None
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                and isinstance(following.value.value, str):
            return inspect.cleandoc(following.value.value)
        comments = []
        row = node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            comments.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        return " ".join(comments)
    source = imported_from(module_name).get(name)
    return constant_doc(source, name) if source else ""


def variable_doc(module_name: str, name: str) -> str:
    """What documents the variable ``name`` of ``module_name``: :func:`constant_doc`, or for a
    declared hyperparameter (``HyperParameter``: ``DISTORT``, ``FEATURE_TRANSFORM``...) its help."""
    doc = constant_doc(module_name, name)
    value = getattr(importlib.import_module(module_name), name, None)
    help_text = getattr(value, "help", None)
    if not doc and type(value).__name__ == "HyperParameter" and isinstance(help_text, str):
        return f"The hyperparameter ``{value.name}``: {help_text}"
    return doc


def render(output: Path) -> list[Path]:
    """Write the reference's HTML into ``output``; return the pages written."""
    import pdoc.doc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", search=True, show_source=False)
    modules = {name: pdoc.doc.Module(importlib.import_module(name)) for name in MODULES}
    for module_name, module in modules.items():
        for member in module.members.values():
            if isinstance(member, pdoc.doc.Variable) and not member.docstring:
                member.docstring = variable_doc(module_name, member.name)
    written = []
    for module in modules.values():
        page = output / f"{module.fullname.replace('.', '/')}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(pdoc.render.html_module(module, modules), encoding="utf-8")
        written.append(page)
    (output / "index.html").write_text(pdoc.render.html_index(modules), encoding="utf-8")
    (output / "search.js").write_text(pdoc.render.search_index(modules), encoding="utf-8")
    return written


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    pages = render(output)
    print(f"API reference: {len(pages)} pages in {output}/ (open {output / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
