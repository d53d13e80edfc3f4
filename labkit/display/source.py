"""The shop app's code shown as code: highlighted Python in JupyterLab, plain source elsewhere.

`show_source` shows functions, classes and modules; `show_declared` shows a module-level
declaration such as ``SessionDep = Annotated[...]``, which has no source of its own for
`inspect` to find, so its statement is read from the module that declares it.
"""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

from IPython.display import Code


def _as_python(sources: list[str], between: str) -> Code:
    """`sources` joined by `between`, as highlighted Python."""
    return Code(between.join(sources) + "\n", language="python")  # type: ignore[no-untyped-call]


def show_source(*objects: object) -> Code:
    """The source of each of `objects` (functions, classes, modules), one after another, as
    highlighted Python: what a reader would write, read as code rather than as printed text."""
    sources = [inspect.getsource(obj).rstrip() for obj in objects]  # type: ignore[arg-type]
    return _as_python(sources, "\n\n\n")


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
    return _as_python([declaration(module, name) for name in names], "\n")
