"""What the probe sends, spelled as curl and oha spell it: a method, headers, a body, and the
values each path parameter takes.

An app people ship wants a bearer token, takes a POST with JSON, and keys its rows by UUIDs
as often as by integers. Each option here reads what a user would type in a terminal, and says
in one line what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from labkit.bench.load import GET, Sent

PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A path parameter as FastAPI writes it in a route, and as the probe's paths name it."""


class RequestOptionError(ValueError):
    """An option the probe cannot read: said in one line."""


def parameters(path: str) -> list[str]:
    """The path's parameters, by name, in order: ``/items/{item_id}`` has ``item_id``."""
    return PARAMETER.findall(path)


def checked_path(text: str) -> str:
    """`text` if it is a path whose braces are all parameters, such as ``/items/{item_id}``."""
    if not text.startswith("/") or re.search(r"[{}]", PARAMETER.sub("", text)):
        raise RequestOptionError(f"a path such as /items/{{item_id}}, not {text!r}")
    return text


def _text_or_file(text: str) -> str:
    """`text`, or with a leading ``@`` the file it names, read as curl reads ``-d @FILE``."""
    if not text.startswith("@"):
        return text
    try:
        return Path(text[1:]).read_text()
    except OSError as exc:
        raise RequestOptionError(f"cannot read {text[1:]!r}: {exc.strerror}") from None


def header(text: str) -> tuple[str, str]:
    """``Name: value``, as curl's ``-H`` takes it."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise RequestOptionError(f"a header such as 'Authorization: Bearer TOKEN', not {text!r}")
    return name.strip(), value.strip()


def body(text: str) -> bytes:
    """The body `-d`/``--json`` sends: the text itself, or with ``@FILE`` that file's bytes."""
    return _text_or_file(text).encode()


def parameter_values(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=v1,v2,...``, or ``NAME=@FILE`` with one value per line: the values cycled, in
    order, through ``{NAME}`` in every path that has it."""
    name, equals, given = text.partition("=")
    if not equals or not PARAMETER.fullmatch(f"{{{name}}}"):
        raise RequestOptionError(f"values such as item_id=3,5,8 or item_id=@ids.txt, not {text!r}")
    if given.startswith("@"):
        values = [line.strip() for line in _text_or_file(given).splitlines()]
    else:
        values = [value.strip() for value in given.split(",")]
    values = [value for value in values if value]
    if not values:
        raise RequestOptionError(f"no values for {name} in {text!r}")
    return name, tuple(values)


@dataclass(frozen=True)
class ProbeRequest:
    """Everything a probed request carries besides its path's fixed parts: what the load driver
    sends with every path (`sent`: method, headers, body), and the values of the parameters.

    A parameter with no values of its own cycles through the integers 1 to `ids`, the
    default that suits integer keys made by a seeding script.
    """

    sent: Sent = GET
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ids: int = 1

    def __post_init__(self) -> None:
        if self.ids < 1:
            raise RequestOptionError(f"ids must be at least 1, not {self.ids}")

    def path_of(self, template: str) -> Callable[[int], str]:
        """Request `i`'s path: each parameter takes its `i`-th value, cycling."""
        names = parameters(template)
        if not names:
            return lambda _i: template
        cycles = {name: self.values.get(name) or self._integers for name in names}

        def path(i: int) -> str:
            return PARAMETER.sub(
                lambda m: quote(cycles[m[1]][i % len(cycles[m[1]])], safe=""), template
            )

        return path

    @property
    def _integers(self) -> tuple[str, ...]:
        return tuple(str(n) for n in range(1, self.ids + 1))

    def describe(self, paths: list[str]) -> str:
        """What the paths' parameters cycle through, as the probe's first line says it."""
        named = dict.fromkeys(name for path in paths for name in parameters(path))
        said = []
        for name in named:
            given = self.values.get(name)
            if given is None:
                said.append(f"{{{name}}} = 1..{self.ids}")
            elif len(given) <= 3:
                said.append(f"{{{name}}} = {', '.join(given)}")
            else:
                said.append(f"{{{name}}} = {len(given)} values ({given[0]}, ...)")
        return "; ".join(said)

    def unused_values(self, paths: list[str]) -> list[str]:
        """Names given values that no path has: a typo, most likely."""
        named = {name for path in paths for name in parameters(path)}
        return sorted(set(self.values) - named)
