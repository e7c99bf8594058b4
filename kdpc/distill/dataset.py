"""The distill data path: records joined with the training split, replayed exactly, then point-level augmented."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..augment import AugmentConfig, PointAugmentConfig, apply_point_level_with_index, draw_params
from ..augment import mixed_points, params_at, replay_view
from ..training.data import point_rng
from ..errors import KdpcError, distinguishing_prefixes
from ..hashing import splitmix64
from ..store.schema import record_index
from .seg import seg_item_fields


def recorded_dataset(header: Any, store: str, data_root: str | None = None) -> Any:
    """The split a store was recorded from, created again from its header (``data_root`` for file datasets) and
    checked to be exactly that data."""
    from ..data import DATASETS, create_dataset
    from ..plugins import missing_hint

    info = header.dataset
    if info["name"] not in DATASETS:
        raise KdpcError(f"store {store}: {missing_hint('dataset', info['name'], info.get('plugin'))}")
    dataset = create_dataset(info["name"], root=data_root, split=info.get("split", "train"),
                             num_points=info.get("num_points") if header.task == "semseg" else header.num_points,
                             **info.get("config", {}))
    check_provenance(header, dataset)
    return dataset


def student_points(header: Any, asked: int | None, store: str) -> int | None:
    """How many points of each recorded view the student reads: ``None`` (all the store's) or, with ``kdpc distill
    --num-points N``, the first ``N``. A view's point subset is prefix-consistent (``kdpc.augment.subset_indices``)
    and the rest of a view is per point, so the student's view is exactly part of the teacher's: a teacher recorded
    at a higher resolution than a deployed student reads. Classification stores of plain views only (a part or scene
    store keeps per-point outputs and anchors of all its points; a mix view's share of partner points is counted
    from the view's own size)."""
    if asked is None or asked == header.num_points:
        return None
    where = f"--num-points {asked}: store {store}"
    if header.task != "cls":
        raise KdpcError(f"{where} is a {header.task} store; reading fewer points than recorded is for "
                        "classification stores (parts and scenes keep per-point outputs of every recorded point)")
    if any(spec.name == "partner" for spec in header.params):
        raise KdpcError(f"{where} holds mix views, whose partner share depends on the view's size: distil it at "
                        f"its recorded {header.num_points} points")
    if not 1 <= asked <= header.num_points:
        raise KdpcError(f"{where} was recorded at {header.num_points} points per view: a student reads at most "
                        "that many")
    return asked


def check_provenance(header: Any, dataset: Any, *, fewer_points: bool = False) -> None:
    """Refuse to train when the store was not recorded from exactly this data (``fewer_points``: the student may
    read the first points of each view, ``student_points``)."""
    recorded = header.dataset
    differences = []
    if recorded.get("fingerprint") != dataset.fingerprint():
        a, b = distinguishing_prefixes(str(recorded.get("fingerprint")), dataset.fingerprint())
        differences.append(f"dataset fingerprint {a} (store) vs {b} (data)")
    if int(recorded.get("num_samples", -1)) != len(dataset):
        differences.append(f"num_samples {recorded.get('num_samples')} vs {len(dataset)}")
    # scene stores: header.num_points is the largest view; the data's own num_points (the crop size) is in dataset
    recorded_points = int(recorded.get("num_points", -1) if header.task == "semseg" else header.num_points)
    if recorded_points != dataset.num_points and not (fewer_points and dataset.num_points < recorded_points):
        differences.append(f"num_points {recorded_points} vs {dataset.num_points}")
    names = dataset.output_names
    if list(header.class_names) != names:
        differences.append("class names differ")
    if header.task != dataset.task:
        differences.append(f"task {header.task} vs {dataset.task}")
    if differences:
        raise KdpcError(f"the records were not made from this data ({recorded.get('name')}/{recorded.get('split')}): "
                        + "; ".join(differences))


def view_schedule(seed: int, num_samples: int, num_views: int, epoch: int) -> np.ndarray:
    """The view each sample uses in ``epoch``: every sample cycles through all its views before any repeats.

    Within cycle ``epoch // num_views`` each sample visits its views in its own hashed order.
    """
    cycle, position = divmod(epoch, num_views)
    samples = np.arange(num_samples, dtype=np.uint64)
    base = splitmix64(splitmix64(np.uint64(seed & 0xFFFFFFFF) ^ (np.uint64(cycle) << np.uint64(32))) ^ samples)
    keys = splitmix64(base[:, None] ^ (np.arange(num_views, dtype=np.uint64)[None, :] << np.uint64(48)))
    return np.argsort(keys, axis=1, kind="stable")[:, position].astype(np.int64)


class RecordedViews(Dataset):
    """Item i of an epoch is sample i at its scheduled view, replayed exactly, then point-level augmented.

    With a ``reader`` the view parameters and the teacher's log-probs come from the store. Without one (the
    ``--online-teacher`` baseline) the same parameters are drawn from ``(run_seed, sample, view)`` instead, so both
    modes train on identical views.
    """

    def __init__(self, dataset: Any, point_augment: PointAugmentConfig, seed: int, *, reader: Any = None,
                 augment: AugmentConfig | None = None, run_seed: int = 0, num_views: int | None = None) -> None:
        self.dataset = dataset
        self.reader = reader
        self.point_augment = point_augment
        self.seed = seed
        self.augment = augment
        self.run_seed = run_seed
        self.num_views = int(num_views or (reader.num_views if reader is not None else 1))
        if reader is not None and not 1 <= self.num_views <= reader.num_views:
            raise KdpcError(f"--views {self.num_views}: the store holds {reader.num_views} views per sample")
        if reader is not None and reader.num_samples != len(dataset):
            raise KdpcError(f"the store holds {reader.num_samples} samples but the dataset has {len(dataset)}")
        if reader is None and augment is None:
            raise ValueError("RecordedViews needs a reader or an augment config")
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._views = view_schedule(self.seed, len(self.dataset), self.num_views, epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        samples = np.asarray(indices, dtype=np.int64)
        views = self._views[samples]
        records = record_index(samples, views, len(self.dataset))
        if self.reader is not None:
            batch = self.reader.get(records)  # one vectorised read from the in-memory view slabs
            params = {spec.name: batch[spec.name] for spec in self.reader.header.params}
        else:
            batch = None
            params = draw_params(self.augment, self.run_seed, samples, views, stream="record",
                                 num_samples=len(self.dataset))
        items = []
        for k, sample in enumerate(samples):
            points, parts = replay_view(self.dataset, int(sample), params_at(params, k))
            # every channel of the data; a model takes its first in_channels (kdpc.models.model_forward)
            points, index = apply_point_level_with_index(points, self.point_augment,
                                                          point_rng(self.seed, self.epoch, int(records[k])))
            item: dict[str, Any] = {"points": points, "label": int(self.dataset.labels[sample]),
                                    "record": int(records[k])}
            if "partner" in params:  # mix views: the CE target is the two labels in the points' proportions
                n = mixed_points(params_at(params, k), self.dataset.num_points)
                item["mix"] = np.float32(n / self.dataset.num_points)
                item["partner_label"] = int(self.dataset.labels[int(params["partner"][k])])
            if batch is not None:
                teacher = batch["logprobs"][k]
                item["teacher_logprobs"] = teacher[index] if parts is not None else teacher
                if parts is not None:
                    item.update(seg_item_fields(batch, k, index))  # anchor features + where the anchors went
                elif "features" in batch:  # the teacher's embedding of the view (kdpc.distill.embedding)
                    item["teacher_features"] = batch["features"][k]
            if parts is not None:
                item["parts"] = parts[index].astype(np.int64)
                item["point_index"] = index
            items.append(item)
        return items
