"""Tests of rlsd.objective against hand-computed values and closed forms."""

import math

import pytest
import torch

from rlsd.objective import (
    PerPromptStatTracker,
    normalize_advantages,
    ppo_clip_loss,
    ppo_diagnostics,
)


# ---------------------------------------------------------------- ppo_clip_loss
@pytest.mark.parametrize(
    "adv, ratio, c, expected",
    [
        (2.0, 1.05, 0.1, -2.0 * 1.05),  # inside clip: -A r
        (2.0, 1.5, 0.1, -2.0 * 1.1),  # A>0, r above 1+c: clipped -> -A (1+c)
        (2.0, 0.5, 0.1, -2.0 * 0.5),  # A>0, r below 1-c: unclipped is the max (pessimistic)
        (-3.0, 0.5, 0.1, 3.0 * 0.9),  # A<0, r below 1-c: clipped -> -A (1-c)
        (-3.0, 1.5, 0.1, 3.0 * 1.5),  # A<0, r above 1+c: unclipped is the max
        (1.0, 1.0 + 2e-4, 1e-4, -(1.0 + 1e-4)),  # paper's clip range
    ],
)
def test_ppo_clip_loss_single_values(adv, ratio, c, expected):
    loss = ppo_clip_loss(torch.tensor([adv]), torch.tensor([ratio], dtype=torch.float64), c)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_ppo_clip_loss_is_batch_mean():
    adv = torch.tensor([2.0, -3.0, 1.0])
    ratio = torch.tensor([1.5, 0.5, 1.0], dtype=torch.float64)
    expected = (-2.0 * 1.1 + 3.0 * 0.9 - 1.0) / 3
    assert ppo_clip_loss(adv, ratio, 0.1).item() == pytest.approx(expected, rel=1e-12)


def test_ppo_clip_loss_gradient_sign_and_clipping():
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    ratio = torch.tensor([1.0, 1.0, 1.5, 0.5], requires_grad=True)
    ppo_clip_loss(adv, ratio, 0.1).backward()
    g = ratio.grad
    assert g[0] < 0  # positive advantage: descending raises the ratio
    assert g[1] > 0  # negative advantage: descending lowers the ratio
    assert g[2] == 0 and g[3] == 0  # clipped in the advantage's direction: no gradient
    assert g[0].item() == pytest.approx(-0.25)


def test_ppo_clip_loss_advantages_carry_no_gradient():
    adv = torch.tensor([1.0, 2.0], requires_grad=True)
    ppo_clip_loss(adv, torch.ones(2, requires_grad=True)).backward()
    assert adv.grad is None


def test_ppo_clip_loss_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        ppo_clip_loss(torch.ones(3), torch.ones(4))


# ---------------------------------------------------------------- diagnostics
def test_ppo_diagnostics_values():
    old = torch.zeros(4)
    log_prob = torch.log(torch.tensor([1.0, 1.00005, 1.2, 0.8]))
    d = ppo_diagnostics(log_prob, old, clip_range=1e-4)
    lr = log_prob.double()
    assert d["approx_kl"] == pytest.approx(0.5 * (lr**2).mean().item(), rel=1e-6)
    assert d["approx_kl_k3"] == pytest.approx(((lr.exp() - 1) - lr).mean().item(), rel=1e-6)
    assert d["clipfrac"] == pytest.approx(0.5)
    assert d["ratio_mean"] == pytest.approx(1.000_012_5, rel=1e-6)
    assert d["ratio_min"] == pytest.approx(0.8, rel=1e-6)
    assert d["ratio_max"] == pytest.approx(1.2, rel=1e-6)


def test_ppo_diagnostics_identity_policy():
    lp = torch.randn(8)
    d = ppo_diagnostics(lp, lp.clone(), 1e-4)
    assert d["approx_kl"] == 0 and d["approx_kl_k3"] == 0 and d["clipfrac"] == 0
    assert d["ratio_min"] == d["ratio_max"] == 1.0


# ---------------------------------------------------------------- normalisation
def test_global_batch_matches_closed_form_unbiased_std():
    r = torch.tensor([1.0, 2.0, 4.0, 7.0])
    mean = sum(r.tolist()) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in r.tolist()) / 3)  # Bessel-corrected
    expected = [(x - mean) / (std + 1e-7) for x in r.tolist()]
    adv = normalize_advantages(r)
    assert adv.dtype == torch.float32
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_global_batch_clamps_at_ten():
    r = torch.zeros(1000)
    r[0] = 1.0  # an outlier: (1 - 1e-3) / std ~ 31.6 before clamping
    adv = normalize_advantages(r)
    assert adv[0].item() == pytest.approx(10.0)
    unclamped = normalize_advantages(r, clip=None)
    assert unclamped[0].item() > 30
    assert adv[1:].tolist() == pytest.approx(unclamped[1:].tolist())


def test_constant_rewards_give_zero_advantages():
    assert normalize_advantages(torch.full((5,), 3.0)).abs().max().item() == 0.0


def test_group_mode_normalises_within_groups():
    r = torch.tensor([1.0, 3.0, 10.0, 20.0, 30.0])
    ids = [0, 0, 1, 1, 1]
    adv = normalize_advantages(r, mode="group", group_ids=ids)
    assert adv[:2].tolist() == pytest.approx(normalize_advantages(r[:2]).tolist())
    assert adv[2:].tolist() == pytest.approx(normalize_advantages(r[2:]).tolist())
    assert adv[2:].tolist() == pytest.approx([-1.0, 0.0, 1.0], rel=1e-6)


def test_group_center_removes_prompt_difficulty_and_keeps_the_batch_scale():
    # an easy prompt (0.95..0.99) and a hard one (0.0..0.5): the global advantage is the prompt's difficulty
    r = torch.tensor([0.95, 0.99, 0.0, 0.5])
    ids = [0, 0, 1, 1]
    centred = torch.tensor([-0.02, 0.02, -0.25, 0.25])
    adv = normalize_advantages(r, mode="group_center", group_ids=ids)
    assert adv.tolist() == pytest.approx((centred / centred.std()).tolist(), rel=1e-5)
    assert adv[0] < 0 < adv[1] and abs(adv[1]) < abs(adv[3])  # small in-group gap stays small
    per_group = normalize_advantages(r, mode="group", group_ids=ids)
    assert per_group[1].item() == pytest.approx(per_group[3].item(), rel=1e-5)  # 'group' blows 0.04 up to 0.5's size
    global_adv = normalize_advantages(r)
    assert global_adv[0] > 0 and global_adv[3] < 0  # global batch: every easy-prompt image is "good"
    with pytest.raises(ValueError, match="at least 2 per group"):
        normalize_advantages(r, mode="group_center", group_ids=[0, 0, 1, 2])


def test_mode_errors():
    with pytest.raises(ValueError, match="unknown advantage mode"):
        normalize_advantages(torch.ones(3), mode="batch")
    with pytest.raises(ValueError, match="group_ids"):
        normalize_advantages(torch.ones(3), mode="group")
    with pytest.raises(ValueError, match="tracker"):
        normalize_advantages(torch.ones(3), mode="per_prompt", prompts=["a"] * 3)
    with pytest.raises(ValueError, match="at least 2"):
        normalize_advantages(torch.ones(1))
    with pytest.raises(ValueError, match="at least 2"):
        normalize_advantages(torch.ones(3), mode="group", group_ids=[0, 0, 1])


def test_per_prompt_tracker_matches_manual():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=3)
    prompts = ["a", "b", "a", "b"]
    r1 = torch.tensor([1.0, 10.0, 3.0, 20.0])
    adv1 = normalize_advantages(r1, mode="per_prompt", prompts=prompts, tracker=tracker, clip=None)
    # buffers hold 2 < min_count values: batch statistics with population std
    m, s = r1.mean(), r1.std(unbiased=False)
    assert adv1.tolist() == pytest.approx(((r1 - m) / (s + 1e-7)).tolist(), rel=1e-6)

    r2 = torch.tensor([5.0, 30.0, 7.0, 40.0])
    adv2 = normalize_advantages(r2, mode="per_prompt", prompts=prompts, tracker=tracker, clip=None)
    a_hist = torch.tensor([1.0, 3.0, 5.0, 7.0])
    b_hist = torch.tensor([10.0, 20.0, 30.0, 40.0])
    exp_a = (torch.tensor([5.0, 7.0]) - a_hist.mean()) / (a_hist.std(unbiased=False) + 1e-7)
    exp_b = (torch.tensor([30.0, 40.0]) - b_hist.mean()) / (b_hist.std(unbiased=False) + 1e-7)
    assert adv2[[0, 2]].tolist() == pytest.approx(exp_a.tolist(), rel=1e-6)
    assert adv2[[1, 3]].tolist() == pytest.approx(exp_b.tolist(), rel=1e-6)

    # the buffer keeps only the last buffer_size rewards
    tracker.update(["a"], torch.tensor([100.0]))
    assert list(tracker.stats["a"]) == [3.0, 5.0, 7.0, 100.0]


def test_per_prompt_tracker_state_round_trip():
    t1 = PerPromptStatTracker(buffer_size=3, min_count=2)
    t1.update(["x", "y", "x"], torch.tensor([1.0, 2.0, 4.0]))
    t2 = PerPromptStatTracker()
    t2.load_state_dict(t1.state_dict())
    batch = (["x", "y", "y"], torch.tensor([8.0, 3.0, 5.0]))
    assert t2.update(*batch).tolist() == t1.update(*batch).tolist()
    assert t2.state_dict() == t1.state_dict()
    assert t2.stats["x"].maxlen == 3
