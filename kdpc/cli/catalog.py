"""``kdpc datasets`` and ``kdpc models``: what is registered."""

from __future__ import annotations

import click


@click.command("datasets")
def datasets_cmd() -> None:
    """List the registered datasets."""
    from ..data import list_datasets

    for name, description in list_datasets():
        click.echo(f"{name:24s} {description}")


@click.command("models")
@click.option("--task", type=click.Choice(["cls", "partseg", "semseg", "all"]), default=None,
              help="Only models of this task (default: the object-level ones, cls and partseg; semseg: scenes).")
@click.option("--num-classes", type=int, default=40, show_default=True, help="Head size used to count parameters.")
def models_cmd(task: str | None, num_classes: int) -> None:
    """List the registered models with their parameter counts."""
    from ..models import count_parameters, create_model, list_models, model_task

    click.echo(f"{'model':24s} {'task':8s} {'params':>12s}")
    for name in list_models(task):
        params = count_parameters(create_model(name, num_classes=num_classes))
        click.echo(f"{name:24s} {model_task(name):8s} {params:>12,d}")


COMMANDS = (datasets_cmd, models_cmd)
