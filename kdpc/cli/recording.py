"""``kdpc record``: run a frozen teacher once over many views of every sample and write a record store."""

from __future__ import annotations

import click

from ..distributed import is_main_process
from ..errors import KdpcError
from .common import overrides, yaml_layer


@click.command("record")
@click.option("--teacher", default=None, type=click.Path(dir_okay=False), help="Teacher checkpoint (kdpc train).")
@click.option("--dataset", default=None, help="Dataset (default: the one named in the checkpoint).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split to record (default train).")
@click.option("--views", type=int, default=None, help="Augmented views per sample (default 10).")
@click.option("--out", default=None, help="Store path: *.zarr (default records/<dataset>.zarr) or *.h5.")
@click.option("--codec", default=None, help="Teacher output codec: f32, f16, u8, topk:K (default: see docs).")
@click.option("--batch-size", type=int, default=None)
@click.option("--workers", type=int, default=None, help="DataLoader workers doing the augmentation.")
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--seed", type=int, default=None, help="Run seed: views depend only on (seed, sample, view).")
@click.option("--rotation", type=click.Choice(["none", "up", "so3"]), default=None, help="Recorded rotation.")
@click.option("--mix", type=float, default=None,
              help="Share of views that are mix views (part of the points from another sample), in [0, 1].")
@click.option("--chunk-records", type=int, default=None, help="Records per chunk/block.")
@click.option("--resume", is_flag=True, default=None, help="Finish an interrupted store.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing store.")
@click.option("--break-lease", is_flag=True, default=None,
              help="Record even though another process holds the store's writer lease (only when it is gone).")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
def record_cmd(teacher, dataset, data_root, split, views, out, codec, batch_size, workers, device, seed, rotation,
               mix, chunk_records, resume, overwrite, break_lease, config) -> None:
    """Run the frozen teacher once over many augmented views and write a record store."""
    from ..config import build_config
    from ..recorder import RecordConfig, record

    flags = overrides(teacher=teacher, dataset=dataset, data_root=data_root, split=split, views=views, out=out,
                      codec=codec, batch_size=batch_size, workers=workers, device=device, seed=seed,
                      chunk_records=chunk_records, resume=resume, overwrite=overwrite, break_lease=break_lease)
    flags["augment"] = overrides(rotation=rotation, mix=mix) or None
    cfg = build_config(RecordConfig, yaml_layer(config), flags)
    if not cfg.teacher:
        raise KdpcError("--teacher CKPT is required (make one with `kdpc train`)")
    result = record(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"store complete: {result.path} ({result.records_total} records)")
