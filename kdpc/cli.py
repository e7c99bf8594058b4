"""Command line: click groups only. Parse, call the library, turn ``KdpcError`` into one line and exit code 2."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .distributed import is_main_process
from .errors import KdpcError


def _overrides(**kwargs: Any) -> dict[str, Any]:
    """CLI flags that were actually given (None means "not given": YAML or the default applies)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _yaml_layer(config: str | None) -> dict[str, Any]:
    from .config import load_yaml

    return load_yaml(config) if config else {}


def _chosen(metrics: dict[str, Any]) -> str:
    """``chosen: epoch 7 (best val/oa): val/oa=0.91 test/oa=0.90``: which epoch was kept, why, and its scores."""
    scores = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return f"chosen: epoch {metrics.get('epoch')} ({metrics.get('selected_by')}): {scores}"


def _parse_kv(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``--model-opt width=32`` style options; values parsed as YAML scalars (so 32 is an int, true a bool)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise KdpcError(f"{flag} takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


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


# ----------------------------------------------------------------------------------------------------- listing
@cli.command("datasets")
def datasets_cmd() -> None:
    """List the registered datasets."""
    from .data import list_datasets

    for name, description in list_datasets():
        click.echo(f"{name:24s} {description}")


@cli.command("models")
@click.option("--task", type=click.Choice(["cls", "partseg"]), default=None, help="Only models of this task.")
@click.option("--num-classes", type=int, default=40, show_default=True, help="Head size used to count parameters.")
def models_cmd(task: str | None, num_classes: int) -> None:
    """List the registered models with their parameter counts."""
    from .models import count_parameters, create_model, list_models, model_task

    click.echo(f"{'model':24s} {'task':8s} {'params':>12s}")
    for name in list_models(task):
        params = count_parameters(create_model(name, num_classes=num_classes))
        click.echo(f"{name:24s} {model_task(name):8s} {params:>12,d}")


# ------------------------------------------------------------------------------------------------------- train
@cli.command("train")
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
    from .config import build_config
    from .train import TrainConfig, train

    flags = _overrides(model=model, dataset=dataset, data_root=data_root, num_points=num_points, epochs=epochs,
                       batch_size=batch_size, lr=lr, label_smoothing=label_smoothing, select=select, device=device,
                       workers=workers, seed=seed, out=out)
    if model_opt:
        flags["model_cfg"] = _parse_kv(model_opt, "--model-opt")
    if dataset_opt:
        flags["dataset_cfg"] = _parse_kv(dataset_opt, "--dataset-opt")
    cfg = build_config(TrainConfig, _yaml_layer(config), flags)
    state, path = train(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"{_chosen(state.best_metrics)} -> {path}")


# -------------------------------------------------------------------------------------------------------- eval
@cli.command("eval")
@click.option("--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint file.")
@click.option("--dataset", default=None, help="Dataset (default: the one named in the checkpoint).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_cmd(checkpoint, dataset, data_root, split, batch_size, device, as_json) -> None:
    """Evaluate a checkpoint: overall and mean class accuracy (mIoU for part segmentation)."""
    from .evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, dataset=dataset, data_root=data_root, split=split,
                                 batch_size=batch_size, device=device)
    if as_json:
        click.echo(json.dumps(result))
    else:
        metrics = " ".join(f"{k}={result[k]:.4f}" for k in ("oa", "macc", "inst_miou", "cls_miou") if k in result)
        click.echo(f"{result['model']} on {result['dataset']}/{result['split']} ({result['num_samples']} samples): {metrics}")


# ------------------------------------------------------------------------------------------------------ record
@cli.command("record")
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
@click.option("--chunk-records", type=int, default=None, help="Records per chunk/block.")
@click.option("--resume", is_flag=True, default=None, help="Finish an interrupted store.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing store.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False))
def record_cmd(teacher, dataset, data_root, split, views, out, codec, batch_size, workers, device, seed, rotation,
               chunk_records, resume, overwrite, config) -> None:
    """Run the frozen teacher once over many augmented views and write a record store."""
    from .config import build_config
    from .recorder import RecordConfig, record

    flags = _overrides(teacher=teacher, dataset=dataset, data_root=data_root, split=split, views=views, out=out,
                       codec=codec, batch_size=batch_size, workers=workers, device=device, seed=seed,
                       chunk_records=chunk_records, resume=resume, overwrite=overwrite)
    if rotation:
        flags["augment"] = {"rotation": rotation}
    cfg = build_config(RecordConfig, _yaml_layer(config), flags)
    if not cfg.teacher:
        raise KdpcError("--teacher CKPT is required (make one with `kdpc train`)")
    result = record(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"store complete: {result.path} ({result.records_total} records)")


@cli.group("records")
def records_group() -> None:
    """Inspect, verify and share record stores."""


@records_group.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def records_info_cmd(path: str, as_json: bool) -> None:
    """Records, views, codec, bytes per record, teacher accuracy and provenance of a store."""
    from .records import store_info
    from .records.info import format_info

    info = store_info(path)
    click.echo(json.dumps(info, default=str) if as_json else format_info(info))


@records_group.command("verify")
@click.argument("path")
@click.option("--teacher", default=None, type=click.Path(dir_okay=False), help="Also replay records through it.")
@click.option("--check", "num_check", type=int, default=64, show_default=True, help="Records to replay.")
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def records_verify_cmd(path, teacher, num_check, data_root, device, as_json) -> None:
    """Schema, completeness, NaN/Inf and every chunk's checksum; with --teacher, replay N records."""
    from .records import verify_store

    report = verify_store(path)
    result: dict[str, Any] = {"path": path, "ok": report.ok, "problems": list(report.problems),
                              "checked_chunks": report.checked_chunks}
    if teacher and report.ok:
        from .recorder.replay_check import replay_check

        replay = replay_check(path, teacher, num_check, data_root=data_root, device=device)
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


# ----------------------------------------------------------------------------------------------------- distill
@cli.command("distill")
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
    from .config import build_config
    from .distill.trainer import DistillConfig, distill

    flags = _overrides(records=records, student=student, data_root=data_root, epochs=epochs, batch_size=batch_size,
                       lr=lr, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature,
                       label_smoothing=label_smoothing, select=select, nwsd_weight=nwsd_weight,
                       nwsd_source=nwsd_source, views=views, online_teacher=online_teacher, out=out, resume=resume,
                       device=device, workers=workers, seed=seed)
    if student_opt:
        flags["student_cfg"] = _parse_kv(student_opt, "--student-opt")
    cfg = build_config(DistillConfig, _yaml_layer(config), flags)
    state, run_dir = distill(cfg, log=click.echo)
    if is_main_process():
        click.echo(f"{_chosen(state.best_metrics)} -> {run_dir}/student.pt")


@cli.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--teacher", default=None, help="Teacher model (default pointmlp-tiny).")
@click.option("--student", default=None, help="Student model (default pointnet-tiny).")
@click.option("--epochs", type=int, default=None, help="Epochs for teacher and students.")
@click.option("--views", type=int, default=None)
@click.option("--device", default=None)
@click.option("--seed", type=int, default=None)
def demo_cmd(out, teacher, student, epochs, views, device, seed) -> None:
    """Train a teacher on the embedded dataset, record it, distill a student and compare with CE-only."""
    from .config import build_config
    from .demo import DemoConfig, run_demo

    flags = _overrides(teacher=teacher, student=student, teacher_epochs=epochs, student_epochs=epochs, views=views,
                       device=device, seed=seed)
    run_demo(out, build_config(DemoConfig, flags), log=click.echo)


from .records_cli import COMMANDS as _RECORDS_COMMANDS  # noqa: E402 - copy, pack, unpack, merge, convert

for _command in _RECORDS_COMMANDS:
    records_group.add_command(_command)


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
