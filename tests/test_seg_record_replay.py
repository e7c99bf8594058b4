"""Recording a part-segmentation teacher and replaying its records: stored per-point outputs and anchor features
match a fresh teacher run on the replayed views within the codec's bounds; the student-side data path (anchor
positions after shuffle and dropout) and SrkdLoss run on a real store."""

import numpy as np
import pytest
import torch

from kdpc.augment import AugmentConfig, PointAugmentConfig, apply_point_level_with_index, draw_params, params_at
from kdpc.checkpoint import Checkpoint
from kdpc.data import create_dataset
from kdpc.distill.seg import SrkdConfig, SrkdLoss, seg_item_fields
from kdpc.augment import replay_view
from kdpc.errors import KdpcError
from kdpc.models import create_model
from kdpc.recorder.seg import concat_seg_outputs, make_seg_header_fields, project_features, teacher_seg_outputs
from kdpc.recorder.seg import view_seeds
from kdpc.store import RecordReader, RecordWriter, StoreHeader, verify_store
from kdpc.store import get_point_codec
from kdpc.recorder.replay_check import point_replay_check
from kdpc.recorder.seg import projection_matrix

RUN_SEED, VIEWS = 3, 2
SLACK = 2e-3  # different batch composition moves float32 outputs by ~1e-6; generous


@pytest.fixture(scope="module")
def parts_data():
    return create_dataset("synthetic-parts", split="train", num_points=32, samples_per_class=2, num_raw_points=64)


@pytest.fixture(scope="module")
def teacher(parts_data):
    torch.manual_seed(0)
    model = create_model("dgcnn-seg-tiny", num_classes=parts_data.num_parts, num_categories=parts_data.num_classes)
    with torch.no_grad():  # random weights give near-uniform outputs; sharpen them like a trained teacher's
        model.head[-1].weight.mul_(40.0)
    ckpt = Checkpoint(arch="dgcnn-seg-tiny", model_config={"num_categories": parts_data.num_classes},
                      num_classes=parts_data.num_parts, class_names=list(parts_data.part_names), task="partseg",
                      dataset=parts_data.describe(), state_dict=model.state_dict())
    return ckpt, ckpt.build_model("cpu")


def views_of(ds, params, samples):
    return np.stack([replay_view(ds, int(s), params_at(params, k))[0][:, :3] for k, s in enumerate(samples)])


def record_store(path, ds, ckpt, model, codec, anchors=8, feature_dim=16, batch=5):
    aug = AugmentConfig()
    fields = make_seg_header_fields(ckpt, ds, {"codec": codec, "chunk_records": 8, "anchors": anchors,
                                              "feature_dim": feature_dim}, model)
    header = StoreHeader(num_samples=len(ds), num_views=VIEWS, augment=aug.to_dict(), run_seed=RUN_SEED,
                         dataset=ds.describe(), **fields)
    with RecordWriter.open(path, header, labels=ds.labels) as w:
        for b in w.pending_blocks():
            s0, s1 = w.block_range(b)
            records = np.arange(s0, s1)
            samples, views = records % len(ds), records // len(ds)
            params = draw_params(aug, RUN_SEED, samples, views, stream="record")
            seeds = view_seeds(records, len(ds), aug, RUN_SEED)
            np.testing.assert_array_equal(seeds, params["seed"])
            outputs = []
            for lo in range(0, len(records), batch):  # the recorder's batches, not aligned with anything later
                sl = slice(lo, lo + batch)
                pts = torch.from_numpy(views_of(ds, params_at(params, sl), samples[sl]))
                outputs.append(teacher_seg_outputs(model, pts, torch.from_numpy(ds.labels[samples[sl]]).long(),
                                                   seeds[sl], header))
            w.write_block(b, {"sample": samples, "view": views, **params, **concat_seg_outputs(outputs)})
        w.finalize()
    return header


@pytest.mark.parametrize("codec,suffix", [("ptopk:4", ".zarr"), ("f32", ".h5")])
def test_recorded_outputs_replay(tmp_path, parts_data, teacher, codec, suffix):
    ds = parts_data
    ckpt, model = teacher
    path = tmp_path / f"seg{suffix}"
    header = record_store(path, ds, ckpt, model, codec)
    assert header.feature_projection == {"kind": "gaussian", "seed": 0, "in_dim": model.num_features, "out_dim": 16}
    assert verify_store(path).ok
    reader = RecordReader(path)
    records = np.arange(reader.num_records)[::-1].copy()  # another order and batching than the recording
    got = reader.get(records)
    params = {p.name: got[p.name] for p in header.params}
    pts = torch.from_numpy(views_of(ds, params, got["sample"]))
    cats = torch.from_numpy(ds.labels[got["sample"].astype(np.int64)]).long()
    with torch.inference_mode():
        feats = model.forward_features(pts, cats)
        fresh = torch.log_softmax(model.forward_head(feats), -1).double().numpy()
    # per-point outputs: within the codec's bound (top-K entries for ptopk, every entry for f32)
    codec_obj = get_point_codec(codec, header.num_classes, header.num_points)
    check = point_replay_check(codec_obj, fresh, got["logprobs"], slack=SLACK)
    assert check["ok"], check
    assert check["topk_agreement"] > 0.99
    # a random teacher is nearly uniform: gaps below the code's step (~0.03 nats at the top) may tie after decoding
    top2 = np.sort(fresh, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 0.05
    assert clear.sum() > 100 and (got["logprobs"].argmax(-1) == fresh.argmax(-1))[clear].all()
    if codec == "f32":
        np.testing.assert_allclose(got["logprobs"], fresh, atol=1e-4)
    else:  # outputs that are off (one point's log-ratios stretched by 30 %, the order kept) fail the same check
        bad = got["logprobs"].copy()
        bad[0, 0] = bad[0, 0].max() + 1.3 * (bad[0, 0] - bad[0, 0].max())
        assert not point_replay_check(codec_obj, fresh, bad, slack=SLACK)["ok"]
    # features: the teacher's at the anchors recomputed from the stored seeds, projected, float16
    anchors = got["anchors"]
    assert anchors.shape == (len(records), 8) and (np.diff(anchors, axis=1) > 0).all()
    picked = torch.gather(feats, 1, torch.from_numpy(anchors)[..., None].expand(-1, -1, feats.shape[-1]))
    expected = picked.numpy() @ projection_matrix(0, model.num_features, 16)
    np.testing.assert_allclose(got["features"], expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(project_features(picked, header).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_unprojected_features_and_no_features(tmp_path, parts_data, teacher):
    ds = parts_data
    ckpt, model = teacher
    h = record_store(tmp_path / "wide.zarr", ds, ckpt, model, "ptopk:2", anchors=6, feature_dim=4096)
    assert h.feature_projection == {} and h.feature_dim == model.num_features
    got = RecordReader(tmp_path / "wide.zarr").get(np.array([0, 3]))
    pts = torch.from_numpy(views_of(ds, {p.name: got[p.name] for p in h.params}, got["sample"]))
    with torch.inference_mode():
        feats = model.forward_features(pts, torch.from_numpy(ds.labels[got["sample"].astype(np.int64)]).long())
    picked = torch.gather(feats, 1, torch.from_numpy(got["anchors"])[..., None].expand(-1, -1, feats.shape[-1]))
    np.testing.assert_allclose(got["features"], picked.numpy(), rtol=2e-3, atol=2e-3)
    defaults = make_seg_header_fields(ckpt, ds, {}, model)
    assert (defaults["num_anchors"], defaults["feature_dim"], defaults["codec"], defaults["chunk_records"]) == (8, 32, "ptopk:4", 64)
    h0 = record_store(tmp_path / "none.h5", ds, ckpt, model, "ptopk:2", anchors=0)
    assert h0.num_anchors == 0 and h0.feature_dim == 0
    got = RecordReader(tmp_path / "none.h5").get(np.array([1]))
    assert "features" not in got and "anchors" not in got and got["logprobs"].shape == (1, 32, ds.num_parts)
    with pytest.raises(KdpcError, match="part-segmentation teacher"):
        make_seg_header_fields(Checkpoint(arch="pointnet-tiny", model_config={}, num_classes=3, class_names=[],
                                          task="cls", dataset={}, state_dict={}), ds, {})


def test_student_side_data_path_and_srkd_on_a_store(tmp_path, parts_data, teacher):
    """What the distill dataset does per item: replay, point-level augment (shuffle + dropout), permute the teacher
    log-probs, map the anchors; then one SRKD step on the batch."""
    ds = parts_data
    ckpt, model = teacher
    path = tmp_path / "s.zarr"
    header = record_store(path, ds, ckpt, model, "ptopk:4")
    reader = RecordReader(path)
    records = np.array([0, 7, 30, 43])
    got = reader.get(records)
    point_aug = PointAugmentConfig(jitter_sigma=0.0, shuffle=True, dropout_max=0.9)
    items = []
    for k, record in enumerate(records):
        view, parts = replay_view(ds, int(got["sample"][k]), params_at({p.name: got[p.name] for p in header.params}, k))
        pts, index = apply_point_level_with_index(view[:, :3], point_aug, np.random.default_rng([7, int(record)]))
        extra = seg_item_fields(got, k, index)
        pos = extra["anchor_positions"]
        ok = pos >= 0
        # every kept anchor sits where the student sees that very point; dropped ones are not in the input
        np.testing.assert_array_equal(pts[pos[ok]], view[got["anchors"][k][ok], :3])
        assert not np.isin(got["anchors"][k][~ok], index).any()
        items.append({"points": pts, "label": int(ds.labels[got["sample"][k]]), "parts": parts[index].astype(np.int64),
                      "teacher_logprobs": got["logprobs"][k][index], **extra})
    assert any((it["anchor_positions"] < 0).any() for it in items)  # dropout hit some anchor
    batch = {key: torch.from_numpy(np.stack([it[key] for it in items])) for key in items[0] if key != "label"}
    torch.manual_seed(1)
    student = create_model("dgcnn-seg-tiny", num_classes=ds.num_parts, num_categories=ds.num_classes,
                           edge_widths=((16,), (16,)), emb_dims=32)
    loss = SrkdLoss.for_student(student, header, SrkdConfig())
    opt = torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.01)
    logits, terms, total = loss(student, batch["points"], torch.tensor([it["label"] for it in items]), batch)
    assert logits.shape == (4, 32, ds.num_parts) and set(terms) == {"ce", "kd", "aff", "cross", "anchors_valid"}
    assert 0 < float(terms["anchors_valid"]) < 1
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in loss.parameters())
    opt.step()


def test_records_verify_replays_a_seg_store(tmp_path, parts_data, teacher):
    """`kdpc records verify --teacher` (replay_check) on a partseg store: OK with its teacher, not with another."""
    from kdpc.checkpoint import save_checkpoint
    from kdpc.recorder.replay_check import replay_check

    ds = parts_data
    ckpt, model = teacher
    path = tmp_path / "v.zarr"
    record_store(path, ds, ckpt, model, "ptopk:4")
    save_checkpoint(tmp_path / "t.pt", ckpt)
    result = replay_check(str(path), str(tmp_path / "t.pt"), 12, device="cpu")
    assert result["ok"], result
    assert result["checked"] == 12 and result["feature_max_abs_error"] < 0.05
    other = Checkpoint(**{**ckpt.__dict__, "state_dict": {k: (v * 1.1 if v.is_floating_point() else v)
                                                          for k, v in ckpt.state_dict.items()}})
    save_checkpoint(tmp_path / "other.pt", other)
    bad = replay_check(str(path), str(tmp_path / "other.pt"), 12, device="cpu")
    assert not bad["ok"] and "OUTSIDE" in bad["message"]
