"""What a training loop iterates for scenes: a fresh seeded scene view of every scene per epoch (``kdpc train``) and
the deterministic whole-scene evaluation view."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..augment import params_at
from ..scenes.transforms import (SceneAugmentConfig, ScenePointAugmentConfig, SceneView, apply_scene_point_noise,
                                 draw_scene_params, eval_scene_view, replay_scene_view)
from .data import EpochViews, point_rng


def view_item(view: SceneView, channels: tuple[str, ...], index: int) -> dict[str, Any]:
    return {"coord": view.coord, "feat": view.features(channels), "segment": view.segment, "index": index}


class SceneEpochViews(EpochViews):
    """Scene ``i`` in epoch ``e`` is ``draw_scene_params(seed, i, view=e, stream="train")`` replayed (rotation,
    scale, flips, shift, grid sampling, crop to the dataset's ``num_points``), plus point-level noise keyed by
    ``(seed, e, i)``: reproducible, and a resumed run sees the views an uninterrupted one would. Constructed like
    ``EpochViews`` with ``SceneAugmentConfig`` / ``ScenePointAugmentConfig``."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        params = params_at(draw_scene_params(self.augment, self.seed, np.array([index]), np.array([self.epoch]),
                                             stream="train"), 0)
        view = replay_scene_view(self.dataset, index, params, self.augment)
        view = apply_scene_point_noise(view, self.point_augment, point_rng(self.seed, self.epoch, index))
        return view_item(view, self.dataset.channels, index)


class SceneEvalViews(Dataset):
    """The evaluation view of every scene (whole, grid-sampled, unaugmented) with ``inverse``, which carries a
    prediction on the view back to every point of the scene."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        view = eval_scene_view(self.dataset, index)
        item = view_item(view, self.dataset.channels, index)
        item["inverse"] = view.inverse
        item["target"] = np.asarray(self.dataset[index].segment, dtype=np.int64)
        return item
