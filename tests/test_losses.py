"""Loss functions checked against hand computations (plain ``math`` on small explicit tensors)."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdpc.distill.losses import (
    FeatureProjector,
    affinity_alignment_loss,
    answer_relation_loss,
    combine,
    cross_sample_relation_loss,
    dist_loss,
    kd_loss,
    label_smoothing_ce,
    nwsd_loss,
    pointwise_kd_loss,
    standardized_kd_loss,
)
from kdpc.errors import KdpcError


# ----------------------------------------------------------------------------------------- plain-math helpers


def softmax(xs, t=1.0):
    m = max(x / t for x in xs)
    e = [math.exp(x / t - m) for x in xs]
    z = sum(e)
    return [v / z for v in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def unit(v):
    n = math.sqrt(dot(v, v))
    return [x / n for x in v]


# ------------------------------------------------------------------------------------------ cross-entropy


def test_label_smoothing_ce_matches_manual():
    logits = [[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]]
    target = [1, 2]
    eps, c = 0.1, 3
    expected = 0.0
    for row, y in zip(logits, target):
        p = softmax(row)
        q = [eps / c + (1 - eps) * (k == y) for k in range(c)]
        expected += -sum(qk * math.log(pk) for qk, pk in zip(q, p))
    expected /= 2
    got = label_smoothing_ce(torch.tensor(logits), torch.tensor(target), smoothing=eps)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # smoothing=0 is plain NLL of the true class
    plain = label_smoothing_ce(torch.tensor(logits), torch.tensor(target), smoothing=0.0)
    assert plain.item() == pytest.approx(-(math.log(softmax(logits[0])[1]) + math.log(softmax(logits[1])[2])) / 2, rel=1e-6)


def test_label_smoothing_ce_ignore_index_per_point():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [9.0, -9.0, 0.0]], [[0.0, 0.0, 3.0], [0.2, 0.1, 0.0]]])  # [B=2, N=2, C=3]
    target = torch.tensor([[1, -100], [2, 0]])
    eps, c = 0.2, 3
    expected = 0.0
    for row, y in (([1.0, 2.0, 0.5], 1), ([0.0, 0.0, 3.0], 2), ([0.2, 0.1, 0.0], 0)):
        p = softmax(row)
        expected += -sum((eps / c + (1 - eps) * (k == y)) * math.log(p[k]) for k in range(c))
    expected /= 3  # the ignored point is out of the mean
    assert label_smoothing_ce(logits, target, smoothing=eps).item() == pytest.approx(expected, rel=1e-6)

    # everything ignored: an exact zero that still backpropagates
    x = logits.clone().requires_grad_(True)
    loss = label_smoothing_ce(x, torch.full((2, 2), -100), smoothing=eps)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(x.grad) == 0

    with pytest.raises(KdpcError):
        label_smoothing_ce(logits, torch.tensor([[1, 3], [0, 0]]))
    with pytest.raises(KdpcError):
        label_smoothing_ce(logits, target, smoothing=1.0)


# --------------------------------------------------------------------------------------------------- KD


def test_kd_loss_t1_hand_value():
    # uniform student vs teacher (0.75, 0.25): KL = 0.75 ln 1.5 + 0.25 ln 0.5
    student = torch.zeros(1, 2)
    teacher = torch.log(torch.tensor([[0.75, 0.25]]))
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_loss_matches_manual_kl(t):
    student = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    teacher_p = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
    teacher_lp = [[math.log(v) for v in row] for row in teacher_p]
    expected = t * t * sum(kl(softmax(tl, t), softmax(s, t)) for s, tl in zip(student, teacher_lp)) / 2
    got = kd_loss(torch.tensor(student), torch.tensor(teacher_lp, dtype=torch.float16), temperature=t)
    assert got.dtype == torch.float32
    # the fp16 teacher input is the only rounding
    assert got.item() == pytest.approx(expected, rel=2e-3)
    got32 = kd_loss(torch.tensor(student), torch.tensor(teacher_lp), temperature=t)
    assert got32.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)

    # per-record weights: w_i * KL_i summed, divided by the number of records
    kls = [t * t * kl(softmax(tl, t), softmax(s, t)) for s, tl in zip(student, teacher_lp)]
    w = kd_loss(torch.tensor(student), torch.tensor(teacher_lp), temperature=t, weight=torch.tensor([2.0, 0.0]))
    assert w.item() == pytest.approx(2.0 * kls[0] / 2, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_loss_zero_when_student_equals_teacher_plus_constant(t):
    teacher = torch.log_softmax(torch.tensor([[2.0, -1.0, 0.3], [0.0, 5.0, 1.0]]), dim=-1)
    student = teacher + torch.tensor([[7.0], [-3.0]])  # a different constant per row
    assert abs(kd_loss(student, teacher, temperature=t).item()) < 1e-6
    assert kd_loss(student + torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), teacher, temperature=t).item() > 1e-3


def test_kd_loss_teacher_minus_inf_is_finite():
    teacher = torch.tensor([[0.0, float("-inf")]])  # p_t = (1, 0)
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = kd_loss(student, teacher, temperature=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)  # KL((1,0) || (.5,.5)) = ln 2
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_gradient_moves_student_toward_teacher(t):
    student_list = [[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]
    teacher_p = [[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]]
    teacher = torch.log(torch.tensor(teacher_p))
    student = torch.tensor(student_list, requires_grad=True)
    loss = kd_loss(student, teacher, temperature=t)
    loss.backward()
    # analytic gradient of T^2 KL / B w.r.t. the logits: T * (p_s^T - p_t^T) / B
    for b in range(2):
        ps = softmax(student_list[b], t)
        pt = softmax([math.log(v) for v in teacher_p[b]], t)
        for c in range(3):
            assert student.grad[b, c].item() == pytest.approx(t * (ps[c] - pt[c]) / 2, abs=1e-6)
    # a small step against the gradient lowers the loss and raises the teacher's top class
    with torch.no_grad():
        stepped = student - 0.5 * student.grad
    assert kd_loss(stepped, teacher, temperature=t).item() < loss.item()
    assert torch.softmax(stepped, -1)[0, 0] > torch.softmax(student.detach(), -1)[0, 0]
    assert torch.softmax(stepped, -1)[1, 2] > torch.softmax(student.detach(), -1)[1, 2]


def test_kd_loss_rejects_shape_mismatch_and_bad_temperature():
    with pytest.raises(KdpcError):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(KdpcError):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


# ------------------------------------------------------------------------------------------------- DIST


def pearson(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return cov / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_dist_loss_hand_value(t):
    student = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [0.0, 3.0, 1.0]]
    teacher_lp = [[math.log(v) for v in row] for row in ([0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4])]
    ps = [softmax(row, t) for row in student]
    pt = [softmax(row, t) for row in teacher_lp]
    inter = sum(1 - pearson(a, b) for a, b in zip(ps, pt)) / 3
    intra = sum(1 - pearson([r[c] for r in ps], [r[c] for r in pt]) for c in range(3)) / 3
    got = dist_loss(torch.tensor(student), torch.tensor(teacher_lp), t, inter_weight=2.0, intra_weight=0.5)
    assert got.item() == pytest.approx(t * t * (2.0 * inter + 0.5 * intra), rel=1e-4)


def test_dist_loss_zero_only_for_matching_relations_and_moves_student_toward_teacher():
    teacher = torch.log_softmax(torch.tensor([[2.0, -1.0, 0.3], [0.0, 5.0, 1.0], [1.0, 1.5, -2.0]]), dim=-1)
    assert dist_loss(teacher + 3.0, teacher, 1.0).item() == pytest.approx(0.0, abs=1e-5)
    student = torch.zeros(3, 3)
    student[0, 1] = 1.0  # a wrong ranking on the first record; the others uniform (they correlate with nothing)
    student.requires_grad_(True)
    loss = dist_loss(student, teacher, 1.0)
    loss.backward()
    with torch.no_grad():
        stepped = student - 1.0 * student.grad
    assert dist_loss(stepped, teacher, 1.0).item() < loss.item()
    with pytest.raises(KdpcError):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)


def test_standardized_kd_hand_value_and_scale_invariance():
    student = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    teacher_lp = [[math.log(v) for v in row] for row in ([0.7, 0.2, 0.1], [0.1, 0.3, 0.6])]

    def zscore(row):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / (len(row) - 1))
        return [(x - mean) / std for x in row]

    expected = 0.0
    for s, t_lp in zip(student, teacher_lp):
        p, q = softmax(zscore(t_lp), 2.0), softmax(zscore(s), 2.0)
        expected += sum(a * math.log(a / b) for a, b in zip(p, q)) / 2
    got = standardized_kd_loss(torch.tensor(student), torch.tensor(teacher_lp), 2.0)
    assert got.item() == pytest.approx(4.0 * expected, rel=1e-4)
    # only the shape of each answer counts: any positive scale and shift of either side gives the same loss
    scaled = standardized_kd_loss(3.0 * torch.tensor(student) - 1.0, 0.25 * torch.tensor(teacher_lp), 2.0)
    assert scaled.item() == pytest.approx(got.item(), rel=1e-4)
    assert standardized_kd_loss(5.0 * torch.tensor(teacher_lp), torch.tensor(teacher_lp), 2.0).item() == \
        pytest.approx(0.0, abs=1e-6)


def test_standardized_kd_finite_with_impossible_classes_and_moves_student_toward_teacher():
    teacher = torch.log_softmax(torch.tensor([[4.0, -1.0, 0.3, 0.0], [0.0, 5.0, 1.0, -2.0]]), dim=-1)
    teacher[0, 1] = -math.inf
    student = torch.zeros(2, 4)
    student[:, 3] = 1.0
    student.requires_grad_(True)
    loss = standardized_kd_loss(student, teacher, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    with torch.no_grad():
        stepped = student - 1.0 * student.grad
    assert standardized_kd_loss(stepped, teacher, 2.0).item() < loss.item()


def test_answer_relation_hand_value():
    features = [[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, 0.0], [3.0, 1.0, 0.0, 2.0]]
    teacher_lp = [[math.log(v) for v in row] for row in ([0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1])]
    n = len(features)
    expected = sum((pearson(features[i], features[j]) - pearson(teacher_lp[i], teacher_lp[j])) ** 2
                   for i in range(n) for j in range(n)) / n**2
    got = answer_relation_loss(torch.tensor(features), torch.tensor(teacher_lp))
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_answer_relation_ignores_scales_and_moves_embedding_toward_the_teachers_relations():
    teacher = torch.log_softmax(torch.tensor([[4.0, -1.0, 0.3], [0.0, 5.0, 1.0], [3.5, -0.5, 0.0]]), dim=-1)
    # an embedding whose records relate as the teacher's answers do, at any per-record scale and shift: zero
    same = teacher * torch.tensor([[2.0], [0.5], [3.0]]) + 7.0
    assert answer_relation_loss(same, teacher).item() == pytest.approx(0.0, abs=1e-6)
    features = torch.tensor([[1.0, 0.0, 0.5, 0.2], [1.0, 0.1, 0.4, 0.2], [0.0, 1.0, 0.3, 0.9]], requires_grad=True)
    loss = answer_relation_loss(features, teacher)
    loss.backward()
    with torch.no_grad():
        stepped = features - 0.5 * features.grad
    assert answer_relation_loss(stepped, teacher).item() < loss.item()
    assert answer_relation_loss(features[:1], teacher[:1]).item() == 0.0  # one record relates to nothing
    with pytest.raises(KdpcError):
        answer_relation_loss(torch.zeros(3, 4), torch.zeros(2, 3))


# ------------------------------------------------------------------------------------------------- NWSD


def test_nwsd_clamp_value_gradient_and_fraction():
    t, cap = 2.0, 0.05
    target_lp = [[math.log(0.5), math.log(0.5)], [math.log(0.99), math.log(0.01)]]
    student_list = [[0.2, 0.0], [-6.0, 6.0]]  # record 0 near its target, record 1 far beyond the cap
    kl0 = kl(softmax(target_lp[0], t), softmax(student_list[0], t))
    kl1 = kl(softmax(target_lp[1], t), softmax(student_list[1], t))
    assert kl0 < cap < kl1  # the case is what it claims to be

    student = torch.tensor(student_list, requires_grad=True)
    target = torch.tensor(target_lp, requires_grad=True)
    loss, frac = nwsd_loss(student, target, temperature=t, max_kl=cap)
    assert loss.item() == pytest.approx(t * t * (kl0 + cap) / 2, rel=1e-4, abs=1e-6)
    assert frac.item() == pytest.approx(0.5)
    assert not frac.requires_grad
    loss.backward()
    assert torch.equal(student.grad[1], torch.zeros(2))  # capped record: exactly no gradient
    assert student.grad[0].abs().sum() > 0
    assert target.grad is None or torch.count_nonzero(target.grad) == 0  # q_self is detached

    # mask leaves a record out of the mean and of the fraction
    loss_m, frac_m = nwsd_loss(student, target, t, cap, mask=torch.tensor([True, False]))
    assert loss_m.item() == pytest.approx(t * t * kl0, rel=1e-4, abs=1e-6)
    assert frac_m.item() == 0.0
    loss_none, frac_none = nwsd_loss(student, target, t, cap, mask=torch.tensor([False, False]))
    assert loss_none.item() == 0.0 and frac_none.item() == 0.0


def test_nwsd_maximised_stays_bounded():
    t, cap, beta = 1.0, 0.5, -1.0
    target = torch.log_softmax(torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.3, 0.1], [2.0, 2.0, 0.0]]), dim=-1)
    student = target.clone().add_(0.01 * torch.randn(3, 3)).requires_grad_(True)
    opt = torch.optim.SGD([student], lr=5.0)
    for _ in range(100):
        opt.zero_grad()
        loss, frac = nwsd_loss(student, target, t, cap)
        (beta * loss).backward()
        opt.step()
        assert loss.item() <= t * t * cap + 1e-6
        assert torch.isfinite(student).all()
    # it did move away (maximised) and then stopped at the cap instead of running off
    assert frac.item() == 1.0
    assert loss.item() == pytest.approx(t * t * cap)
    assert student.detach().abs().max() < 20.0
    final = student.detach().clone()
    loss, _ = nwsd_loss(student, target, t, cap)
    opt.zero_grad()
    (beta * loss).backward()
    opt.step()
    assert torch.equal(student.detach(), final)  # zero gradient at the cap: no further drift


def test_pointwise_kd_mask():
    t = 2.0
    s = [[1.0, 0.0], [0.0, 3.0], [-1.0, 1.0]]
    tp = [[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]]
    tl = [[math.log(v) for v in r] for r in tp]
    student = torch.tensor([s])  # [B=1, N=3, P=2]
    teacher = torch.tensor([tl])
    mask = torch.tensor([[True, False, True]])
    expected = t * t * (kl(softmax(tl[0], t), softmax(s[0], t)) + kl(softmax(tl[2], t), softmax(s[2], t))) / 2
    assert pointwise_kd_loss(student, teacher, t, mask).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    all_pts = t * t * sum(kl(softmax(tl[i], t), softmax(s[i], t)) for i in range(3)) / 3
    assert pointwise_kd_loss(student, teacher, t).item() == pytest.approx(all_pts, rel=1e-4, abs=1e-6)
    assert pointwise_kd_loss(student, teacher, t, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


# ----------------------------------------------------------------------------------------- combine


def test_combine_weighted_total_and_logs():
    ce = torch.tensor(2.0, requires_grad=True)
    kd = torch.tensor(0.5, requires_grad=True)
    nw = torch.tensor(0.25, requires_grad=True)
    total, logs = combine({"ce": ce, "kd": kd, "nwsd": nw}, {"ce": 0.5, "kd": 2.0, "nwsd": -0.4, "unused": 3.0})
    assert total.item() == pytest.approx(0.5 * 2.0 + 2.0 * 0.5 - 0.4 * 0.25)
    assert logs == pytest.approx({"loss/ce": 2.0, "loss/kd": 0.5, "loss/nwsd": 0.25, "loss/total": 1.9})
    total.backward()
    assert nw.grad.item() == pytest.approx(-0.4)
    # a zero-weighted term is left out, so a nan in it cannot poison the total
    total2, logs2 = combine({"ce": ce, "kd": torch.tensor(float("nan"))}, {"ce": 1.0, "kd": 0.0})
    assert total2.item() == 2.0 and math.isnan(logs2["loss/kd"])
    with pytest.raises(KdpcError):
        combine({"ce": ce, "kd": kd}, {"ce": 1.0})


# ------------------------------------------------------------------------------------ feature relations


def test_affinity_zero_for_positive_scale_and_isometry():
    fs = torch.randn(2, 4, 3)
    assert affinity_alignment_loss(fs, 3.0 * fs, "mse").item() < 1e-10
    assert abs(affinity_alignment_loss(fs, 3.0 * fs, "kl", temperature=0.5).item()) < 1e-6
    # Dt != Ds: embed 3 -> 5 dims by an orthonormal map (inner products kept), then scale
    q, _ = torch.linalg.qr(torch.randn(5, 3))
    ft = 0.25 * fs @ q.T
    assert affinity_alignment_loss(fs, ft, "mse").item() < 1e-10
    assert abs(affinity_alignment_loss(fs, ft, "kl").item()) < 1e-6
    assert affinity_alignment_loss(fs, torch.randn(2, 4, 5), "mse").item() > 1e-3


def test_affinity_hand_values_2x2():
    # student rows orthogonal: A_s = I; teacher rows at 45 degrees: A_t = [[1, c], [c, 1]], c = 1/sqrt 2
    fs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    ft = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])
    c = 1.0 / math.sqrt(2.0)
    assert affinity_alignment_loss(fs, ft, "mse").item() == pytest.approx(2 * c * c / 4, rel=1e-6)  # = 0.25
    for t in (1.0, 2.0):
        row0 = kl(softmax([1.0, c], t), softmax([1.0, 0.0], t))
        row1 = kl(softmax([c, 1.0], t), softmax([0.0, 1.0], t))
        expected = t * t * (row0 + row1) / 2
        assert affinity_alignment_loss(fs, ft, "kl", temperature=t).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    with pytest.raises(KdpcError):
        affinity_alignment_loss(fs, ft, "l1")


def test_cross_sample_relation_closed_form():
    # every student similarity is 1 -> uniform rows; every teacher pair map is I -> rows softmax((1, 0) / T).
    # Each row's KL to uniform is ln 2 - H(p) with p = sigmoid(1 / T).
    t = 2.0
    fs = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[3.0, 0.0], [0.5, 0.0]]])
    ft = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 7.0]]])
    p = 1.0 / (1.0 + math.exp(-1.0 / t))
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    expected = t * t * (math.log(2.0) - entropy)
    assert cross_sample_relation_loss(fs, ft, temperature=t).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_cross_sample_relation_equals_pair_loop():
    t = 2.0
    fs = [[[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]], [[0.0, 1.0, 1.0], [2.0, 0.0, -1.0]]]  # B=2, M=2, Ds=3
    ft = [[[1.0, 0.0], [1.0, 1.0]], [[0.0, 2.0], [-1.0, 0.5]]]  # Dt=2
    # plain-math reference: every ordered pair (i, j), every row m
    total, count = 0.0, 0
    for i in range(2):
        for j in range(2):
            for m in range(2):
                srow = [dot(unit(fs[i][m]), unit(fs[j][n])) for n in range(2)]
                trow = [dot(unit(ft[i][m]), unit(ft[j][n])) for n in range(2)]
                total += kl(softmax(trow, t), softmax(srow, t))
                count += 1
    expected = t * t * total / count
    got = cross_sample_relation_loss(torch.tensor(fs), torch.tensor(ft), temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)

    # and the CIRKD-style explicit per-pair loop on random features
    a, b = torch.randn(3, 4, 6), torch.randn(3, 4, 5)
    na, nb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    loop = 0.0
    for i in range(3):
        for j in range(3):
            s_map = na[i] @ na[j].T
            t_map = nb[i] @ nb[j].T
            loop += F.kl_div(F.log_softmax(s_map / t, 1), F.softmax(t_map / t, 1), reduction="batchmean")
    loop = t * t * loop / 9
    assert cross_sample_relation_loss(a, b, t).item() == pytest.approx(loop.item(), rel=1e-4, abs=1e-6)


def test_feature_losses_ignore_autocast_and_detach_teacher():
    fs = torch.randn(2, 5, 4, requires_grad=True)
    ft = torch.randn(2, 5, 6, requires_grad=True)
    ref = [affinity_alignment_loss(fs, ft, "mse"), cross_sample_relation_loss(fs, ft)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = [affinity_alignment_loss(fs, ft, "mse"), cross_sample_relation_loss(fs, ft)]
    for r, u in zip(ref, under):
        assert u.dtype == torch.float32
        assert u.item() == pytest.approx(r.item(), rel=1e-6)
    sum(under).backward()
    assert fs.grad is not None and ft.grad is None


def test_feature_projector_shapes_and_grad():
    proj = FeatureProjector(4, 7, hidden_dim=8)
    x = torch.randn(2, 5, 4, requires_grad=True)
    y = proj(x)
    assert y.shape == (2, 5, 7)
    affinity_alignment_loss(y, torch.randn(2, 5, 7)).backward()
    assert x.grad is not None and proj.fc1.weight.grad is not None
    proj.eval()
    assert proj(torch.randn(3, 4)).shape == (3, 7)
    with pytest.raises(KdpcError):
        proj(torch.randn(2, 5, 3))
