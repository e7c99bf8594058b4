"""``kdpc train``, ``kdpc eval``, ``kdpc distill`` and ``kdpc demo``."""

from __future__ import annotations

import json

import click

from ..distributed import is_main_process
from .common import chosen, overrides, parse_kv, yaml_layer


@click.command("train")
@click.option("--model", default=None, help="Registered model name (see `kdpc models`).")
@click.option("--model-opt", multiple=True, help="Model option KEY=VALUE, e.g. --model-opt width=32.")
@click.option("--dataset", default=None, help="Registered dataset name (default synthetic).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--dataset-opt", multiple=True, help="Dataset option KEY=VALUE.")
@click.option("--num-points", type=int, default=None)
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--label-smoothing", type=float, default=None, help="CE label smoothing (default 0: a teacher to "
              "be recorded keeps its class similarities).")
@click.option("--select", type=click.Choice(["auto", "val", "last"]), default=None,
              help="Which epoch is kept: best on the validation split, the last one, or auto (val if the data has "
                   "one). Never the test split.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False), help="YAML file; flags override it.")
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--workers", type=int, default=None, help="DataLoader workers.")
@click.option("--seed", type=int, default=None)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Checkpoint to write (the best epoch).")
def train_cmd(model, model_opt, dataset, data_root, dataset_opt, num_points, epochs, batch_size, lr, label_smoothing,
              select, config, device, workers, seed, out) -> None:
    """Train a model with the standard recipe; keep the epoch chosen on the validation split (or the last)."""
    from ..config import build_config
    from ..training.train import TrainConfig, train

    flags = overrides(model=model, dataset=dataset, data_root=data_root, num_points=num_points, epochs=epochs,
                       batch_size=batch_size, lr=lr, label_smoothing=label_smoothing, select=select, device=device,
                       workers=workers, seed=seed, out=out)
    if model_opt:
        flags["model_cfg"] = parse_kv(model_opt, "--model-opt")
    if dataset_opt:
        flags["dataset_cfg"] = parse_kv(dataset_opt, "--dataset-opt")
    cfg = build_config(TrainConfig, yaml_layer(config), flags)
    state, path = train(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"{chosen(state.best_metrics)} -> {path}")


@click.command("eval")
@click.option("--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint file.")
@click.option("--dataset", default=None, help="Dataset (default: the one named in the checkpoint).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_cmd(checkpoint, dataset, data_root, split, batch_size, device, as_json) -> None:
    """Evaluate a checkpoint: overall and mean class accuracy (mIoU for part segmentation)."""
    from ..training.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, dataset=dataset, data_root=data_root, split=split,
                                 batch_size=batch_size, device=device)
    if as_json:
        click.echo(json.dumps(result))
    else:
        metrics = " ".join(f"{k}={result[k]:.4f}" for k in ("oa", "macc", "inst_miou", "cls_miou") if k in result)
        click.echo(f"{result['model']} on {result['dataset']}/{result['split']} ({result['num_samples']} samples): {metrics}")


@click.command("distill")
@click.option("--records", default=None, help="Record store (path or URL) made by `kdpc record`.")
@click.option("--student", default=None, help="Student model name (see `kdpc models`).")
@click.option("--student-opt", multiple=True, help="Student option KEY=VALUE.")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--ce-weight", type=float, default=None, help="Weight of the cross-entropy to the labels.")
@click.option("--kd-weight", type=float, default=None, help="Weight of the KL to the recorded teacher.")
@click.option("--temperature", type=float, default=None)
@click.option("--label-smoothing", type=float, default=None, help="Label smoothing of the CE term.")
@click.option("--select", type=click.Choice(["auto", "val", "last"]), default=None,
              help="Which epoch is kept: best on the validation split, the last one, or auto (val if the data has "
                   "one). Never the test split.")

@click.option("--nwsd-weight", type=float, default=None, help="Signed NWSD weight (negative: push away).")
@click.option("--nwsd-source", type=click.Choice(["ema", "past", "sharpen"]), default=None)
@click.option("--views", type=int, default=None, help="Use only the first K recorded views (default all).")
@click.option("--online-teacher", default=None, type=click.Path(dir_okay=False),
              help="Baseline: classic online KD with this teacher in every step (no store).")
@click.option("--out", default=None, help="Run folder (default runs/<student>-<store>).")
@click.option("--resume", is_flag=True, default=None, help="Continue from <out>/last.pt.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
@click.option("--device", default=None)
@click.option("--workers", type=int, default=None)
@click.option("--seed", type=int, default=None)
def distill_cmd(records, student, student_opt, data_root, epochs, batch_size, lr, ce_weight, kd_weight, temperature,
                label_smoothing, select, nwsd_weight, nwsd_source, views, online_teacher, out, resume, config, device,
                workers, seed) -> None:
    """Train a student from a record store alone: CE + KD to the recorded teacher + NWSD."""
    from ..config import build_config
    from ..distill.trainer import DistillConfig, distill

    flags = overrides(records=records, student=student, data_root=data_root, epochs=epochs, batch_size=batch_size,
                       lr=lr, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature,
                       label_smoothing=label_smoothing, select=select, nwsd_weight=nwsd_weight,
                       nwsd_source=nwsd_source, views=views, online_teacher=online_teacher, out=out, resume=resume,
                       device=device, workers=workers, seed=seed)
    if student_opt:
        flags["student_cfg"] = parse_kv(student_opt, "--student-opt")
    cfg = build_config(DistillConfig, yaml_layer(config), flags)
    state, run_dir = distill(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"{chosen(state.best_metrics)} -> {run_dir}/student.pt")


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--teacher", default=None, help="Teacher model (default pointmlp-tiny).")
@click.option("--student", default=None, help="Student model (default pointnet-tiny).")
@click.option("--epochs", type=int, default=None, help="Epochs for teacher and students.")
@click.option("--views", type=int, default=None)
@click.option("--device", default=None)
@click.option("--seed", type=int, default=None)
def demo_cmd(out, teacher, student, epochs, views, device, seed) -> None:
    """Train a teacher on the embedded dataset, record it, distill a student and compare with CE-only."""
    from ..config import build_config
    from ..demo import DemoConfig, run_demo

    flags = overrides(teacher=teacher, student=student, teacher_epochs=epochs, student_epochs=epochs, views=views,
                       device=device, seed=seed)
    run_demo(out, build_config(DemoConfig, flags), log=click.echo)


COMMANDS = (train_cmd, eval_cmd, distill_cmd, demo_cmd)
