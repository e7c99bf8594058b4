"""``kdpc records copy | pack | unpack | merge | convert``: share record stores (added to the ``records`` group in
``kdpc/cli.py``). The work is in ``kdpc.records.share``; these only parse and print."""

from __future__ import annotations

import click


@click.command("copy")
@click.argument("src")
@click.argument("dst")
def copy_cmd(src: str, dst: str) -> None:
    """Copy a store: folder, .zarr.zip or URL (s3://, gs://, https://, file://) to a folder or a bucket URL.

    Resumable: run it again after an interruption and it skips the objects already at DST (compared by size and
    MD5) and copies the rest. Every object is verified at DST; DST is marked complete only at the end.
    Credentials come from the usual places (AWS_* variables, AWS_ENDPOINT_URL, ~/.aws, fsspec config).
    """
    from .records.share import copy_store

    click.echo(copy_store(src, dst).summary())


@click.command("pack")
@click.argument("src")
@click.argument("out")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def pack_cmd(src: str, out: str, overwrite: bool) -> None:
    """Pack a zarr store into one file OUT.zarr.zip that every kdpc command reads in place."""
    from .records.share import pack_store

    click.echo(pack_store(src, out, overwrite=overwrite).summary())


@click.command("unpack")
@click.argument("pack")
@click.argument("dst")
def unpack_cmd(pack: str, dst: str) -> None:
    """Unpack a .zarr.zip into a folder (or a bucket URL); resumable like copy."""
    from .records.share import unpack_store

    click.echo(unpack_store(pack, dst).summary())


@click.command("merge")
@click.argument("stores", nargs=-1, required=True)
@click.option("--out", required=True, help="The merged store: a folder (zarr) or *.h5.")
@click.option("--weights", default=None, help="Ensemble only: one weight per store, e.g. 0.7,0.3 (default equal).")
@click.option("--codec", default=None, help="Ensemble only: output codec (default: the first store's).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def merge_cmd(stores: tuple[str, ...], out: str, weights: str | None, codec: str | None, overwrite: bool) -> None:
    """Merge stores of the same data: one teacher -> all their views in one store; different teachers on the
    same views -> an ensemble (weighted mean of the teachers' probabilities)."""
    from .records.share import merge_stores

    click.echo(merge_stores(list(stores), out, weights=weights, codec=codec, overwrite=overwrite).summary())


@click.command("convert")
@click.argument("src")
@click.argument("dst")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
def convert_cmd(src: str, dst: str, overwrite: bool) -> None:
    """Convert zarr <-> HDF5 (by DST's suffix: *.h5 / *.hdf5, else a zarr folder); same header and arrays."""
    from .records.share import convert_store

    path = convert_store(src, dst, overwrite=overwrite)
    click.echo(f"{src} -> {path}")


COMMANDS = (copy_cmd, pack_cmd, unpack_cmd, merge_cmd, convert_cmd)
