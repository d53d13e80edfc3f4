"""``python -m labkit``: the timing lab from a terminal.

- ``bench``: the notebook's grid (setups x concurrency x latency) on the in-process app, with a
  progress bar on a terminal's stderr (tqdm), then a table, and on request a CSV file and a PNG
  plot (the table and the CSV are one pandas DataFrame);
- ``serve``: the same app under uvicorn on 127.0.0.1, for a browser (its DevTools Network panel
  shows each response's ``Server-Timing``) or for ``drive``; ``--workers N`` runs N processes;
- ``drive``: the load driver against a server on this machine, over a real socket;
- ``probe``: the lab's instruments on your own app (``module:app``, as uvicorn names it),
  unchanged: each path at each concurrency, and what holds each path back;
- ``binder-badge``: the README's Binder badge for the GitHub repository of the ``origin`` remote
  (or ``--repository OWNER/NAME``), and whether README.md has it; ``--write`` puts it there.

Run ``python -m labkit bench --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import resource
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, Never
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from tqdm.auto import tqdm

from labkit.app.databases import EngineOptions
from labkit.app.serve import ServeOptions, run_workers
from labkit.bench.drive import DriveOptions
from labkit.bench.drive import drive as drive_server
from labkit.bench.grid import calibrate, run_grid
from labkit.bench.load import Sent
from labkit.bench.model import ANYIO_THREADS, ThroughputModel
from labkit.bench.results import LoadResult, Tabular
from labkit.bench.setups import SETUPS, Holds, setup_named
from labkit.display.frames import as_text
from labkit.infra import binder_badge as binder
from labkit.infra.ports import LOOPBACK
from labkit.probe import request as probe_request
from labkit.probe.app_import import ProbeError, import_app
from labkit.probe.request import ProbeRequest, RequestOptionError
from labkit.probe.sweep import probe
from labkit.settings import fresh_sqlite_database, safe_url

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _numbers(text: str, kind: type = int) -> list[Any]:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None


def _floats(text: str) -> list[float]:
    return _numbers(text, float)


def _setups(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in (*SETUPS, "health")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown setup(s) {unknown}; choose from {SETUPS}")
    return names


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return int(text)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"not a number of at least 0: {text!r}")
    return value


def _option(read: Callable[[str], Any]) -> Callable[[str], Any]:
    """`read`, with its one-line complaint as argparse's: ``error: argument -H: ...``."""

    def checked(text: str) -> Any:
        try:
            return read(text)
        except RequestOptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    checked.__name__ = read.__name__  # argparse names the type in some messages
    return checked


def _pool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    parser.add_argument(
        "--pool-size", type=int, help="pooled connections (5; bench: the largest concurrency)"
    )
    parser.add_argument(
        "--max-overflow", type=int, help="overflow connections (10; 0 if bench sizes the pool)"
    )
    parser.add_argument("--pool-timeout", type=float, default=30.0, help="seconds (30)")
    parser.add_argument("--threads", type=int, help="AnyIO thread limit (40)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="time the setups in process and print a table")
    bench.add_argument(
        "--setups", type=_setups, default=list(SETUPS), help="comma-separated (all three)"
    )
    bench.add_argument("--concurrency", type=_numbers, default=[1, 10, 50], help="C (1,10,50)")
    bench.add_argument(
        "--latency", type=_floats, default=[0.0, 10.0], help="simulated ms per statement (0,10)"
    )
    bench.add_argument("--requests", type=int, default=300, help="requests per point (300)")
    bench.add_argument(
        "--health-every", type=float, metavar="MS", help="also poll /health every MS ms"
    )
    bench.add_argument(
        "--no-model", action="store_true", help="skip measuring s, and the model's columns"
    )
    bench.add_argument("--csv", metavar="FILE", help="write the table as CSV ('-': stdout)")
    bench.add_argument("--plot", metavar="FILE.png", help="save throughput against C")
    _pool_options(bench)

    serve = commands.add_parser("serve", help="run the app under uvicorn on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--latency", type=float, default=0.0, help="simulated ms per statement")
    serve.add_argument(
        "--workers", type=_positive, default=1,
        help="processes, each with its own event loop, threads and pool (1)",
    )  # fmt: skip
    serve.add_argument(
        "--no-prepared-statements", action="store_true",
        help="for PgBouncer's transaction pooling: no named prepared statements",
    )  # fmt: skip
    _pool_options(serve)

    drive = commands.add_parser("drive", help="load a server on this machine over a socket")
    drive.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    drive.add_argument("--setup", default="async", help="a setup, 'health' or a path")
    drive.add_argument("--requests", type=int, default=300)
    drive.add_argument("--concurrency", type=int, default=10)
    drive.add_argument("--csv", metavar="FILE", help="write the row as CSV ('-': stdout)")

    probed = commands.add_parser(
        "probe",
        help="the instruments on your own app, unchanged",
        description=PROBE_DESCRIPTION,
        epilog=PROBE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probed.add_argument(
        "app", metavar="MODULE:APP",
        help="your app as uvicorn names it, any ASGI app (middleware around it too): main:app",
    )  # fmt: skip
    probed.add_argument(
        "--path", action="append", required=True, type=_option(probe_request.checked_path),
        help="a path to load, repeatable: --path /items --path '/items/{item_id}'",
    )  # fmt: skip
    probed.add_argument(
        "-X", "--method", type=str.upper,
        help="the HTTP method (GET; POST with a body): -X PUT",
    )  # fmt: skip
    probed.add_argument(
        "-H", "--header", action="append", default=[], type=_option(probe_request.header),
        help="a request header, repeatable: -H 'Authorization: Bearer TOKEN'",
    )  # fmt: skip
    body = probed.add_mutually_exclusive_group()
    body.add_argument(
        "-d", "--data", type=_option(probe_request.body), metavar="BODY",
        help="the request body, or @FILE for a file's: -d 'name=Widget' or -d @body.txt",
    )  # fmt: skip
    body.add_argument(
        "--json", type=_option(probe_request.body), metavar="BODY",
        help="a JSON body, with its Content-Type, or @FILE: --json '{\"name\": \"Widget\"}'",
    )  # fmt: skip
    probed.add_argument(
        "--values", action="append", default=[], metavar="NAME=V1,V2",
        type=_option(probe_request.parameter_values),
        help="values {NAME} cycles through, in order, or @FILE with one per line: "
        "--values item_id=@ids.txt",
    )  # fmt: skip
    probed.add_argument(
        "--ids", type=_positive, default=1,
        help="a parameter given no --values cycles through 1..IDS (1): --ids 100",
    )  # fmt: skip
    probed.add_argument(
        "--concurrency", type=_numbers, default=[1, 10, 50],
        help="clients C, comma-separated (1,10,50): --concurrency 1,5,20",
    )  # fmt: skip
    probed.add_argument(
        "--latency", type=_non_negative, default=0.0, metavar="MS",
        help="simulated ms added to every statement on every engine (0): --latency 20",
    )  # fmt: skip
    probed.add_argument(
        "--requests", type=_positive, default=200, metavar="N",
        help="requests per point, and at least 3 per client (200): --requests 500",
    )  # fmt: skip
    probed.add_argument(
        "--factory", action="store_true",
        help="MODULE:APP is a function that returns the app, as uvicorn's: main:create_app "
        "--factory",
    )  # fmt: skip
    probed.add_argument(
        "--app-dir", metavar="DIR", default=".",
        help="where MODULE is found, as uvicorn's (.): --app-dir backend",
    )  # fmt: skip
    probed.add_argument(
        "--force", action="store_true",
        help="run the points the deadlock rule would skip, with its warning: --force",
    )  # fmt: skip
    probed.add_argument(
        "--csv", metavar="FILE", help="write the table as CSV ('-': stdout): --csv probe.csv"
    )
    probed.add_argument(
        "--plot", metavar="FILE.png",
        help="draw throughput against C per path, with the model's bound: --plot probe.png",
    )  # fmt: skip

    badge = commands.add_parser(
        "binder-badge", help="the README's Binder badge for this checkout's GitHub repository"
    )
    badge.add_argument(
        "--repository", metavar="OWNER/NAME", type=binder.repository_name,
        help="this GitHub repository instead of the origin remote's",
    )  # fmt: skip
    badge.add_argument("--write", action="store_true", help="rewrite README.md's badge line")
    return parser


PROBE_DESCRIPTION = """\
Load each --path of your app at each --concurrency, in this process, with the lab's
instruments on every engine, and say per path what holds it back: the event loop, the pool,
the threads, the CPU, or nothing but the clients. Requests are spelled as curl spells them."""

PROBE_EXAMPLES = """\
examples:
  python -m labkit probe main:app --path '/heroes/{id}' --ids 3 --latency 20
  python -m labkit probe main:app -X POST --json '{"name": "Widget"}' --path /items \\
      -H 'Authorization: Bearer TOKEN' --concurrency 1,10
  python -m labkit probe app.main:create_app --factory --app-dir backend \\
      --path '/items/{item_id}' --values item_id=@ids.txt --plot probe.png"""


def _engine_options(
    args: argparse.Namespace, default_pool: int, default_overflow: int, latency_ms: float = 0.0
) -> EngineOptions:
    return EngineOptions(
        latency_ms=latency_ms,
        pool_size=default_pool if args.pool_size is None else args.pool_size,
        max_overflow=default_overflow if args.max_overflow is None else args.max_overflow,
        pool_timeout=args.pool_timeout,
    )


def _describe(url: str | URL) -> str:
    """The database as the table's header shows it: a SQLite file relative to here if it can be."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database).resolve()
        if path.is_relative_to(Path.cwd()):
            return f"SQLite file {path.relative_to(Path.cwd())}"
    return safe_url(parsed)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


async def bench(args: argparse.Namespace) -> int:
    # Sized to the largest concurrency unless told otherwise: with SQLAlchemy's 5 + 10, the
    # blocking setup deadlocks above 15 clients, the threadpool setup from 55 (notebook 05).
    largest = max(args.concurrency)
    options = _engine_options(args, largest, 0 if args.pool_size is None else 10)
    pool = options.pool
    url = args.database or fresh_sqlite_database("bench")
    threads = args.threads or ANYIO_THREADS
    out = sys.stderr if args.csv == "-" else sys.stdout  # stdout is the CSV's, then
    print(
        f"database {_describe(url)}, pool {options.pool_size} + {options.max_overflow}, "
        f"threads {threads}, {args.requests} requests per point",
        file=out,
    )
    stall = f"each stall lasts --pool-timeout ({args.pool_timeout:g} s) and ends in 503"
    limits = ThroughputModel(pool=pool, threads=threads)  # the deadlock rule needs no s
    for setup in [setup_named(name) for name in args.setups if name in SETUPS]:
        if not limits.diagnose(setup, largest, max(args.latency) / 1000).may_deadlock:
            continue
        if setup.holds is Holds.EVENT_LOOP:
            why = f"C={largest} > pool {pool} can deadlock the event loop inside the pool"
        else:
            why = (
                f"C={largest} >= threads {threads} + pool {pool} can deadlock (answers wait "
                f"for a thread while holding every connection)"
            )
        print(f"note: {setup.name} with {why}; {stall}", file=sys.stderr)
    modelled = [] if args.no_model else [s for s in args.setups if s in SETUPS]
    model = await calibrate(url, modelled, options=options) if modelled else None
    if model is not None:
        cpu = ", ".join(f"{s} {v * 1000:.2f} ms" for s, v in model.cpu_s.items())
        print(f"CPU per request s (L=0, C=1): {cpu}", file=out)
    grid = await run_grid(
        url,
        args.setups,
        args.concurrency,
        args.latency,
        requests=args.requests,
        model=model,
        threads=args.threads,
        health_every_s=args.health_every / 1000 if args.health_every else None,
        progress=_progress_bar(),
        options=options,
    )
    _print_table(grid, out)
    if args.csv:
        _write_csv(grid, args.csv)
    if args.plot:
        _save_figure(_plots().plot_throughput(grid), args.plot, out)
    print(f"peak memory (RSS): {_peak_rss_mb():.0f} MB", file=out)
    return 0


def _plots() -> ModuleType:
    """labkit.display.plots, imported (with matplotlib) only when a plot is asked for, and
    drawing for a file, never a window."""
    import matplotlib

    matplotlib.use("Agg")
    from labkit.display import plots

    return plots


def _save_figure(fig: Figure, path: str, out: IO[str]) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot saved to {path}", file=out)


def _progress_bar() -> tqdm[Never]:  # a bar updated by hand, over no iterable
    """A bar on stderr while the runs go on: on a terminal only (``disable=None``), so a pipe
    or a file gets the table alone."""
    return tqdm(unit="request", disable=None, leave=False)


def _print_table(result: Tabular, out: IO[str], columns: Sequence[str] = ()) -> None:
    """The columns the result's type shows (`Tabular.SHOWN`), unless told which."""
    print(as_text(result.to_frame(), columns or result.SHOWN or None), file=out)


def _write_csv(result: Tabular, target: str) -> None:
    """Every column, full precision, to a file or (``-``) to stdout."""
    result.to_frame().to_csv(sys.stdout if target == "-" else target, index=False)


def serve(args: argparse.Namespace) -> int:
    options = replace(
        _engine_options(args, 5, 10, latency_ms=args.latency),
        no_prepared_statements=args.no_prepared_statements,
    )
    processes = "1 process" if args.workers == 1 else f"{args.workers} worker processes"
    print(
        f"serving the lab on http://{LOOPBACK}:{args.port} with {processes}, each with a pool of "
        f"{options.pool_size} + {options.max_overflow} (Ctrl+C stops); its API docs, which need "
        f"no internet: http://{LOOPBACK}:{args.port}/docs",
        flush=True,
    )
    run_workers(ServeOptions(args.database, options, args.threads, args.port, args.workers))
    return 0


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def drive(args: argparse.Namespace) -> int:
    if not is_loopback(args.url):
        print(f"drive only loads servers on this machine (127.0.0.1), not {args.url}")
        return 2
    result = await drive_server(DriveOptions(args.url, args.setup, args.requests, args.concurrency))
    if args.csv:
        _write_csv(result, args.csv)
    else:
        _print_table(result, sys.stdout, LoadResult.FROM_OUTSIDE)
    return 0


def _probe_request(args: argparse.Namespace) -> ProbeRequest:
    """The request the options spell, as curl reads them: a body makes it a POST unless -X
    says otherwise, and --json adds its Content-Type and Accept headers unless -H gives them."""
    body = args.json if args.json is not None else args.data
    headers: list[tuple[str, str]] = list(args.header)
    given = {name.lower() for name, _ in headers}
    if args.json is not None:
        for name in ("Content-Type", "Accept"):
            if name.lower() not in given:
                headers.append((name, "application/json"))
    elif args.data is not None and "content-type" not in given:
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    method = args.method or ("POST" if body is not None else "GET")
    return ProbeRequest(Sent(method, tuple(headers), body), dict(args.values), args.ids)


async def probe_app(args: argparse.Namespace) -> int:
    out = sys.stderr if args.csv == "-" else sys.stdout  # stdout is the CSV's, then
    request = _probe_request(args)
    unused = request.unused_values(args.path)
    if unused:
        print(f"probe: --values for {', '.join(unused)}, which no --path has", file=sys.stderr)
        return 2
    try:
        app = import_app(args.app, args.app_dir, factory=args.factory)
    except ProbeError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    parameters = request.describe(args.path)
    print(
        f"probing {args.app}: {request.sent.method}, {args.requests} requests per point (3 per "
        f"client at least), {parameters + ', ' if parameters else ''}"
        f"+{args.latency:g} ms per statement on every engine",
        file=out,
    )
    try:
        report = await probe(
            app,
            args.path,
            args.concurrency,
            request=request,
            latency_ms=args.latency,
            requests=args.requests,
            force=args.force,
            progress=_progress_bar(),
        )
    except ProbeError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    _print_table(report, out)
    for sentence in report.verdicts():
        print(textwrap.fill(sentence, 100, initial_indent="\n", subsequent_indent="  "), file=out)
    failures = report.what_failed()
    if failures:
        print("\nWhat failed, as a server's log and the clients saw it:", file=out)
        for said in failures:
            print(textwrap.indent(said, "  "), file=out)
    if report.unsupported:
        print(f"note: no simulated latency on {', '.join(sorted(report.unsupported))}", file=out)
    if args.csv:
        _write_csv(report, args.csv)
    if args.plot:
        _save_figure(_plots().plot_probe(report), args.plot, out)
    return 0


def binder_badge(args: argparse.Namespace) -> int:
    return binder.show_or_write(args.repository, write=args.write)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "binder-badge":
        return binder_badge(args)
    runner = {"bench": bench, "drive": drive, "probe": probe_app}[args.command]
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
