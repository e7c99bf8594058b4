"""``kdpc records ...``: inspect, verify and share record stores (the work is in ``kdpc.store``)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import KdpcError
from .common import parse_adapter, parse_kv
from .recording import teacher_options


@click.group("records")
def records_group() -> None:
    """Inspect, verify and share record stores."""


@records_group.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def records_info_cmd(path: str, as_json: bool) -> None:
    """Records, views, codec, bytes per record, teacher accuracy and provenance of a store (exit 2 when it finds a
    problem, e.g. an incomplete or damaged store)."""
    from ..store import store_info
    from ..store.info import format_info

    info = store_info(path)
    click.echo(json.dumps(info, default=str) if as_json else format_info(info))
    if info["problem"]:  # printed above with the rest; the exit code says it too
        raise KdpcError(info["problem"])


@records_group.command("verify")
@click.argument("path")
@click.option("--teacher", default=None, help="Also replay records through it: any teacher `kdpc record` takes "
              "(a file, or package.module:build_fn with --teacher-weights).")
@teacher_options
@click.option("--check", "num_check", type=int, default=64, show_default=True, help="Records to replay.")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def records_verify_cmd(path, teacher, teacher_weights, teacher_opt, adapter, num_check, data_root, device,
                       as_json) -> None:
    """Schema, completeness, NaN/Inf and every chunk's checksum; with --teacher, replay N records (a foreign
    teacher is fed and read with the adapter the store recorded, unless --adapter is given)."""
    from ..store import verify_store

    if not teacher and (teacher_weights or teacher_opt or adapter):
        raise KdpcError("--teacher-weights, --teacher-opt and --adapter go with --teacher")

    report = verify_store(path)
    result: dict[str, Any] = {"path": path, "ok": report.ok, "problems": list(report.problems),
                              "checked_chunks": report.checked_chunks}
    if teacher and report.ok:
        from ..recorder.replay_check import replay_check

        replay = replay_check(path, teacher, num_check, data_root=data_root, device=device,
                              weights=teacher_weights, options=parse_kv(teacher_opt, "--teacher-opt") or None,
                              adapter=parse_adapter(adapter) if adapter else None)
        result["replay"] = replay
        if not replay["ok"]:
            result["ok"] = False
            result["problems"].append(replay["message"])
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{path}: {report.checked_chunks} chunks read")
        if "replay" in result:
            click.echo(f"replay of {result['replay']['checked']} records: {result['replay']['message']}")
        for problem in result["problems"]:
            click.echo(f"  problem: {problem}")
        click.echo("OK" if result["ok"] else "FAILED")
    if not result["ok"]:
        raise KdpcError(f"{path} failed verification: {result['problems'][0]}")


@records_group.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option("--break-lease", is_flag=True, help="Write even though another process holds the store's writer lease "
              "(only when that process is gone).")
def copy_cmd(src: str, dst: str, break_lease: bool) -> None:
    """Copy a store: folder, .zarr.zip or URL (s3://, gs://, https://, file://) to a folder or a bucket URL.

    Resumable: run it again after an interruption and it skips the objects already at DST (compared by size and
    MD5) and copies the rest. Every object is verified at DST; DST is marked complete only at the end.
    Credentials come from the usual places (AWS_* variables, AWS_ENDPOINT_URL, ~/.aws, fsspec config).
    """
    from ..store.share import copy_store

    click.echo(copy_store(src, dst, break_lease=break_lease).summary())


@records_group.command("pack")
@click.argument("src")
@click.argument("out")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def pack_cmd(src: str, out: str, overwrite: bool) -> None:
    """Pack a zarr store into one file OUT.zarr.zip that every kdpc command reads in place."""
    from ..store.share import pack_store

    click.echo(pack_store(src, out, overwrite=overwrite).summary())


@records_group.command("unpack")
@click.argument("pack")
@click.argument("dst")
@click.option("--break-lease", is_flag=True, help="Write even though another process holds the store's writer lease "
              "(only when that process is gone).")
def unpack_cmd(pack: str, dst: str, break_lease: bool) -> None:
    """Unpack a .zarr.zip into a folder (or a bucket URL); resumable like copy."""
    from ..store.share import unpack_store

    click.echo(unpack_store(pack, dst, break_lease=break_lease).summary())


@records_group.command("merge")
@click.argument("stores", nargs=-1, required=True)
@click.option("--out", required=True, help="The merged store: a folder (zarr) or *.h5.")
@click.option("--weights", default=None, help="Ensemble only: one weight per store, e.g. 0.7,0.3 (default equal).")
@click.option("--codec", default=None, help="Ensemble only: output codec (default: the first store's).")
@click.option("--embedding-from", default=None, metavar="STORE",
              help="Ensemble only: keep this store's teacher embedding (one of STORES, as given); by default an "
              "ensemble keeps none, since each teacher embeds in its own space.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--break-lease", is_flag=True, help="Write even though another process holds the store's writer lease "
              "(only when that process is gone).")
def merge_cmd(stores: tuple[str, ...], out: str, weights: str | None, codec: str | None, embedding_from: str | None,
              overwrite: bool, break_lease: bool) -> None:
    """Merge stores of the same data: one teacher -> all their views in one store; different teachers on the
    same views -> an ensemble (weighted mean of the teachers' probabilities)."""
    from ..store.share import merge_stores

    click.echo(merge_stores(list(stores), out, weights=weights, codec=codec, overwrite=overwrite,
                            break_lease=break_lease, embedding_from=embedding_from).summary())


@records_group.command("convert")
@click.argument("src")
@click.argument("dst")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option("--break-lease", is_flag=True, help="Write even though another process holds the store's writer lease "
              "(only when that process is gone).")
def convert_cmd(src: str, dst: str, overwrite: bool, break_lease: bool) -> None:
    """Convert zarr <-> HDF5 (by DST's suffix: *.h5 / *.hdf5, else a zarr folder); same header and arrays."""
    from ..store.share import convert_store

    path = convert_store(src, dst, overwrite=overwrite, break_lease=break_lease)
    click.echo(f"{src} -> {path}")
