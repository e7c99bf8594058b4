"""NWSD self-target sources: EMA arithmetic, past-prediction bank, sharpening, dispatch."""

import math

import pytest
import torch
from torch import nn

from kdpc.distill.losses import nwsd_loss
from kdpc.distill.self_targets import (
    EmaModel,
    PastPredictionBank,
    make_self_target,
    sharpen_targets,
)
from kdpc.errors import KdpcError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2, bias=False)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.fc(x))


def _set(model, w):
    with torch.no_grad():
        model.fc.weight.fill_(w)


def test_ema_update_math_and_buffers():
    model = Tiny()
    _set(model, 1.0)
    ema = EmaModel(model, decay=0.9)
    _set(model, 2.0)
    with torch.no_grad():
        model.bn.running_mean.fill_(5.0)
        model.bn.num_batches_tracked.fill_(7)
    assert torch.all(ema.module.fc.weight == 1.0)  # a copy: untouched until update
    ema.update(model)
    assert torch.allclose(ema.module.fc.weight, torch.full((2, 1), 0.9 * 1.0 + 0.1 * 2.0))  # 1.1
    assert torch.all(ema.module.bn.running_mean == 5.0)  # buffers copied verbatim
    assert int(ema.module.bn.num_batches_tracked) == 7
    _set(model, 3.0)
    ema.update(model)
    assert torch.allclose(ema.module.fc.weight, torch.full((2, 1), 0.9 * 1.1 + 0.1 * 3.0))  # 1.29
    assert ema.num_updates == 2
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_logprobs_eval_mode_no_grad_and_resume():
    model = Tiny()
    _set(model, 1.0)
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
        model.bn.running_var.fill_(1.0)
        model.bn.weight.fill_(1.0)
        model.bn.bias.fill_(0.0)
    model.train()
    ema = EmaModel(model, decay=0.999)
    x = torch.tensor([[2.0], [0.0]], requires_grad=True)
    lp = ema.logprobs(x)
    # eval-mode BN uses running stats: logits = (x*1 - mean) / sqrt(1 + eps)
    for i, xi in enumerate((2.0, 0.0)):
        z = [(xi - 1.0) / math.sqrt(1 + 1e-5), (xi + 1.0) / math.sqrt(1 + 1e-5)]
        m = max(z)
        logz = m + math.log(sum(math.exp(v - m) for v in z))
        assert lp[i].tolist() == pytest.approx([z[0] - logz, z[1] - logz], rel=1e-5)
    assert not lp.requires_grad
    assert model.training  # the student's mode is untouched

    other = EmaModel(Tiny(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.999
    assert torch.equal(other.module.fc.weight, ema.module.fc.weight)
    with pytest.raises(KdpcError):
        other.load_state_dict({"module": nn.Linear(3, 3).state_dict()})


def test_past_bank_masks_unseen_and_returns_stored():
    bank = PastPredictionBank(num_records=5, num_classes=3)
    lp, has = bank.lookup(torch.tensor([0, 3]))
    assert has.tolist() == [False, False]
    stored = torch.log_softmax(torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.1, 9.0]]), dim=-1)
    bank.update(torch.tensor([3, 1]), stored)
    lp, has = bank.lookup(torch.tensor([1, 2, 3]))
    assert lp.dtype == torch.float32 and lp.shape == (3, 3)
    assert has.tolist() == [True, False, True]
    # fp16 storage: relative error about 2**-11
    assert torch.allclose(lp[0], stored[1], rtol=1e-3, atol=1e-3)
    assert torch.allclose(lp[2], stored[0], rtol=1e-3, atol=1e-3)
    assert not torch.allclose(lp[0], stored[0], rtol=1e-3, atol=1e-3)

    # resume
    again = PastPredictionBank(5, 3)
    again.load_state_dict(bank.state_dict())
    lp2, has2 = again.lookup(torch.tensor([1, 2, 3]))
    assert torch.equal(lp2, lp) and torch.equal(has2, has)
    assert all(isinstance(v, torch.Tensor) for v in bank.state_dict().values())
    with pytest.raises(KdpcError):
        PastPredictionBank(6, 3).load_state_dict(bank.state_dict())
    with pytest.raises(KdpcError):
        bank.lookup(torch.tensor([5]))


def test_past_self_target_masks_first_visit_out_of_nwsd():
    src = make_self_target("past", num_records=4, num_classes=2)
    ids = torch.tensor([0, 2])
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    q, mask = src.targets(logits, record_ids=ids)
    assert mask.tolist() == [False, False]
    loss, _ = nwsd_loss(logits, q, 1.0, 1.0, mask=mask)
    assert loss.item() == 0.0  # nothing seen yet: no NWSD signal
    src.update(student_logits=logits, record_ids=ids)
    q, mask = src.targets(logits, record_ids=ids)
    assert mask.tolist() == [True, True]
    assert torch.allclose(q, torch.log_softmax(logits.detach(), -1), atol=2e-3)
    assert not q.requires_grad

    # per-point predictions: the record's flag covers all of its points
    seg = make_self_target("past", num_records=3, num_classes=(4, 2))
    seg_logits = torch.randn(2, 4, 2)
    seg.update(student_logits=seg_logits, record_ids=torch.tensor([1, 1]))
    q, mask = seg.targets(seg_logits, record_ids=torch.tensor([1, 2]))
    assert mask.shape == (2, 4) and mask[0].all() and not mask[1].any()


def test_sharpen_targets_value_and_detached():
    logits = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    out = sharpen_targets(logits, 0.5)
    z = [2.0, 0.0, -2.0]
    logz = math.log(sum(math.exp(v) for v in z))
    assert out[0].tolist() == pytest.approx([v - logz for v in z], rel=1e-6)
    assert not out.requires_grad
    q, mask = make_self_target("sharpen", sharpen_temperature=0.5).targets(logits)
    assert torch.equal(q, out) and mask is None


def test_ema_self_target_and_dispatch_errors():
    model = Tiny()
    src = make_self_target("ema", model=model, decay=0.5)
    x = torch.randn(4, 1)
    q, mask = src.targets(model(x), inputs=x)
    assert q.shape == (4, 2) and mask is None
    _set(model, 4.0)
    before = src.ema.module.fc.weight.clone()
    src.update(model=model)
    assert torch.allclose(src.ema.module.fc.weight, 0.5 * before + 0.5 * 4.0)

    with pytest.raises(KdpcError):
        make_self_target("teacher")
    with pytest.raises(KdpcError):
        make_self_target("ema")
    with pytest.raises(KdpcError):
        make_self_target("past", num_records=3)
    with pytest.raises(KdpcError):
        EmaModel(model, decay=1.0)
