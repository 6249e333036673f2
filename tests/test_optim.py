"""AdamW, the schedule and clipping against their definitions (PyTorch parity lives in test_parity.py)."""

import math

import numpy as np

from littlebaby.optim import AdamW, clip_grad_norm, lr_schedule


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    lrs = [lr_schedule(s, max_steps=100, lr=1.0, warmup_steps=10, min_lr=0.1) for s in range(110)]
    assert lrs[0] == 0.1 and lrs[4] == 0.5 and lrs[9] == 1.0
    assert lrs[10] == 1.0 and abs(lrs[55] - 0.55) < 1e-12  # half way through the cosine
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == lrs[109] == 0.1


def test_clip_scales_to_max_norm_and_returns_the_old_norm():
    grads = {"a": np.full((2, 2), 3.0), "b": np.full(4, 4.0)}  # norm sqrt(4*9 + 4*16) = 10
    norm = clip_grad_norm(grads, max_norm=1.0)
    assert norm == 10.0
    new_norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    assert abs(new_norm - 1.0) < 1e-6
    small = {"a": np.full(3, 0.1)}
    clip_grad_norm(small, max_norm=1.0)
    assert np.all(small["a"] == 0.1)  # under the limit: untouched


def test_adamw_first_step_is_sign_times_lr_and_decays_only_matrices():
    params = {"w": np.ones((2, 3)), "b": np.ones(3)}
    grads = {"w": np.full((2, 3), 0.5), "b": np.full(3, -2.0)}
    opt = AdamW(params, lr=0.1, weight_decay=0.5, eps=0.0)
    opt.step(params, grads)
    # first step: m_hat = g and v_hat = g^2, so the update is lr * sign(g); decay multiplies w by 1 - lr * wd
    np.testing.assert_allclose(params["w"], 1.0 * (1 - 0.05) - 0.1)
    np.testing.assert_allclose(params["b"], 1.0 + 0.1)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    p1 = {"w": rng.standard_normal((3, 3))}
    p2 = {"w": p1["w"].copy()}
    g = [{"w": rng.standard_normal((3, 3))} for _ in range(4)]
    a, b = AdamW(p1), AdamW(p2)
    for k in range(2):
        a.step(p1, g[k]); b.step(p2, g[k])  # noqa: E702
    c = AdamW(p2)
    c.load_state_dict(b.state_dict())
    for k in range(2, 4):
        a.step(p1, g[k]); c.step(p2, g[k])  # noqa: E702
    assert np.array_equal(p1["w"], p2["w"])
