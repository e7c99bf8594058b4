"""``kdpc record``: run a frozen teacher once over many views of every sample and write a record store."""

from __future__ import annotations

import click

from ..distributed import is_main_process
from ..errors import KdpcError
from .common import ConfigCommand, overrides, parse_adapter, parse_kv, set_layer, yaml_layer

TEACHER_HELP = ("Teacher: a kdpc checkpoint, a TorchScript archive, a torch.export .pt2, an ONNX model (recognised by "
                "content), or package.module:build_fn for a model of your own code (with --teacher-weights).")
ADAPTER_HELP = ("How a foreign teacher is fed and read: KEY=VALUE (layout=BNC|BCN, channels=xyz+normals, "
                "output=KEY|INDEX, output_type=logits|log_probs|probs, class_names=FILE, normalize=none|unit_sphere|"
                "unit_cube, scale=F) or a YAML file of them; repeatable.")


def teacher_options(fn):
    """--teacher-weights / --teacher-opt / --adapter: shared by ``kdpc record`` and ``kdpc records verify``."""
    fn = click.option("--adapter", multiple=True, metavar="KEY=VALUE|FILE", help=ADAPTER_HELP)(fn)
    fn = click.option("--teacher-opt", multiple=True, metavar="KEY=VALUE",
                      help="Keyword argument of a package.module:build_fn teacher; repeatable.")(fn)
    fn = click.option("--teacher-weights", default=None, type=click.Path(dir_okay=False),
                      help="Weights of a package.module:build_fn teacher: a state dict (read weights-only; training "
                           "checkpoints that hold one work too) or .safetensors.")(fn)
    return fn


@click.command("record", cls=ConfigCommand, config_class="kdpc.recorder.run:RecordConfig",
               defaults={"rotation": "kdpc.augment:AugmentConfig.rotation", "mix": "kdpc.augment:AugmentConfig.mix"})
@click.option("--teacher", default=None, help=TEACHER_HELP)
@teacher_options
@click.option("--dataset", default=None, help="Dataset (default: the one named in a kdpc checkpoint; required for "
              "other teachers).")
@click.option("--dataset-opt", multiple=True, metavar="KEY=VALUE", help="Dataset option, e.g. channels=xyz+normals.")
@click.option("--num-points", type=int, default=None, help="Points per view (default: the checkpoint's, else the "
              "dataset's).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split to record.")
@click.option("--views", type=int, default=None, help="Augmented views per sample.")
@click.option("--out", default=None, help="Store path: *.zarr (default records/<dataset>.zarr) or *.h5.")
@click.option("--codec", default=None, help="Teacher output codec: f32, f16, u8, topk:K (default: the task's).")
@click.option("--batch-size", type=int, default=None)
@click.option("--workers", type=int, default=None, help="DataLoader workers doing the augmentation.")
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--seed", type=int, default=None, help="Run seed: views depend only on (seed, sample, view).")
@click.option("--rotation", type=click.Choice(["none", "up", "so3"]), default=None, help="Recorded rotation.")
@click.option("--mix", type=float, default=None,
              help="Share of views that are mix views (part of the points from another sample), in [0, 1].")
@click.option("--chunk-records", type=int, default=None, help="Records per chunk/block.")
@click.option("--feature-dim", type=int, default=None,
              help="Teacher features kept per view, this wide (randomly projected from a wider teacher): a "
                   "classifier's embedding of the view (default 256 for kdpc checkpoint teachers, none for others; "
                   "0: none), a part or scene teacher's features at each anchor (default 32).")
@click.option("--amp", "precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="Run the teacher under autocast at bf16 / fp16 (default fp32, TF32 off). The store keeps it; "
                   "`records verify --teacher` allows that precision's measured error.")
@click.option("--resume", is_flag=True, default=None, help="Finish an interrupted store.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing store.")
@click.option("--break-lease", is_flag=True, default=None,
              help="Record even though another process holds the store's writer lease (only when it is gone).")
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
              help="Any config key, nested keys dotted (e.g. --set augment.scale_low=0.8); repeatable.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
def record_cmd(teacher, teacher_weights, teacher_opt, adapter, dataset, dataset_opt, num_points, data_root, split,
               views, out, codec, batch_size, workers, device, seed, rotation, mix, chunk_records, feature_dim, precision,
               resume, overwrite,
               break_lease, set_pairs, config) -> None:
    """Run the frozen teacher once over many augmented views and write a record store."""
    from ..config import build_config
    from ..recorder import RecordConfig, record

    flags = overrides(teacher=teacher, teacher_weights=teacher_weights, dataset=dataset, num_points=num_points,
                      data_root=data_root, split=split, views=views, out=out, codec=codec, batch_size=batch_size,
                      workers=workers, device=device, seed=seed, chunk_records=chunk_records, feature_dim=feature_dim,
                      precision=precision, resume=resume,
                      overwrite=overwrite, break_lease=break_lease)
    flags["augment"] = overrides(rotation=rotation, mix=mix) or None
    if teacher_opt:
        flags["teacher_cfg"] = parse_kv(teacher_opt, "--teacher-opt")
    if adapter:
        flags["adapter"] = parse_adapter(adapter)
    if dataset_opt:
        flags["dataset_cfg"] = parse_kv(dataset_opt, "--dataset-opt")
    cfg = build_config(RecordConfig, yaml_layer(config), set_layer(set_pairs), flags)
    if not cfg.teacher:
        raise KdpcError("--teacher is required: a checkpoint (make one with `kdpc train`), a TorchScript / "
                        "torch.export / ONNX file, or package.module:build_fn with --teacher-weights")
    result = record(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"store complete: {result.path} ({result.records_total} records)")
