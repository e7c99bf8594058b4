"""``kdpc train``, ``kdpc eval``, ``kdpc distill`` and ``kdpc demo``."""

from __future__ import annotations

import json

import click

from ..distributed import is_main_process
from ..errors import KdpcError
from .common import ConfigCommand, chosen, overrides, parse_adapter, parse_kv, set_layer, yaml_layer

SET_HELP = "Any config key, nested keys dotted (e.g. --set srkd.affinity_weight=0.5); values are YAML; repeatable."


@click.command("train", cls=ConfigCommand, config_class="kdpc.training.train:TrainConfig")
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
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False), help="YAML file; flags override it.")
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--workers", type=int, default=None, help="DataLoader workers.")
@click.option("--seed", type=int, default=None)
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Checkpoint to write (the chosen epoch); X.last.pt, X.metrics.jsonl and X.curves.png go next to it.")
@click.option("--resume", is_flag=True, default=None, help="Continue the interrupted run of --out from X.last.pt.")
def train_cmd(model, model_opt, dataset, data_root, dataset_opt, num_points, epochs, batch_size, lr, label_smoothing,
              select, set_pairs, config, device, workers, seed, out, resume) -> None:
    """Train a model with the standard recipe; keep the epoch chosen on the validation split (or the last).

    For scene datasets (synthetic-rooms, s3dis, scannet) --num-points is the most points of a training view (a
    seeded crop) and --batch-size counts scenes."""
    from ..config import build_config
    from ..training.train import TrainConfig, train

    flags = overrides(model=model, dataset=dataset, data_root=data_root, num_points=num_points, epochs=epochs,
                       batch_size=batch_size, lr=lr, label_smoothing=label_smoothing, select=select, device=device,
                       workers=workers, seed=seed, out=out, resume=resume)
    if model_opt:
        flags["model_cfg"] = parse_kv(model_opt, "--model-opt")
    if dataset_opt:
        flags["dataset_cfg"] = parse_kv(dataset_opt, "--dataset-opt")
    cfg = build_config(TrainConfig, yaml_layer(config), set_layer(set_pairs), flags)
    state, path = train(cfg, log=click.echo)
    if is_main_process():  # per-class IoUs stay in the checkpoint and `kdpc eval`; the line keeps the headline
        headline = {k: v for k, v in state.best_metrics.items() if "/iou/" not in k}
        click.echo(f"{chosen(headline)} -> {path}")


@click.command("eval")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Checkpoint file (kdpc train / kdpc distill). Give it more than once to score an ensemble of "
                   "classifiers: the weighted mean of their probabilities, as `kdpc records merge` records it.")
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False), hidden=True,
              help="Old name of --checkpoint.")
@click.option("--weights", default=None, help="Ensemble only: one weight per checkpoint, e.g. 0.7,0.3 (default equal).")
@click.option("--dataset", default=None, help="Dataset (default: the one named in the (first) checkpoint).")
@click.option("--dataset-opt", multiple=True,
              help="Dataset option KEY=VALUE over the checkpoint's own (e.g. samples_per_class=null: the synthetic "
                   "set's standard split sizes).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_cmd(checkpoints, model_path, weights, dataset, dataset_opt, data_root, split, batch_size, device,
             as_json) -> None:
    """Evaluate a checkpoint: overall and mean class accuracy (mIoU for part segmentation; mIoU, per-class IoU and
    OA over every point of the whole scenes for scene segmentation), or an ensemble of classifiers and each member."""
    from ..training.evaluate import evaluate_checkpoint, evaluate_ensemble

    if checkpoints and model_path:
        raise KdpcError("give the checkpoint once: --checkpoint FILE (--model is its old name)")
    checkpoints = list(checkpoints) or ([model_path] if model_path else [])
    if not checkpoints:
        raise KdpcError("--checkpoint FILE is required (a checkpoint of kdpc train or kdpc distill)")
    if len(checkpoints) == 1 and weights is not None:
        raise KdpcError("--weights is for an ensemble: give --checkpoint more than once")
    options = parse_kv(dataset_opt, "--dataset-opt")
    if len(checkpoints) > 1:
        result = evaluate_ensemble(checkpoints, weights, dataset=dataset, data_root=data_root, split=split,
                                   batch_size=batch_size, device=device, dataset_options=options)
        if as_json:
            click.echo(json.dumps(result))
            return
        where = f"{result['dataset']}/{result['split']} ({result['num_samples']} samples)"
        for member, w in zip(result["members"], result["weights"]):
            click.echo(f"{member['model']} {member['checkpoint']} (weight {w:g}) on {where}: "
                       f"oa={member['oa']:.4f} macc={member['macc']:.4f}")
        click.echo(f"ensemble of {len(checkpoints)} on {where}: oa={result['oa']:.4f} macc={result['macc']:.4f}")
        return
    result = evaluate_checkpoint(checkpoints[0], dataset=dataset, data_root=data_root, split=split,
                                 batch_size=batch_size, device=device, dataset_options=options)
    if as_json:
        click.echo(json.dumps(result))
    else:
        metrics = " ".join(f"{k}={result[k]:.4f}" for k in ("miou", "oa", "macc", "inst_miou", "cls_miou")
                           if k in result)
        click.echo(f"{result['model']} on {result['dataset']}/{result['split']} ({result['num_samples']} samples): {metrics}")
        per_class = {k[len("iou/"):]: v for k, v in result.items() if k.startswith("iou/")}
        if per_class:
            click.echo("IoU per class: " + " ".join(f"{name}={value:.4f}" for name, value in per_class.items()))


@click.command("distill", cls=ConfigCommand, config_class="kdpc.distill.trainer:DistillConfig")
@click.option("--records", default=None, help="Record store (path or URL) made by `kdpc record`.")
@click.option("--model", "student", default=None, help="Student architecture (see `kdpc models`).")
@click.option("--student", "student_old", default=None, hidden=True, help="Old name of --model.")
@click.option("--student-opt", multiple=True, help="Student option KEY=VALUE.")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--ce-weight", type=float, default=None, help="Weight of the cross-entropy to the labels.")
@click.option("--kd-weight", type=float, default=None,
              help="Weight of the term matching the recorded teacher (see --kd-objective).")
@click.option("--temperature", type=float, default=None)
@click.option("--kd-objective", type=click.Choice(["auto", "kl", "dist", "zkl"]), default=None,
              help="How a classifier matches the teacher: kl (Hinton's KL), dist (Pearson relations, DIST) or zkl "
                   "(KL of z-scored logits); auto: the measured default (docs/method.md).")
@click.option("--kd-schedule", type=click.Choice(["auto", "constant", "linear"]), default=None,
              help="Classification: the KD weight over the run, constant or falling linearly to 0 at the last "
                   "epoch; auto: the measured default (constant, docs/method.md).")
@click.option("--relation-weight", type=float, default=None,
              help="Classification: weight of the teacher's answer relations across the batch, asked of the "
                   "student's embedding (0: off).")
@click.option("--feature-weight", type=float, default=None,
              help="Classification: weight of matching the teacher's recorded embedding of each view (a store made "
                   "with `kdpc record --feature-dim`); default: on when the store keeps them (0: off).")
@click.option("--label-smoothing", type=float, default=None, help="Label smoothing of the CE term.")
@click.option("--select", type=click.Choice(["auto", "val", "last"]), default=None,
              help="Which epoch is kept: best on the validation split, the last one, or auto (val if the data has "
                   "one). Never the test split.")
@click.option("--nwsd-weight", type=float, default=None, help="Signed NWSD weight (negative: push away).")
@click.option("--nwsd-source", type=click.Choice(["ema", "past", "sharpen"]), default=None)
@click.option("--views", type=int, default=None, help="Use only the first K recorded views (default all).")
@click.option("--num-points", type=int, default=None,
              help="Classification stores: the student reads the first N points of each recorded view (default "
                   "all), e.g. from a teacher recorded at a higher resolution.")
@click.option("--online-teacher", default=None,
              help="Baseline: classic online KD with this teacher in every step (no store); any teacher `kdpc "
                   "record` takes.")
@click.option("--online-teacher-weights", default=None, type=click.Path(dir_okay=False),
              help="Weights of a package.module:build_fn online teacher.")
@click.option("--online-adapter", multiple=True, metavar="KEY=VALUE|FILE",
              help="Adapter of a foreign online teacher (as `kdpc record --adapter`).")
@click.option("--online-dataset", default=None, help="Dataset of the online baseline (default: the kdpc "
              "checkpoint's; required for other teachers).")
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", default=None, help="Run folder (default runs/<student>-<store>).")
@click.option("--resume", is_flag=True, default=None, help="Continue from <out>/last.pt.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
@click.option("--device", default=None)
@click.option("--workers", type=int, default=None)
@click.option("--seed", type=int, default=None)
def distill_cmd(records, student, student_old, student_opt, data_root, epochs, batch_size, lr, ce_weight, kd_weight,
                temperature, kd_objective, kd_schedule, relation_weight, feature_weight, label_smoothing, select, nwsd_weight,
                nwsd_source, views, num_points, online_teacher, online_teacher_weights, online_adapter, online_dataset, set_pairs,
                out, resume, config, device, workers, seed) -> None:
    """Train a student from a record store alone: CE + KD to the recorded teacher (+ NWSD with --nwsd-weight);
    parts and scenes: CE + per-point KL + the SRKD relation terms (--set srkd.KEY=VALUE)."""
    from ..config import build_config
    from ..distill.trainer import DistillConfig, distill

    student = _one_of(student, student_old, "--model")
    flags = overrides(records=records, student=student, data_root=data_root, epochs=epochs, batch_size=batch_size,
                       lr=lr, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature,
                       kd_objective=kd_objective, kd_schedule=kd_schedule, relation_weight=relation_weight,
                       feature_weight=feature_weight,
                       label_smoothing=label_smoothing, select=select, nwsd_weight=nwsd_weight,
                       nwsd_source=nwsd_source, views=views, num_points=num_points, online_teacher=online_teacher,
                       online_teacher_weights=online_teacher_weights, out=out, resume=resume, device=device,
                       workers=workers, seed=seed)
    if student_opt:
        flags["student_cfg"] = parse_kv(student_opt, "--student-opt")
    if online_adapter:
        flags["online_adapter"] = parse_adapter(online_adapter)
    if online_dataset:
        flags["online_dataset"] = {"name": online_dataset}
    cfg = build_config(DistillConfig, yaml_layer(config), set_layer(set_pairs), flags)
    if cfg.records:
        _check_store_dataset(cfg.records)
    state, run_dir = distill(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"{chosen(state.best_metrics)} -> {run_dir}/student.pt")


@click.command("demo", cls=ConfigCommand, config_class="kdpc.demo:DemoConfig")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--task", type=click.Choice(["partseg", "classification"]), default=None,
              help="partseg: SRKD on synthetic-parts; classification: KD on synthetic.")
@click.option("--teacher-model", "teacher", default=None, help="Teacher architecture (default: the task's).")
@click.option("--teacher", "teacher_old", default=None, hidden=True, help="Old name of --teacher-model.")
@click.option("--student-model", "student", default=None, help="Student architecture (default: the task's).")
@click.option("--student", "student_old", default=None, hidden=True, help="Old name of --student-model.")
@click.option("--epochs", type=int, default=None, help="Epochs for teacher and students (default: the task's).")
@click.option("--views", type=int, default=None, help="Recorded views per sample (default: the student's epochs).")
@click.option("--device", default=None)
@click.option("--seed", type=int, default=None)
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def demo_cmd(out, task, teacher, teacher_old, student, student_old, epochs, views, device, seed, set_pairs) -> None:
    """Train a teacher on an embedded dataset, record it, distill a student and compare with CE-only."""
    from ..config import build_config
    from ..demo import DemoConfig, run_demo

    flags = overrides(task=task, teacher=_one_of(teacher, teacher_old, "--teacher-model"),
                      student=_one_of(student, student_old, "--student-model"), teacher_epochs=epochs,
                      student_epochs=epochs, views=views, device=device, seed=seed)
    run_demo(out, build_config(DemoConfig, set_layer(set_pairs), flags), log=click.echo)


COMMANDS = (train_cmd, eval_cmd, distill_cmd, demo_cmd)


def _check_store_dataset(records: str) -> None:
    """Before any work: a store whose dataset comes from a plugin that is not loaded gets one line naming it."""
    from ..data import DATASETS
    from ..plugins import missing_hint
    from ..store.backends import open_store, read_header

    try:
        header = read_header(open_store(records, "r"))
    except Exception:  # best effort: the run itself reports whatever is wrong with the store, as one line
        return
    name = header.dataset.get("name")
    if name and name not in DATASETS:
        raise KdpcError(f"records {records}: {missing_hint('dataset', name, header.dataset.get('plugin'))}")


def _one_of(value: str | None, old: str | None, flag: str) -> str | None:
    """A flag and its old name: either one, not both."""
    if value and old and value != old:
        raise KdpcError(f"give {flag} once ({value!r} and {old!r} were both given)")
    return value or old
