"""Command line: click groups only. Parse, call the library, turn ``KdpcError`` into one line and exit code 2.

One module per group of commands: ``training`` (train, eval, distill, demo), ``recording`` (record), ``records``
(the ``kdpc records`` group), ``catalog`` (datasets, models)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from .. import __version__
from .. import secrets
from ..errors import KdpcError
from . import catalog, recording, records, training


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="kdpc")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE (your code that registers models and datasets) before the command; repeatable. "
                   "Installed packages can also register through the 'kdpc.plugins' entry point group.")
def cli(plugins: tuple[str, ...]) -> None:
    """kdpc: offline knowledge distillation for point-cloud models.

    \b
    kdpc train    --model pointmlp-tiny --out runs/teacher.pt      # a teacher from a dataset
    kdpc record   --teacher runs/teacher.pt                        # run it once over many views
    kdpc distill  --records records/synthetic.zarr                 # train a student from the records alone
    kdpc eval     --checkpoint runs/student/student.pt
    """
    from ..plugins import load_entry_points, load_plugins

    load_entry_points()
    load_plugins(plugins)


for _command in (*catalog.COMMANDS, *training.COMMANDS, recording.record_cmd, records.records_group):
    cli.add_command(_command)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the work finished so far is kept and resumable."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _exit(code: int) -> None:
    """Leave quietly: requests an async filesystem (s3fs, aiohttp) left pending are garbage-collected at shutdown
    and would print pages of "Exception ignored" after the one line that matters."""
    sys.unraisablehook = lambda unraisable: None
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.exit(code)


def _interrupted(exc: KeyboardInterrupt) -> None:
    what = "terminated" if isinstance(exc, Terminated) else "interrupted"
    click.echo(f"kdpc: {what}; finished work is kept (rerun with --resume where supported)", err=True)
    _exit(143 if isinstance(exc, Terminated) else 130)


def main(argv: list[str] | None = None) -> None:
    secrets.install()
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None
    try:
        _run(argv)
    finally:  # called in-process (a notebook, the tests): leave the caller's handler as it was
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> None:
    try:
        code = cli.main(args=argv, prog_name="kdpc", standalone_mode=False)
    except KdpcError as exc:
        click.echo(f"kdpc: error: {' '.join(secrets.redact_text(str(exc)).split())}", err=True)
        _exit(2)
    except click.ClickException as exc:
        exc.show()
        _exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and our SIGTERM) into Abort
        if isinstance(exc.__context__, KeyboardInterrupt):
            _interrupted(exc.__context__)
        click.echo("kdpc: aborted", err=True)
        _exit(130)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    _exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

