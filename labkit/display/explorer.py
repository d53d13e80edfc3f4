"""The throughput model to play with: sliders for its inputs redraw the three setups' bounds at
once, name the limit that binds each, and a button measures the chosen point on the real app.

`explore_model()` returns a `ModelExplorer`, which a notebook shows as the live widgets. Where no
widgets can run (GitHub, nbviewer, a notebook opened before any cell ran), the same output holds
the figure for the starting values as a plain PNG and a text summary: each front end shows the
richest form it can, and nbval compares the text.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from html import escape
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from sqlalchemy.engine import URL

from labkit.app.databases import EngineOptions
from labkit.bench.grid import GridResult, run_grid
from labkit.bench.model import ANYIO_THREADS, Diagnosis, Limit, ThroughputModel
from labkit.bench.setups import SETUPS, setup_named
from labkit.display.plots import colour, style

FIGURE_INCHES, DPI = (7, 3.8), 90
"""The figure's size: shown at its own pixels, 630 x 342, in the widget as in the stored PNG."""


@dataclass(frozen=True)
class ExplorerPoint:
    """A point of the explorer: the model's inputs, as a reader sets them with the sliders."""

    latency_ms: float = 20.0
    cpu_ms: float = 1.0
    pool_size: int = 5
    max_overflow: int = 10
    threads: int = ANYIO_THREADS
    clients: int = 30

    def model(self) -> ThroughputModel:
        """The same `s` for every setup: the sliders set one; `calibrate` measures each."""
        return ThroughputModel(
            {setup: self.cpu_ms / 1000 for setup in SETUPS},
            pool=self.pool_size + self.max_overflow,
            threads=self.threads,
        )

    def diagnose(self, setup: str, clients: int | None = None) -> Diagnosis:
        """The model's `Diagnosis` of `setup` at this point (at `clients`, if given)."""
        chosen = self.clients if clients is None else clients
        return self.model().diagnose(setup_named(setup), chosen, self.latency_ms / 1000)

    def bound(self, setup: str, clients: int | None = None) -> float:
        """Requests per second the model allows `setup` at this point (at `clients`, if given)."""
        return self.diagnose(setup, clients).bound

    def limit(self, setup: str) -> Limit:
        """What binds `setup` at this point: cpu, event loop, pool, threads or clients."""
        return self.diagnose(setup).limit

    def limits_key(self) -> tuple[float, int, int, int]:
        """What a measurement depends on (`s` and the clients are the model's, not the app's)."""
        return self.latency_ms, self.pool_size, self.max_overflow, self.threads


@dataclass(frozen=True)
class Measured:
    """One setup measured at one point: where its dot goes."""

    point: ExplorerPoint
    setup: str
    rps: float


SLIDERS: dict[str, tuple[str, type[widgets.ValueWidget], dict[str, Any]]] = {
    "latency_ms": (
        "L (ms)",
        widgets.FloatSlider,
        {"min": 0, "max": 200, "step": 1, "readout_format": ".0f"},
    ),
    "cpu_ms": (
        "s (ms)",
        widgets.FloatSlider,
        {"min": 0.1, "max": 5, "step": 0.1, "readout_format": ".1f"},
    ),
    "pool_size": ("pool_size", widgets.IntSlider, {"min": 1, "max": 60}),
    "max_overflow": ("max_overflow", widgets.IntSlider, {"min": 0, "max": 60}),
    "threads": ("threads", widgets.IntSlider, {"min": 1, "max": 80}),
    "clients": ("clients", widgets.IntSlider, {"min": 1, "max": 100}),
}
"""Each input of `ExplorerPoint`: its label, its slider, and the slider's range."""


def draw(point: ExplorerPoint, measured: Iterable[Measured] = ()) -> Figure:
    """The three setups' bounds against the number of clients, the chosen clients marked, and
    the dots measured at this point's L, pool and threads."""
    fig = Figure(figsize=FIGURE_INCHES, layout="constrained")
    ax = fig.add_subplot()
    most = SLIDERS["clients"][2]["max"]
    clients = np.unique(np.geomspace(1, most, 200).round().astype(int))
    for setup in SETUPS:
        bounds = [point.bound(setup, int(c)) for c in clients]
        name = f"{setup}: {point.bound(setup):,.0f}/s, {point.limit(setup)} binds"
        look = style(setup)  # the threadpool and async lines often coincide: each keeps its dash
        ax.plot(clients, bounds, color=look["color"], linestyle=look["linestyle"], label=name)
    for dot in measured:
        if dot.point.limits_key() == point.limits_key():
            mark = style(dot.setup)
            ax.plot(dot.point.clients, dot.rps, mark["marker"], color=mark["color"], markersize=7)
    ax.axvline(point.clients, color="black", linewidth=0.8, alpha=0.5)
    ax.set_xscale("log")
    ticks = sorted({1, 5, 15, 50, most, point.clients})
    ax.set_xticks(ticks, [str(c) for c in ticks])
    ax.set_xlim(1, most)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent clients C (log scale)")
    ax.set_ylabel("requests per second (bound)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small", title=f"at C = {point.clients}")
    ax.set_title(
        f"L = {point.latency_ms:g} ms, s = {point.cpu_ms:g} ms, "
        f"pool {point.pool_size} + {point.max_overflow}, {point.threads} threads"
    )
    return fig


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def summary(point: ExplorerPoint) -> str:
    """The bounds at the chosen point in words: the explorer's text form."""
    lines = [
        f"At C = {point.clients}, L = {point.latency_ms:g} ms, s = {point.cpu_ms:g} ms, "
        f"pool {point.pool_size} + {point.max_overflow}, {point.threads} threads:"
    ]
    lines += [
        f"  {setup:>10}: at most {point.bound(setup):,.0f} requests/s, {point.limit(setup)} binds"
        for setup in SETUPS
    ]
    return "\n".join(lines)


class ModelExplorer:
    """Sliders, the figure, the binding limits and a measure button, kept in step.

    `database_url` is a seeded database (a notebook's own) for the button's measurements; without
    it the button is disabled. `seconds` sizes each setup's measurement, by the model.
    """

    def __init__(
        self,
        database_url: URL | str | None = None,
        start: ExplorerPoint = ExplorerPoint(),
        seconds: float = 0.5,
    ) -> None:
        self.database_url = database_url
        self.seconds = seconds
        self.start = start
        self.measured: list[Measured] = []
        self.sliders = {
            field: kind(
                value=getattr(start, field),
                description=label,
                continuous_update=False,
                style={"description_width": "7em"},
                **bounds,
            )
            for field, (label, kind, bounds) in SLIDERS.items()
        }
        width = f"{FIGURE_INCHES[0] * DPI}px"  # not stretched to the cell's width
        self.image = widgets.Image(value=png(draw(start)), format="png", layout={"width": width})
        self.limits = widgets.HTML(self._limits_html(start))
        self.button = widgets.Button(
            description="measure this point",
            disabled=database_url is None,
            tooltip="run the three setups at these L, pool, threads and clients on the real app",
        )
        for slider in self.sliders.values():
            slider.observe(lambda _change: self.redraw(), names="value")
        self.button.on_click(lambda _button: self.measure())
        self.view = widgets.VBox(
            [
                widgets.HBox([widgets.VBox(list(self.sliders.values())), self.limits]),
                self.image,
                self.button,
            ]
        )

    @property
    def point(self) -> ExplorerPoint:
        """The point the sliders show now."""
        return ExplorerPoint(**{field: slider.value for field, slider in self.sliders.items()})

    def redraw(self) -> None:
        point = self.point
        self.image.value = png(draw(point, self.measured))
        self.limits.value = self._limits_html(point)

    def _limits_html(self, point: ExplorerPoint, note: str = "") -> str:
        rows = "".join(
            f"<tr><td style='color:{to_hex(colour(setup))}'>{setup}</td>"
            f"<td style='text-align:right'>{point.bound(setup):,.0f}/s</td>"
            f"<td>{escape(point.limit(setup))}</td>"
            f"<td>{'can deadlock' if point.diagnose(setup).may_deadlock else ''}</td></tr>"
            for setup in SETUPS
        )
        head = "<tr><th>setup</th><th>bound</th><th>binds</th><th></th></tr>"
        return f"<table>{head}{rows}</table>{f'<p>{escape(note)}</p>' if note else ''}"

    def measure(self) -> list[Measured]:
        """Run the three setups at the chosen point on the real app, and put the dots in; not a
        setup that can deadlock there (it would wait out the pool's timeout, 30 s).

        The kernel's own event loop is busy running this very call (a button's handler), so the
        run gets a loop of its own on another thread, and this call waits for it.
        """
        if self.database_url is None:
            raise ValueError("explore_model(database_url) measures on that database; none given")
        point = self.point
        self.button.disabled = True
        self.limits.value = self._limits_html(point, "measuring the three setups...")
        try:
            with ThreadPoolExecutor(1) as thread:
                grid = thread.submit(asyncio.run, self._run(point)).result()
        finally:
            self.button.disabled = False
        found = [Measured(point, result.setup, result.throughput) for result in grid]
        self.measured += found
        self.redraw()
        skipped = [setup for setup in SETUPS if point.diagnose(setup).may_deadlock]
        self.limits.value = self._limits_html(
            point,
            "measured: "
            + ", ".join(f"{dot.setup} {dot.rps:,.0f}/s" for dot in found)
            + (f"; not {', '.join(skipped)}: it can deadlock here" if skipped else "")
            + f" (with this machine's s; the lines use s = {point.cpu_ms:g} ms)",
        )
        return found

    async def _run(self, point: ExplorerPoint) -> GridResult:
        options = EngineOptions(pool_size=point.pool_size, max_overflow=point.max_overflow)
        return await run_grid(
            self.database_url,
            [setup for setup in SETUPS if not point.diagnose(setup).may_deadlock],
            [point.clients],
            [point.latency_ms],
            seconds=self.seconds,
            model=point.model(),
            threads=point.threads,
            options=options,
            say=lambda _line: None,
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The live widgets, and for front ends without them the starting figure and summary."""
        bundle = dict(self.view._repr_mimebundle_(**kwargs) or {})
        bundle["image/png"] = base64.b64encode(png(draw(self.start))).decode("ascii")
        bundle["text/plain"] = summary(self.start)
        return bundle


def explore_model(database_url: URL | str | None = None, **start: Any) -> ModelExplorer:
    """The model explorer, starting from `ExplorerPoint`'s values or those given by name
    (``explore_model(url, latency_ms=50, clients=15)``)."""
    unknown = set(start) - set(asdict(ExplorerPoint()))
    if unknown:
        raise TypeError(
            f"no model input {', '.join(sorted(unknown))}: choose from {', '.join(SLIDERS)}"
        )
    return ModelExplorer(database_url, replace(ExplorerPoint(), **start))
