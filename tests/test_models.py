"""Classification models: registry, parameter counts, shapes, gradients, invariances, determinism."""

from __future__ import annotations

import pytest
import torch

from kdpc.errors import KdpcError
from kdpc.models import count_parameters, create_model, list_models, model_table, model_task

CLS = ["dgcnn", "dgcnn-tiny", "pointmlp", "pointmlp-elite", "pointmlp-tiny", "pointnet", "pointnet-tiny",
       "pointnet2-ssg", "pointnet2-tiny"]
TINY = ["pointnet-tiny", "pointnet2-tiny", "dgcnn-tiny", "pointmlp-tiny"]

# Full presets: (exact count of this code at 40 classes, published count). PointMLP's paper counts in 2**20 units.
FULL = {
    "pointnet": (3_480_049, 3_500_000),
    "pointnet2-ssg": (1_475_688, 1_470_000),
    "dgcnn": (1_809_576, 1_800_000),
    "pointmlp": (13_238_504, 12_600_000),
    "pointmlp-elite": (716_232, 680_000),
}
TINY_PARAMS = {"pointnet-tiny": 21_992, "pointnet2-tiny": 109_896, "dgcnn-tiny": 77_928, "pointmlp-tiny": 214_088}


def _points(b: int = 2, n: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)  # unit ball, like normalised datasets


def _eval(name: str, num_classes: int = 5, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes, **cfg).eval()


def test_registry_lists_every_preset_by_task() -> None:
    assert list_models("cls") == sorted(CLS)
    assert set(list_models()) == set(CLS) | set(list_models("partseg"))
    assert all(model_task(n) == "cls" for n in CLS)
    with pytest.raises(KdpcError, match="task"):
        list_models("detection")


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_preset_parameter_counts(name: str) -> None:
    exact, published = FULL[name]
    model = create_model(name, 40)
    assert count_parameters(model) == exact
    assert abs(exact - published) / published < 0.10
    assert model.num_classes == 40 and model.task == "cls"


def test_tiny_preset_parameter_counts_and_table() -> None:
    for name, params in TINY_PARAMS.items():
        assert count_parameters(create_model(name, 40)) == params
    rows = {r["name"]: r for r in model_table()}
    assert set(rows) == set(list_models())
    assert rows["pointmlp"]["params"] == FULL["pointmlp"][0] and rows["pointmlp"]["published"] == 12_600_000
    assert rows["pointnet-tiny"]["params"] == TINY_PARAMS["pointnet-tiny"]


def test_count_parameters_counts_trainable_only() -> None:
    model = create_model("pointnet-tiny", 40)
    model.head.requires_grad_(False)
    head = sum(p.numel() for p in model.head.parameters())
    assert count_parameters(model) == TINY_PARAMS["pointnet-tiny"] - head


@pytest.mark.parametrize("name", ["pointnet", "pointnet2-ssg", "dgcnn", "pointmlp-elite", "pointmlp"])
def test_full_presets_run_on_small_clouds(name: str) -> None:
    model = _eval(name, 40)
    with torch.no_grad():
        out = model(_points(1, 128))
    assert out.shape == (1, 40) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("n", [64, 100, 256])
def test_tiny_shapes_and_feature_head_split(name: str, n: int) -> None:
    model = _eval(name, 7)
    x = _points(2, n)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats), logits)
    assert logits.shape == (2, 7) and logits.dtype == torch.float32
    assert feats.shape == (2, model.num_features)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_input_and_every_parameter(name: str) -> None:
    model = create_model(name, 5).train()
    x = _points(2, 128).requires_grad_()
    model(x).logsumexp(-1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    first_name, first = next(iter(model.named_parameters()))
    assert first.grad.abs().sum() > 0, first_name


@pytest.mark.parametrize("name", TINY)
def test_eval_is_deterministic_and_independent_of_batch_mates(name: str) -> None:
    model = _eval(name)
    x = _points(3, 128, seed=1)
    with torch.no_grad():
        a, b = model(x), model(x.clone())
        alone = model(x[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(alone[0], a[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["pointnet-tiny", "pointnet", "dgcnn-tiny"])
def test_permutation_invariance(name: str) -> None:
    model = _eval(name)
    x = _points(2, 128, seed=2)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = model(x), model(x[:, perm])
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a[0], a[1])  # and it is not trivially constant


def test_train_mode_uses_dropout_eval_does_not() -> None:
    model = create_model("pointnet-tiny", 5).train()
    x = _points(4, 64)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.equal(a, model(x))


def test_unknown_model_is_a_user_error_listing_known_names() -> None:
    with pytest.raises(KdpcError, match="unknown model 'pointnet3'.*pointnet2-ssg"):
        create_model("pointnet3", 40)
    with pytest.raises(KdpcError):
        model_task("pointnet3")


def test_unknown_option_is_a_user_error_naming_the_option() -> None:
    with pytest.raises(KdpcError, match=r"model 'dgcnn-tiny'.*'kk'.*valid options:.*\bk\b"):
        create_model("dgcnn-tiny", 40, kk=10)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_num_classes(bad) -> None:
    with pytest.raises(KdpcError, match="num_classes"):
        create_model("pointnet-tiny", bad)


@pytest.mark.parametrize(
    ("name", "cfg"),
    [("dgcnn-tiny", {"k": 0}), ("pointnet-tiny", {"widths": "64"}), ("pointmlp-tiny", {"reducers": [2, 2]}),
     ("pointmlp-tiny", {"normalize": "batch"}), ("pointnet2-tiny", {"npoints": [64, 16, 4]})],
)
def test_bad_option_values_are_user_errors(name: str, cfg: dict) -> None:
    with pytest.raises(KdpcError):
        create_model(name, 5, **cfg)


def test_options_override_preset_defaults_and_are_recorded() -> None:
    base = create_model("pointnet-tiny", 10)
    model = create_model("pointnet-tiny", 10, head=[32], stem=(16,))
    assert count_parameters(model) < count_parameters(base)
    assert model.config["head"] == [32] and model.config["stem"] == [16]
    assert model.config["widths"] == [64, 128]  # untouched default
    assert create_model("dgcnn-tiny", 5, k=4).k == 4
    model = _eval("pointnet2-tiny", npoints=[32, 8], num_points=128)
    with torch.no_grad():
        assert model(_points(1, 64)).shape == (1, 5)


def test_wrong_input_shape_is_a_user_error() -> None:
    model = _eval("pointnet-tiny")
    with pytest.raises(KdpcError, match=r"\[B, N, 3\]"):
        model(torch.zeros(2, 64, 6))


def test_wrongly_typed_option_value_is_a_user_error() -> None:
    with pytest.raises(KdpcError, match="model 'pointnet-tiny': invalid option value"):
        create_model("pointnet-tiny", 5, dropout=1.5)
