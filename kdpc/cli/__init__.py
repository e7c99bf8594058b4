"""Command line: click groups only. Parse, call the library, turn ``KdpcError`` into one line and exit code 2.

One module per group of commands: ``training`` (train, eval, distill, demo), ``recording`` (record), ``records``
(the ``kdpc records`` group), ``catalog`` (datasets, models)."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import KdpcError
from . import catalog, recording, records, training


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="kdpc")
def cli() -> None:
    """kdpc: offline knowledge distillation for point-cloud models.

    \b
    kdpc train    --model pointmlp-tiny --out runs/teacher.pt      # a teacher from a dataset
    kdpc record   --teacher runs/teacher.pt                        # run it once over many views
    kdpc distill  --records records/synthetic.zarr                 # train a student from the records alone
    kdpc eval     --model runs/student/student.pt
    """


for _command in (*catalog.COMMANDS, *training.COMMANDS, recording.record_cmd, records.records_group):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="kdpc", standalone_mode=False)
    except KdpcError as exc:
        click.echo(f"kdpc: error: {exc}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("kdpc: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("kdpc: interrupted; finished work is kept (rerun with --resume where supported)", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

