"""The learner's code shown as code: highlighted Python in JupyterLab, plain source elsewhere."""

from __future__ import annotations

import inspect

from IPython.display import Code


def show_source(*objects: object) -> Code:
    """The source of each of `objects` (functions, classes, modules), one after another, as
    highlighted Python: what a reader would write, read as code rather than as printed text."""
    sources = [inspect.getsource(obj).rstrip() for obj in objects]  # type: ignore[arg-type]
    return Code("\n\n\n".join(sources) + "\n", language="python")  # type: ignore[no-untyped-call]
