"""A module-level declaration shown as code: ``SessionDep = Annotated[...]`` has no source of its
own for `inspect` to find, so its lines are read from the module that declares it."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

from IPython.display import Code


def declaration(module: ModuleType, name: str) -> str:
    """The source of the module-level statement of `module` that assigns `name`, as written."""
    source = inspect.getsource(module)
    for statement in ast.parse(source).body:
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            segment = ast.get_source_segment(source, statement)
            assert segment is not None
            return segment
    raise LookupError(f"{module.__name__} assigns no {name} at module level")


def show_declared(module: ModuleType, *names: str) -> Code:
    """The declarations of `names` in `module`, one a line, as highlighted Python."""
    lines = "\n".join(declaration(module, name) for name in names)
    return Code(lines + "\n", language="python")  # type: ignore[no-untyped-call]


__all__ = ["declaration", "show_declared"]
