"""``kdpc distill``: train a student from a record store alone (the teacher is never loaded), or, as the baseline,
with ``--online-teacher`` (the only path here that loads a teacher)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..augment import AugmentConfig, PointAugmentConfig
from ..checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..config import config_to_dict, save_yaml
from ..distributed import World, all_gather_cat, barrier, decorrelate_rng, distributed, everywhere, main_log, on_main
from ..distributed import all_gather_cat_with_grad, rank_device, wrap_ddp
from ..errors import KdpcError
from ..secrets import redact_text, shareable
from ..teachers import Teacher, load_teacher
from ..models import count_parameters, model_features_and_logits, model_forward, model_inputs, model_task
from ..models.base import unwrap_model
from ..training.evaluate import primary_metric
from ..training.loop import LoopHooks, LoopState, fit, resolve_select
from ..training.runtime import resolve_device, seed_everything
from ..training.setup import FitConfig, build_model, build_optimisation, epoch_loader, load_splits, scorers
from .dataset import RecordedViews, check_provenance, student_points
from .embedding import DEFAULT_FEATURE_TEMPERATURE, EmbeddingProjector, embedding_contrast_loss
from .losses import answer_relation_loss, dist_loss, kd_loss, label_smoothing_ce, nwsd_loss, standardized_kd_loss
from .seg import SrkdLoss, srkd_options
from .self_targets import make_self_target

NWSD_SOURCES = ("ema", "past", "sharpen")


@dataclass
class DistillConfig(FitConfig):
    records: str | None = None
    student: str = "pointnet-tiny"
    student_cfg: dict[str, Any] = field(default_factory=dict)
    epochs: int = 40  # one recorded view per epoch with `kdpc record`'s default 40 views
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    temperature: float = 2.0  # measured best on validation (docs/method.md)
    # auto | kl (Hinton) | dist (Pearson relations) | zkl (z-scored KL): auto = CLASSIFICATION_KD_OBJECTIVE
    kd_objective: str = "auto"
    # auto | constant | linear (the KD weight falls from kd_weight to 0 over the run, classification only):
    # auto = constant, which validation preferred (docs/method.md)
    kd_schedule: str = "auto"
    relation_weight: float = 0.0  # classification: the teacher's answer relations asked of the student's embedding
    # classification: the student's embedding matched to the teacher's recorded one (kdpc.distill.embedding);
    # None = auto: FEATURE_WEIGHT when the store keeps the teacher's embeddings (kdpc record's default for kdpc
    # checkpoint classifiers) and the student's embedding is at least as wide, else 0 (also for --online-teacher,
    # where it must be asked for)
    feature_weight: float | None = None
    feature_temperature: float = DEFAULT_FEATURE_TEMPERATURE
    nwsd_weight: float = 0.0  # off: measured neutral under the honest protocol (docs/method.md); -0.2 turns it on
    nwsd_source: str = "sharpen"
    nwsd_max_kl: float = 0.5
    nwsd_temperature: float | None = None  # defaults to `temperature`
    ema_decay: float = 0.99
    sharpen_temperature: float = 2.0
    online_teacher: str | None = None  # any --teacher spec (kdpc.teachers): a file or package.module:build_fn
    online_teacher_weights: str | None = None
    online_teacher_cfg: dict[str, Any] = field(default_factory=dict)
    online_adapter: dict[str, Any] = field(default_factory=dict)
    online_dataset: dict[str, Any] = field(default_factory=dict)  # name, config, num_points (a kdpc checkpoint's own)
    views: int | None = None  # distill from the first K recorded views only (default: all of them)
    # classification stores: the student reads the first N points of each recorded view (default: all of them),
    # e.g. a teacher recorded at every raw point for a student deployed at fewer (kdpc.distill.dataset.student_points)
    num_points: int | None = None
    srkd: dict[str, Any] = field(default_factory=dict)  # segmentation losses (kdpc.distill.seg.SrkdConfig)
    online_views: int = 40  # as many views as `kdpc record` records by default
    online_seed: int = 0
    online_augment: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nwsd_source not in NWSD_SOURCES:
            raise KdpcError(f"--nwsd-source must be one of {', '.join(NWSD_SOURCES)}, got {self.nwsd_source!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise KdpcError(f"--temperature must be a number > 0, got {self.temperature!r}")
        if self.feature_weight is not None and not (math.isfinite(self.feature_weight) and self.feature_weight >= 0):
            raise KdpcError(f"--feature-weight must be a number >= 0 (or auto), got {self.feature_weight!r}")
        if not (math.isfinite(self.feature_temperature) and self.feature_temperature > 0):
            raise KdpcError(f"feature_temperature must be a number > 0, got {self.feature_temperature!r}")
        for name in ("ce_weight", "kd_weight", "nwsd_weight", "relation_weight"):
            if not math.isfinite(getattr(self, name)):
                raise KdpcError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)!r}")
        if self.kd_objective not in ("auto", *KD_OBJECTIVES):
            raise KdpcError(f"--kd-objective must be auto or one of {', '.join(KD_OBJECTIVES)}, "
                            f"got {self.kd_objective!r}")
        if self.kd_schedule not in ("auto", *KD_SCHEDULES):
            raise KdpcError(f"--kd-schedule must be auto or one of {', '.join(KD_SCHEDULES)}, "
                            f"got {self.kd_schedule!r}")
        if self.num_points is not None and self.num_points < 1:
            raise KdpcError(f"--num-points must be >= 1 (or left out: every recorded point), got {self.num_points}")
        if self.num_points is not None and self.records is None:
            raise KdpcError("--num-points is for offline distillation (--records): the online teacher reads the "
                            "student's own points")
        if self.views is not None and self.views < 1:
            raise KdpcError(f"--views must be >= 1 (or left out: all recorded views), got {self.views}")
        if self.records is None and self.online_teacher is None:
            raise KdpcError("give --records STORE (offline distillation) or --online-teacher CKPT (the baseline)")


KD_OBJECTIVES = {"kl": kd_loss, "dist": dist_loss, "zkl": standardized_kd_loss}
CLASSIFICATION_KD_OBJECTIVE = "dist"  # what `auto` means for classification: chosen on validation (docs/method.md)
KD_SCHEDULES = ("constant", "linear")
CLASSIFICATION_KD_SCHEDULE = "constant"  # what `auto` means for classification, likewise
FEATURE_WEIGHT = 10.0  # what `auto` means for a store that keeps the teacher's embeddings: chosen on validation


def kd_weight_at(schedule: str, weight: float, epochs_done: float, epochs: int) -> float:
    """The KD term's weight once ``epochs_done`` (fractional) of ``epochs`` are done: ``constant`` keeps ``weight``;
    ``linear`` falls from ``weight`` to 0 at the end of the run, so the student follows the teacher while it learns
    fastest and settles on the labels as the learning rate anneals (after Cho & Hariharan, ICCV 2019: teacher
    guidance that stops early can help a small student)."""
    if schedule == "constant":
        return weight
    return weight * max(0.0, 1.0 - epochs_done / epochs)


def mixed_ce(logits: torch.Tensor, batch: dict[str, Any], label: torch.Tensor, smoothing: float,
             device: torch.device) -> torch.Tensor:
    """CE to the labels; on mix views to both labels, weighted by the share of points each sample gave."""
    if "mix" not in batch:
        return label_smoothing_ce(logits, label, smoothing=smoothing)
    mix = batch["mix"].to(device)
    partner = batch["partner_label"].to(device)
    return (label_smoothing_ce(logits, label, smoothing=smoothing, weight=1.0 - mix)
            + label_smoothing_ce(logits, partner, smoothing=smoothing, weight=mix))


def default_out(cfg: DistillConfig) -> Path:
    source = Path(str(cfg.records or cfg.online_teacher).rstrip("/")).name.split(".")[0]
    return Path("runs") / f"{cfg.student}-{source}{'-online' if cfg.online_teacher else ''}"


def distill(cfg: DistillConfig, log=print) -> tuple[LoopState, Path]:
    """Train a student. Under torchrun: DDP over the student, each rank its share of every epoch's records,
    ``batch_size`` is the global batch, and rank 0 alone writes the run folder."""
    device = resolve_device(cfg.device)
    with distributed(device) as world:
        return _distill(cfg, rank_device(device, world), world, main_log(world, log))


def _distill(cfg: DistillConfig, device: torch.device, world: World, log) -> tuple[LoopState, Path]:
    seed_everything(cfg.seed)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    on_main(world, lambda: _check_out(out, cfg.resume))

    def setup():
        reader = teacher = augment = fewer = None
        if cfg.online_teacher is None:
            from ..store import RecordReader  # imported here: the online path never opens a store

            reader = RecordReader(cfg.records)
            header = reader.header
            data_info, run_seed, num_views = header.dataset, header.run_seed, cfg.views or header.num_views
            fewer = student_points(header, cfg.num_points, redact_text(str(cfg.records)))
            if fewer is not None:
                data_info = {**data_info, "num_points": fewer}
            source = {"records": redact_text(str(cfg.records)), "teacher": header.teacher, "store_created": header.created,
                      "codec": header.codec, "views": header.num_views}
        else:
            online = load_teacher(cfg.online_teacher, weights=cfg.online_teacher_weights,
                                  options=cfg.online_teacher_cfg, adapter=cfg.online_adapter, device=device)
            data_info = _online_data(online, cfg.online_dataset)
            run_seed, num_views = cfg.online_seed, cfg.online_views
            augment = dict(cfg.online_augment)  # the views' config, once the data says objects or scenes
            source = {"online_teacher": online.loaded.source, "teacher_arch": online.loaded.arch,
                      "teacher_format": online.format}

        splits = load_splits(data_info["name"], cfg.data_root, data_info.get("num_points"),
                             data_info.get("config", {}), train_split=data_info.get("split", "train"))
        train_set = splits.train
        if reader is not None:
            check_provenance(reader.header, train_set, fewer_points=fewer is not None)
            reader.load_all()  # every rank holds the whole store: the ranks' shares change every epoch
        else:
            teacher = online.bind(train_set, device).training_module()
            for p in teacher.parameters():
                p.requires_grad_(False)
        if model_task(cfg.student) != train_set.task:
            raise KdpcError(f"student {cfg.student} is a {model_task(cfg.student)} model but the data is {train_set.task}")
        if train_set.task != "cls" and cfg.kd_objective != "auto":
            raise KdpcError(f"--kd-objective {cfg.kd_objective} is for classification; parts and scenes match the "
                            "teacher with the SRKD terms (--set srkd.KEY=VALUE)")
        if train_set.task != "cls" and cfg.kd_schedule not in ("auto", "constant"):
            raise KdpcError(f"--kd-schedule {cfg.kd_schedule} is for classification; parts and scenes keep their "
                            "KD weights constant")
        if train_set.task != "cls" and cfg.feature_weight:
            raise KdpcError("--feature-weight is for classification; parts and scenes match the teacher's anchor "
                            "features with the SRKD terms (--set srkd.KEY=VALUE)")
        if train_set.task != "cls" and cfg.relation_weight != 0:
            raise KdpcError("--relation-weight is for classification; parts and scenes have their own relation terms "
                            "(--set srkd.KEY=VALUE)")
        if train_set.task == "semseg" and cfg.nwsd_weight != 0:
            raise KdpcError("negative-weight self-distillation is for objects; scene students train with the SRKD "
                            "terms (--set srkd.KEY=VALUE): leave --nwsd-weight at 0")
        return reader, teacher, augment, run_seed, num_views, source, splits

    reader, teacher, augment, run_seed, num_views, source, splits = everywhere(world, setup)
    train_set = splits.train
    select = resolve_select(cfg.select, splits.val is not None)
    if reader is not None:
        log(f"records: {reader.num_records} ({reader.num_samples} samples x {reader.num_views} views, "
            f"codec {reader.header.codec}) from {redact_text(str(cfg.records))}")
        if train_set.num_points < reader.header.num_points:
            log(f"the student reads the first {train_set.num_points} of the {reader.header.num_points} points of "
                "each recorded view (and of each val/test sample)")

    task = train_set.task
    student, student_cfg, num_outputs = build_model(cfg.student, train_set, cfg.student_cfg, device, world, cfg.sync_bn)
    log(f"student {cfg.student}: {count_parameters(student):,} parameters, device {device}"
        + (f", {world.size} processes (global batch {cfg.batch_size}, {cfg.batch_size // max(world.size, 1)} "
           "per process)" if world.enabled else ""))

    views, collate = _views(cfg, train_set, reader, augment, run_seed, num_views)
    teacher_dim = _teacher_embedding_width(reader, teacher) if task == "cls" else 0
    student_dim = getattr(student, "num_features", None)
    student_dim = student_dim if isinstance(student_dim, int) and student_dim > 0 else 0
    feature_weight = resolve_feature_weight(cfg.feature_weight, teacher_dim, reader is None, student_dim)
    if feature_weight:
        log(f"embedding matching: weight {feature_weight:g}, the teacher's {teacher_dim}-dim embedding of each view")
    elif cfg.feature_weight is None and teacher_dim and reader is not None:
        log(f"embedding matching off: {cfg.student}'s embedding ({student_dim or 'width unknown'}) is narrower than "
            f"the teacher's {teacher_dim} recorded dims (it costs such a student, docs/method.md); "
            f"--feature-weight {FEATURE_WEIGHT:g} turns it on")
    srkd = None
    if task in ("partseg", "semseg"):
        srkd_cfg = srkd_options(task, cfg.srkd, online=reader is None)
        srkd = SrkdLoss.for_student(student, reader.header if reader is not None else None, srkd_cfg).to(device)
        if task == "partseg":
            from ..training.evaluate import category_part_mask

            srkd.set_category_parts(category_part_mask(train_set.category_parts, train_set.num_classes, num_outputs)
                                    .to(device))
        if srkd.projector is not None and world.enabled:
            srkd.projector = wrap_ddp(srkd.projector, device, world)  # its gradients are averaged like the student's
    trainable = student if srkd is None else torch.nn.ModuleDict({"student": student, "srkd": srkd})
    projector = None
    if feature_weight:
        if not student_dim:
            raise KdpcError(f"embedding matching needs the student's embedding width (`num_features`); {cfg.student} "
                            "does not say it: pass --feature-weight 0")
        projector = EmbeddingProjector(student_dim, teacher_dim).to(device)
        trainable = torch.nn.ModuleDict({"student": student, "projector": projector})
    loader, optimizer, scheduler = build_optimisation(cfg, views, trainable, world, device, collate_fn=collate)
    projector_step = wrap_ddp(projector, device, world) if projector is not None and world.enabled else projector

    resume_state = everywhere(world, lambda: _resume_state(out / "last.pt", student, device, world)) if cfg.resume else None
    model = wrap_ddp(student, device, world)  # broadcasts rank 0's weights; `student` stays the plain module
    decorrelate_rng(world, cfg.seed)  # dropout differs per rank; rank 0 draws what a single process would

    kd_objective = KD_OBJECTIVES[CLASSIFICATION_KD_OBJECTIVE if cfg.kd_objective == "auto" else cfg.kd_objective]
    if kd_objective is dist_loss:  # its intra-class term relates the records of the global batch (a no-op gather alone)
        kd_objective = partial(dist_loss, gather=partial(all_gather_cat_with_grad, world=world))
    kd_schedule = CLASSIFICATION_KD_SCHEDULE if cfg.kd_schedule == "auto" else cfg.kd_schedule
    steps_per_epoch = max(1, len(loader))
    gather_grad = partial(all_gather_cat_with_grad, world=world)
    relation_objective = partial(answer_relation_loss, gather=gather_grad)
    use_nwsd = cfg.nwsd_weight != 0
    self_target = None
    if use_nwsd:
        self_target = make_self_target(cfg.nwsd_source, model=student, decay=cfg.ema_decay,
                                       num_records=len(train_set) * num_views,
                                       num_classes=(train_set.num_points, num_outputs) if task == "partseg" else num_outputs,
                                       sharpen_temperature=cfg.sharpen_temperature)
        if cfg.nwsd_source == "ema":
            self_target.ema.to(device)
    # the past-prediction bank must hold every record's last prediction on every rank: gather each step
    gather_past = world.enabled and cfg.nwsd_source == "past"
    nwsd_t = cfg.nwsd_temperature or cfg.temperature
    last: dict[str, Any] = {}

    def scene_step(batch: dict[str, Any]):
        on_device = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        inputs = on_device["coord"], on_device["feat"], on_device["offset"]
        if teacher is not None:
            with torch.inference_mode():
                teacher_logprobs = F.log_softmax(teacher(*inputs).float(), dim=-1)
            on_device["teacher_logprobs"] = teacher_logprobs.clone()
        else:
            on_device["teacher_logprobs"] = on_device["teacher_logprobs"].float()
        logits, terms, total = srkd.scene_forward(model, *inputs, on_device)
        prediction, target = logits.detach().argmax(-1), on_device["segment"]
        labelled = target >= 0
        terms["train/acc"] = ((prediction == target) & labelled).sum() / labelled.sum().clamp(min=1)
        terms["train/agree"] = (prediction == on_device["teacher_logprobs"].argmax(-1)).float().mean()
        terms["total"] = total.detach()
        return total, {k: v.item() for k, v in terms.items()}

    def step(batch: dict[str, Any]):
        if task == "semseg":
            return scene_step(batch)
        points = batch["points"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        teacher_features = None  # the teacher's embedding of the views, for the embedding term
        if teacher is not None:
            with torch.inference_mode():
                if projector is not None:  # one forward gives the online teacher's embedding and its answers
                    teacher_features, teacher_logits = model_features_and_logits(teacher, model_inputs(teacher, points))
                    teacher_features = teacher_features.float().clone()
                else:
                    teacher_logits = model_forward(teacher, points, label)
                teacher_logprobs = F.log_softmax(teacher_logits.float(), dim=-1)
            teacher_logprobs = teacher_logprobs.clone()
        else:
            teacher_logprobs = batch["teacher_logprobs"].to(device, non_blocking=True).float()
            if projector is not None:
                teacher_features = batch["teacher_features"].to(device, non_blocking=True).float()
        if srkd is not None:  # segmentation: CE + per-point KD + affinity and cross-sample relations (SRKD)
            on_device = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
            logits, terms, total = srkd(model, points, label, {**on_device, "teacher_logprobs": teacher_logprobs})
            logits = logits.float()
        else:
            if cfg.relation_weight or projector is not None:  # these terms need the student's embedding too
                features, logits = model_features_and_logits(model, model_inputs(model, points))
            else:
                features, logits = None, model_forward(model, points, label).float()
            terms = {"ce": mixed_ce(logits, batch, label, cfg.label_smoothing, device),
                     "kd": kd_objective(logits, teacher_logprobs, cfg.temperature)}
            # the per-step LR scheduler counts the steps taken (restored on resume): the KD weight follows it
            kd_weight = kd_weight_at(kd_schedule, cfg.kd_weight, scheduler.last_epoch / steps_per_epoch, cfg.epochs)
            total = cfg.ce_weight * terms["ce"] + kd_weight * terms["kd"]
            terms["train/kd_weight"] = torch.tensor(kd_weight)
            if cfg.relation_weight:
                terms["relation"] = relation_objective(features, teacher_logprobs)
                total = total + cfg.relation_weight * terms["relation"]
            if projector is not None:
                terms["embedding"] = embedding_contrast_loss(projector_step(features), teacher_features,
                                                             cfg.feature_temperature, gather=gather_grad)
                total = total + feature_weight * terms["embedding"]
        target = batch["parts"].to(device) if task == "partseg" else label
        prediction = logits.detach().argmax(-1)
        terms["train/acc"] = (prediction == target).float().mean()
        terms["train/agree"] = (prediction == teacher_logprobs.argmax(-1)).float().mean()  # teacher-student agreement
        if self_target is not None:
            record_ids = batch["record"].to(device)
            q_self, mask = self_target.targets(logits, inputs=points if task == "cls" else (points, label),
                                               record_ids=record_ids)
            nwsd, at_cap = nwsd_loss(logits, q_self, nwsd_t, cfg.nwsd_max_kl, mask=mask)
            terms["nwsd"] = nwsd
            terms["nwsd_at_cap"] = at_cap
            total = total + cfg.nwsd_weight * nwsd
            last.update(logits=logits.detach(), record_ids=record_ids)
        terms["total"] = total.detach()
        return total, {k: v.item() for k, v in terms.items()}

    def after_step() -> None:
        if self_target is not None:
            logits, record_ids = last.get("logits"), last.get("record_ids")
            if gather_past:
                logits, record_ids = all_gather_cat(logits, world), all_gather_cat(record_ids, world)
            # the EMA follows the unwrapped student: after the step its weights are the same on every rank
            self_target.update(model=student, student_logits=logits, record_ids=record_ids)

    dataset_info = train_set.describe()

    def save(path: Path, metrics: dict[str, Any], training_state: dict[str, Any] | None) -> None:
        save_checkpoint(path, Checkpoint(
            arch=cfg.student, model_config=student_cfg, num_classes=num_outputs,
            class_names=train_set.output_names, task=task,
            dataset=dataset_info, state_dict=student.state_dict(), metrics=metrics,
            provenance={"trained_by": "kdpc distill", "source": _jsonable(source),
                        "config": shareable(config_to_dict(cfg))},
            training_state=training_state))

    def extra_state() -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self_target is not None:
            state["self_target"] = self_target.state_dict()
        if srkd is not None:
            state["srkd"] = srkd.state_dict()
        if projector is not None:
            state["projector"] = projector.state_dict()
        return state

    def load_extra_state(state: dict[str, Any]) -> None:
        if self_target is not None:
            self_target.load_state_dict(state["self_target"])
        if srkd is not None:
            srkd.load_state_dict(state["srkd"])
        if projector is not None:
            if "projector" not in state:
                raise KdpcError("--resume: the run was started without embedding matching (--feature-weight 0); "
                                "resume it with --feature-weight 0")
            projector.load_state_dict(state["projector"])

    validate, test = scorers(student, splits, device, cfg.batch_size)
    hooks = LoopHooks(
        loader_for_epoch=epoch_loader(views, loader), step=step, after_step=after_step, validate=validate, test=test,
        save_checkpoint=save,
        extra_state=extra_state, load_extra_state=load_extra_state,
    )
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(shareable(config_to_dict(cfg), cut_paths=False), out / "config.yaml")  # local paths kept here
    state = fit(model, optimizer, scheduler, hooks, epochs=cfg.epochs, device=device, primary=primary_metric(task),
                select=select, best_path=out / "student.pt", last_path=out / "last.pt", metrics_path=out / "metrics.jsonl",
                eval_every=cfg.eval_every, amp=cfg.amp, resume_state=resume_state, desc=f"distill {cfg.student}",
                log=log, world=world)
    if world.is_main:
        from .plots import plot_curves

        plot_curves(out / "metrics.jsonl", out / "curves.png",
                    title=f"{cfg.student} <- {source.get('records') or source.get('online_teacher')}")
    barrier(world)
    return state, out


def _views(cfg: DistillConfig, train_set: Any, reader: Any, augment: Any, run_seed: int, num_views: int
           ) -> tuple[Any, Any]:
    """The epoch's views of the training split and the loader's ``collate_fn`` (None: torch's default)."""
    if train_set.task != "semseg":
        return RecordedViews(train_set, PointAugmentConfig.from_dict(cfg.point_augment), cfg.seed, reader=reader,
                             augment=None if augment is None else AugmentConfig.from_dict(augment),
                             run_seed=run_seed, num_views=num_views), None
    from ..scenes.transforms import SceneAugmentConfig, ScenePointAugmentConfig
    from .scene_views import SceneCollate, SceneRecordedViews

    views = SceneRecordedViews(train_set, ScenePointAugmentConfig.from_dict(cfg.point_augment), cfg.seed,
                               reader=reader, augment=None if augment is None else SceneAugmentConfig.from_dict(augment),
                               run_seed=run_seed, num_views=num_views)
    return views, SceneCollate(reader.header.num_anchors if reader is not None else 0)


def _teacher_embedding_width(reader: Any, teacher: Any) -> int:
    """Width of the teacher's embedding the feature term can match: the store's recorded ``features``, or an online
    kdpc teacher's ``forward_features``; 0 when there is none."""
    if reader is not None:
        return int(reader.header.feature_dim)
    inner = unwrap_model(teacher)
    return int(getattr(inner, "num_features", 0) or 0) if callable(getattr(inner, "forward_features", None)) else 0


def resolve_feature_weight(given: float | None, teacher_dim: int, online: bool, student_dim: int) -> float:
    """``--feature-weight`` resolved: auto (None) is ``FEATURE_WEIGHT`` for a store that keeps the teacher's
    embeddings and a student whose embedding is at least as wide as them, and 0 otherwise (a narrower student,
    like the 128-dim PointNet, pays for telling views apart with accuracy: docs/method.md); asking for the term
    without recorded embeddings is an error."""
    if given is None:
        return FEATURE_WEIGHT if teacher_dim and not online and student_dim >= teacher_dim else 0.0
    if given and not teacher_dim:
        raise KdpcError(f"--feature-weight {given:g}: " + (
            "the online teacher has no embedding to match (a kdpc checkpoint has one)" if online else
            "the store keeps no teacher embeddings; record it with `kdpc record --feature-dim D` (classification, "
            "kdpc checkpoint teachers) or pass --feature-weight 0"))
    return float(given)


def _online_data(teacher: Teacher, given: dict[str, Any]) -> dict[str, Any]:
    """The data of the online baseline: a kdpc checkpoint's own unless ``online_dataset`` says otherwise; other
    teachers need ``online_dataset.name``."""
    unknown = sorted(set(given) - {"name", "config", "num_points"})
    if unknown:
        raise KdpcError(f"unknown online_dataset key(s) {', '.join(unknown)}; known: name, config, num_points")
    info = teacher.dataset_info() or {}
    if given.get("name") and given["name"] != info.get("name"):
        info = {"name": given["name"]}
    if not info.get("name"):
        raise KdpcError(f"a {teacher.kind} teacher does not say which data it was trained on; pass --online-dataset "
                        "NAME (and --set online_dataset.config.KEY=VALUE for its options)")
    return {**info, "config": {**info.get("config", {}), **given.get("config", {})},
            "num_points": given.get("num_points") or info.get("num_points")}


def _check_out(out: Path, resume: bool) -> None:
    """Refuse a run folder that cannot be used, before any work (and without creating it: a refused run leaves
    nothing behind)."""
    if out.exists() and not out.is_dir():
        raise KdpcError(f"--out {out} is a file; give a folder for the run")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise KdpcError(f"cannot create the run folder {out}: {existing} is not a writable folder")
    if resume:
        if not (out / "last.pt").is_file():
            raise KdpcError(f"--resume: {out}/last.pt does not exist; start without --resume")
    elif (out / "metrics.jsonl").exists():
        raise KdpcError(f"run folder {out} already holds a run; pass --resume to continue it or choose another --out")


def _resume_state(path: Path, student: torch.nn.Module, device: torch.device, world: World = World()) -> dict[str, Any]:
    ckpt = load_checkpoint(path)  # every rank loads last.pt
    if ckpt.training_state is None:
        raise KdpcError(f"{path} holds no training state to resume from")
    student.load_state_dict(ckpt.state_dict)
    student.to(device)
    # metrics.jsonl gets the resumed epochs appended; drop lines past the snapshot so nothing is duplicated.
    metrics = path.parent / "metrics.jsonl"
    if world.is_main and metrics.exists():
        done = int(ckpt.training_state["epoch"])
        lines = [line for line in metrics.read_text().splitlines() if line.strip()][:done]
        metrics.write_text("".join(line + "\n" for line in lines))
    return ckpt.training_state


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
