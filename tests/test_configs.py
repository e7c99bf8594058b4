"""The shipped YAML configs stay loadable: every key they set is an option of the command they document."""

from pathlib import Path

import pytest

from kdpc.augment import AugmentConfig, PointAugmentConfig
from kdpc.config import build_config, load_yaml
from kdpc.distill.trainer import DistillConfig
from kdpc.recorder import RecordConfig
from kdpc.training.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name, cls", [("train-teacher.yaml", TrainConfig), ("record.yaml", RecordConfig),
                                       ("distill.yaml", DistillConfig), ("modelnet40.yaml", TrainConfig)])
def test_shipped_config_builds(name, cls):
    data = load_yaml(CONFIGS / name)
    cfg = build_config(cls, data)
    for key, value in data.items():
        if key in ("augment", "point_augment"):
            continue
        assert getattr(cfg, key) == value
    if "augment" in data:
        AugmentConfig.from_dict(data["augment"])
    if "point_augment" in data:
        PointAugmentConfig.from_dict(data["point_augment"])


def test_distill_yaml_states_the_real_defaults():
    data = load_yaml(CONFIGS / "distill.yaml")
    defaults = DistillConfig(records="x")
    for key in ("temperature", "kd_weight", "nwsd_weight", "nwsd_source", "nwsd_max_kl", "lr", "batch_size", "student"):
        assert data[key] == getattr(defaults, key), key
    for key, value in data.items():  # every other key it writes out is the default too (records/out: examples)
        if key not in ("records", "out"):
            default = getattr(defaults, key)
            assert (value == default if key != "point_augment" else PointAugmentConfig.from_dict(value).to_dict()
                    == PointAugmentConfig.from_dict(default).to_dict()), key
