"""Offline SRKD: the loss terms against direct calls of the loss functions, masks for dropped anchors, the anchor
positions after shuffle and dropout, the config."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdpc.augment import PointAugmentConfig, apply_point_level_with_index
from kdpc.distill.losses import (
    affinity_alignment_loss,
    cross_sample_relation_loss,
    label_smoothing_ce,
    pointwise_kd_loss,
)
from kdpc.distill.seg import (
    SrkdConfig,
    SrkdLoss,
    anchor_positions,
    seg_item_fields,
)
from kdpc.errors import KdpcError
from kdpc.models import create_model, model_features_and_logits

B, N, P, M, D, CATS = 3, 40, 7, 6, 5, 2


def tiny_student():
    torch.manual_seed(0)
    return create_model("dgcnn-seg-tiny", num_classes=P, num_categories=CATS, edge_widths=((16,), (16,)), emb_dims=32,
                        category_dim=8, head=(32,)).eval()  # eval: dropout off, so two forwards agree


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    parts = torch.randint(0, P, (B, N), generator=g)
    parts[0, :5] = -100  # ignored points
    return {
        "parts": parts,
        "teacher_logprobs": torch.log_softmax(3 * torch.randn(B, N, P, generator=g), -1),
        "teacher_features": torch.randn(B, M, D, generator=g),
        "anchor_positions": torch.stack([torch.randperm(N, generator=g)[:M] for _ in range(B)]),
    }


def points():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, N, 3, generator=g), torch.tensor([0, 1, 1])


# ----------------------------------------------------------------------------------------------- terms
@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_terms_equal_direct_calls(mode):
    student = tiny_student()
    cfg = SrkdConfig(label_smoothing=0.1, affinity_mode=mode, affinity_temperature=0.5, affinity_weight=0.7,
                     cross_weight=0.02, pointwise_weight=0.3, ce_weight=0.9)
    loss = SrkdLoss(cfg, student.num_features, D)
    batch = make_batch()
    x, cat = points()
    logits, terms, total = loss(student, x, cat, batch)
    # direct: the same forward, the same projector (train-mode BatchNorm: batch statistics, deterministic)
    feats = student.forward_features(x, cat)
    direct_logits = student.forward_head(feats)
    torch.testing.assert_close(logits, direct_logits)
    pos = batch["anchor_positions"]
    proj = loss.projector(torch.gather(feats, 1, pos[..., None].expand(-1, -1, feats.shape[-1])))
    ce = label_smoothing_ce(direct_logits, batch["parts"], smoothing=0.1)
    kd = pointwise_kd_loss(direct_logits, batch["teacher_logprobs"], 2.0)
    aff = affinity_alignment_loss(proj, batch["teacher_features"], mode=mode, temperature=0.5)
    cross = cross_sample_relation_loss(proj, batch["teacher_features"], temperature=2.0)
    for name, value in (("ce", ce), ("kd", kd), ("aff", aff), ("cross", cross)):
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, 0.9 * ce + 0.3 * kd + 0.7 * aff + 0.02 * cross, rtol=1e-5, atol=1e-6)
    assert float(terms["anchors_valid"]) == 1.0
    # ignored targets (-100) drop out of the CE only
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(direct_logits.reshape(-1, P), batch["parts"].reshape(-1),
                                                               label_smoothing=0.1).item(), rel=1e-5)


def test_backward_reaches_student_and_projector_and_parameters_are_exposed():
    student = tiny_student().train()
    loss = SrkdLoss(SrkdConfig(), student.num_features, D)
    params = list(loss.parameters())
    assert params and {id(p) for p in params} == {id(p) for p in loss.projector.parameters()}
    x, cat = points()
    _, _, total = loss(student, x, cat, make_batch())
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_zero_weights_skip_terms_and_the_projector():
    student = tiny_student()
    loss = SrkdLoss(SrkdConfig(affinity_weight=0.0, cross_weight=0.0), student.num_features, 0)
    assert loss.projector is None and list(loss.parameters()) == []
    batch = {k: v for k, v in make_batch().items() if k in ("parts", "teacher_logprobs")}
    x, cat = points()
    _, terms, total = loss(student, x, cat, batch)
    assert set(terms) == {"ce", "kd"}
    torch.testing.assert_close(total, terms["ce"] + 0.3 * terms["kd"])
    with pytest.raises(KdpcError, match="keeps none"):
        SrkdLoss(SrkdConfig(), student.num_features, 0)
    only_aff = SrkdLoss(SrkdConfig(cross_weight=0.0), student.num_features, D)
    assert set(only_aff(student, x, cat, make_batch())[1]) == {"ce", "kd", "aff", "anchors_valid"}


def test_point_mask_restricts_the_kd_term():
    student = tiny_student()
    loss = SrkdLoss(SrkdConfig(affinity_weight=0.0, cross_weight=0.0), student.num_features, 0)
    batch = make_batch()
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[1, :10] = True
    x, cat = points()
    logits, terms, _ = loss(student, x, cat, {**batch, "point_mask": mask})
    expected = pointwise_kd_loss(logits[1:2, :10], batch["teacher_logprobs"][1:2, :10], 2.0)
    torch.testing.assert_close(terms["kd"], expected, rtol=1e-5, atol=1e-6)


def test_category_kl_compares_the_category_parts_only():
    """With category parts set, the per-point KL is the KL of both distributions renormalised over the object's own
    parts (what the ShapeNetPart protocol scores); mass on other categories' parts does not count."""
    student = tiny_student()
    allowed = torch.zeros(CATS, P, dtype=torch.bool)
    allowed[0, :3], allowed[1, 3:] = True, True
    batch = make_batch()
    x, cat = points()
    plain = SrkdLoss(SrkdConfig(affinity_weight=0.0, cross_weight=0.0), student.num_features, 0)
    logits, all_parts, _ = plain(student, x, cat, batch)
    restricted = SrkdLoss(SrkdConfig(affinity_weight=0.0, cross_weight=0.0), student.num_features, 0)
    restricted.set_category_parts(allowed)
    _, terms, _ = restricted(student, x, cat, batch)
    expected = []
    for b in range(B):
        keep = allowed[cat[b]]
        expected.append(pointwise_kd_loss(logits[b:b + 1][..., keep],
                                          torch.log_softmax(batch["teacher_logprobs"][b:b + 1][..., keep], -1), 2.0))
    torch.testing.assert_close(terms["kd"], torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)
    assert abs(terms["kd"].item() - all_parts["kd"].item()) > 1e-3
    off = SrkdLoss(SrkdConfig(affinity_weight=0.0, cross_weight=0.0, category_kl=False), student.num_features, 0)
    off.set_category_parts(allowed)
    torch.testing.assert_close(off(student, x, cat, batch)[1]["kd"], all_parts["kd"])
    with pytest.raises(KdpcError, match="category_kl"):
        SrkdConfig(category_kl="yes")


def test_data_parallel_wrapper_goes_through_the_wrapper():
    student = tiny_student()
    x, cat = points()
    feats, logits = model_features_and_logits(torch.nn.DataParallel(student), x, cat)
    torch.testing.assert_close(feats, student.forward_features(x, cat))
    torch.testing.assert_close(logits, student(x, cat))


# ------------------------------------------------------------------------------------------- masked losses
@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_masked_affinity_equals_the_loss_on_the_kept_anchors(mode):
    g = torch.Generator().manual_seed(3)
    fs, ft = torch.randn(1, 8, 4, generator=g), torch.randn(1, 8, 6, generator=g)
    valid = torch.tensor([[True, False, True, True, False, True, True, True]])
    got = affinity_alignment_loss(fs, ft, mode=mode, temperature=0.7, valid=valid)
    keep = valid[0]
    want = affinity_alignment_loss(fs[:, keep], ft[:, keep], mode=mode, temperature=0.7)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(affinity_alignment_loss(fs, ft, mode=mode, temperature=0.7,
                                                       valid=torch.ones_like(valid)),
                               affinity_alignment_loss(fs, ft, mode=mode, temperature=0.7))
    if mode == "mse":  # by hand: mean over the 6 x 6 kept pairs of the squared cosine differences
        a = F.normalize(fs[0, keep], dim=-1)
        b = F.normalize(ft[0, keep], dim=-1)
        assert got.item() == pytest.approx(((a @ a.T - b @ b.T) ** 2).sum().item() / 36, rel=1e-5)


def test_masked_cross_sample_equals_a_loop_over_pairs():
    g = torch.Generator().manual_seed(4)
    fs = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    ft = torch.randn(3, 5, 6, generator=g)
    valid = torch.tensor([[True, True, False, True, True], [False] * 5, [True, False, True, True, True]])
    t = 1.5
    got = cross_sample_relation_loss(fs, ft, temperature=t, valid=valid)
    rows = []
    for i in range(3):
        for j in range(3):
            vi, vj = valid[i], valid[j]
            if not vi.any() or not vj.any():
                continue
            a = F.normalize(fs[i, vi], dim=-1) @ F.normalize(fs[j, vj], dim=-1).T
            b = F.normalize(ft[i, vi], dim=-1) @ F.normalize(ft[j, vj], dim=-1).T
            p = F.softmax(b / t, -1)
            rows.append((p * (F.log_softmax(b / t, -1) - F.log_softmax(a / t, -1))).sum(-1))
    want = t * t * torch.cat(rows).mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    got.backward()
    assert torch.isfinite(fs.grad).all() and fs.grad[1].abs().sum() == 0  # sample 1 has no anchors at all
    all_valid = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(cross_sample_relation_loss(fs, ft, t, valid=all_valid),
                               cross_sample_relation_loss(fs, ft, t))


def test_every_anchor_dropped_gives_an_attached_zero():
    fs = torch.randn(2, 4, 3, requires_grad=True)
    none = torch.zeros(2, 4, dtype=torch.bool)
    for value in (affinity_alignment_loss(fs, torch.randn(2, 4, 5), valid=none),
                  affinity_alignment_loss(fs, torch.randn(2, 4, 5), mode="kl", valid=none),
                  cross_sample_relation_loss(fs, torch.randn(2, 4, 5), valid=none)):
        assert value.item() == 0.0
        value.backward()
    assert fs.grad.abs().sum() == 0


def test_srkd_loss_masks_dropped_anchors():
    student = tiny_student()
    loss = SrkdLoss(SrkdConfig(cross_weight=0.5), student.num_features, D)
    batch = make_batch()
    batch["anchor_positions"][0, :2] = -1
    batch["anchor_positions"][2, 4] = -1
    x, cat = points()
    _, terms, _ = loss(student, x, cat, batch)
    valid = batch["anchor_positions"] >= 0
    feats = student.forward_features(x, cat)
    pos = batch["anchor_positions"].clamp_min(0)
    proj = loss.projector(torch.gather(feats, 1, pos[..., None].expand(-1, -1, feats.shape[-1])))
    torch.testing.assert_close(terms["aff"], affinity_alignment_loss(proj, batch["teacher_features"], valid=valid))
    torch.testing.assert_close(terms["cross"],
                               cross_sample_relation_loss(proj, batch["teacher_features"], 2.0, valid=valid))
    assert float(terms["anchors_valid"]) == pytest.approx(15 / 18)


# ------------------------------------------------------------------------------------------ anchor positions
def test_anchor_positions_by_hand():
    # student input k is view point index[k]: view points 4 and 1 were dropped (replaced by copies of point 0)
    index = np.array([3, 0, 0, 5, 2, 0])
    np.testing.assert_array_equal(anchor_positions(np.array([0, 1, 2, 5]), index), [1, -1, 4, 3])
    np.testing.assert_array_equal(anchor_positions(np.array([4]), index), [-1])
    assert anchor_positions(np.zeros(0, dtype=np.int64), index).shape == (0,)


@pytest.mark.parametrize("dropout", [0.0, 0.9])
def test_anchor_positions_follow_shuffle_and_dropout(dropout):
    view = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    anchors = np.array([0, 5, 17, 33, 63])
    cfg = PointAugmentConfig(jitter_sigma=0.0, shuffle=True, dropout_max=dropout)
    seen_drop = False
    for seed in range(8):
        pts, index = apply_point_level_with_index(view, cfg, np.random.default_rng(seed))
        pos = anchor_positions(anchors, index)
        ok = pos >= 0
        np.testing.assert_array_equal(pts[pos[ok]], view[anchors[ok]])
        assert all(index[p] == a and (index[:p] != a).all() for p, a in zip(pos[ok], anchors[ok]))  # first copy
        assert not np.isin(anchors[~ok], index).any()
        seen_drop |= bool((~ok).any())
        if dropout == 0.0:
            assert ok.all()
    assert seen_drop == (dropout > 0)


def test_seg_item_fields():
    batch = {"features": np.ones((2, 3, 4), np.float16), "anchors": np.array([[0, 1, 2], [1, 2, 3]])}
    out = seg_item_fields(batch, 1, np.array([3, 2, 1, 0]))
    assert out["teacher_features"].dtype == np.float32 and out["teacher_features"].shape == (3, 4)
    np.testing.assert_array_equal(out["anchor_positions"], [2, 1, 0])
    assert seg_item_fields({"logprobs": np.zeros((1, 4, 2))}, 0, np.arange(4)) == {}


# -------------------------------------------------------------------------------------------------- config
def test_config_defaults_and_errors():
    cfg = SrkdConfig()
    assert (cfg.pointwise_weight, cfg.pointwise_temperature, cfg.cross_weight, cfg.cross_temperature) == (0.3, 2.0, 1e-3, 2.0)
    assert cfg.affinity_weight == 1.0 and cfg.affinity_mode == "mse" and cfg.ce_weight == 1.0
    assert SrkdConfig.from_dict({"affinity_weight": 2}).affinity_weight == 2
    assert SrkdConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KdpcError, match="unknown srkd option"):
        SrkdConfig.from_dict({"affinity": 1})
    with pytest.raises(KdpcError, match="affinity_mode"):
        SrkdConfig(affinity_mode="l1")
    with pytest.raises(KdpcError, match="cross_temperature"):
        SrkdConfig(cross_temperature=0)
    with pytest.raises(KdpcError, match="pointwise_weight"):
        SrkdConfig(pointwise_weight=-1)
