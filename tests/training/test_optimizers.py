"""Optimizers against updates computed by hand, and against torch.optim where it is
installed; gradient clipping by global norm."""

import math

import numpy as np
import pytest

from graphengine.errors import TrainingError
from graphengine.training.optimizers import (
    SGD,
    Adam,
    AdamW,
    clip_scale,
    global_norm,
    make_optimizer,
)

P0 = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.5]])  # (2, 3): a swapped axis fails
G1 = np.array([[0.5, 1.0, -0.25], [2.0, -1.0, 0.75]])
G2 = np.array([[-1.0, 0.5, 0.25], [0.5, 0.25, -2.0]])


def run(optimizer, grads, lr, scale=1.0, dtype=np.float64):
    p = {"w": P0.astype(dtype)}
    optimizer.setup(p)
    for g in grads:
        optimizer.step(p, {"w": g.astype(dtype)}, lr=lr, grad_scale=scale)
    return p["w"]


def test_sgd_plain():
    assert np.allclose(run(SGD(), [G1, G2], lr=0.1), P0 - 0.1 * G1 - 0.1 * G2)


def test_plain_sgd_shortcut_matches_the_general_update_bit_for_bit():
    # SGD.step skips _update when there is no momentum, decay or scale; the
    # shortcut must give the same bits as the general rule, in float32 too.
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(P0.shape).astype(np.float32) for _ in range(3)]
    fast = run(SGD(), grads, lr=0.037, dtype=np.float32)
    general = SGD()
    p = {"w": P0.astype(np.float32)}
    general.setup(p)
    for g in grads:
        for name in p:
            general._update(name, p[name], g, 0.037, 1.0)
    np.testing.assert_array_equal(fast, p["w"])
    assert fast.dtype == np.float32


def _packed(shapes, rng, order=None):
    """Arrays of ``shapes`` as views laid back to back over one float32 array of
    random values (the layout the trainer packs parameters into)."""
    from graphengine.memory_plan import back_to_back

    views = back_to_back(shapes, np.float32)
    block = views[0].base
    block[...] = rng.standard_normal(block.size)
    return views


@pytest.mark.parametrize("layout", ["packed", "grads apart", "reordered", "a gap"])
def test_plain_sgd_over_packed_arrays_gives_the_loop_bits(layout):
    """Parameters and gradients laid out over one array each take two numpy calls
    in all; any other layout takes the loop; both give the same bits."""
    rng = np.random.default_rng(1)
    shapes = [(3, 5), (5,), (5, 2), (2,)]
    names = ["w1", "b1", "w2", "b2"]
    values = _packed(shapes, rng)
    grads = _packed(shapes, rng)
    if layout == "grads apart":
        grads = [g.copy() for g in grads]
    elif layout == "reordered":
        names = names[::-1]
        values, grads = values[::-1], grads[::-1]
    elif layout == "a gap":
        values = _packed(shapes + [(1,)], rng)[:-1]
    packed = dict(zip(names, values))
    loose = {n: v.copy() for n, v in packed.items()}
    fast, slow = SGD(), SGD()
    fast.setup(packed)
    slow.setup(loose)
    for step in range(3):
        for g in grads:
            g *= 0.5  # the same arrays with new values, as a planned run gives
        fast.step(packed, dict(zip(names, grads)), lr=0.03 * (step + 1))
        for name, g in zip(names, grads):
            slow._update(name, loose[name], g, 0.03 * (step + 1), 1.0)
    assert (fast._packed_arrays is not None) == (layout == "packed")
    for name in names:
        np.testing.assert_array_equal(packed[name], loose[name], err_msg=name)
    # New gradient arrays (an unplanned run): found again or not, still the same bits.
    fresh = {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in packed.items()}
    fast.step(packed, fresh, lr=0.1)
    for name in names:
        slow._update(name, loose[name], fresh[name], 0.1, 1.0)
        np.testing.assert_array_equal(packed[name], loose[name], err_msg=name)


def test_sgd_momentum_by_hand():
    mu, lr = 0.9, 0.1
    b1 = G1  # b = mu * 0 + g
    p1 = P0 - lr * b1
    b2 = mu * b1 + G2
    p2 = p1 - lr * b2
    assert np.allclose(run(SGD(momentum=mu), [G1, G2], lr=lr), p2)


def test_sgd_nesterov_by_hand():
    mu, lr = 0.9, 0.1
    b1 = G1
    p1 = P0 - lr * (G1 + mu * b1)
    b2 = mu * b1 + G2
    p2 = p1 - lr * (G2 + mu * b2)
    assert np.allclose(run(SGD(momentum=mu, nesterov=True), [G1, G2], lr=lr), p2)


def test_sgd_weight_decay_and_scale_by_hand():
    wd, lr, s = 0.01, 0.1, 0.5
    g1 = s * G1 + wd * P0
    p1 = P0 - lr * g1
    b1 = g1
    g2 = s * G2 + wd * p1
    b2 = 0.9 * b1 + g2
    p2 = p1 - lr * b2
    got = run(SGD(momentum=0.9, weight_decay=wd), [G1, G2], lr=lr, scale=s)
    assert np.allclose(got, p2)


def adam_by_hand(grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    p, m, v = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def test_adam_by_hand():
    got = run(Adam(beta1=0.8, beta2=0.99, eps=1e-6), [G1, G2, G1], lr=0.01)
    assert np.allclose(
        got, adam_by_hand([G1, G2, G1], 0.01, b1=0.8, b2=0.99, eps=1e-6), rtol=1e-12, atol=1e-12
    )


def test_adam_first_step_moves_each_weight_by_lr():
    # With bias correction, step 1 is lr * g / (|g| + eps): a signed step of lr.
    got = run(Adam(), [G1], lr=0.01)
    assert np.allclose(got, P0 - 0.01 * np.sign(G1), atol=1e-7)


def test_adam_weight_decay_is_coupled():
    got = run(Adam(weight_decay=0.1), [G1, G2], lr=0.01)
    assert np.allclose(got, adam_by_hand([G1, G2], 0.01, wd=0.1), rtol=1e-12, atol=1e-12)


def test_adamw_weight_decay_is_decoupled():
    got = run(AdamW(weight_decay=0.1), [G1, G2], lr=0.01)
    want = adam_by_hand([G1, G2], 0.01, wd=0.1, decoupled=True)
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12)
    # ... and differs from the coupled form.
    assert not np.allclose(got, adam_by_hand([G1, G2], 0.01, wd=0.1), rtol=1e-6, atol=0)


def test_update_is_in_place_and_keeps_dtype():
    p = {"w": P0.astype(np.float32)}
    before = p["w"]
    opt = Adam()
    opt.setup(p)
    opt.step(p, {"w": G1.astype(np.float32)}, lr=0.1)
    assert p["w"] is before and p["w"].dtype == np.float32
    assert opt.slots["m"]["w"].dtype == np.float32


def test_read_only_gradients_are_not_written():
    # Gradients may be broadcast views the executor shares; they stay untouched.
    grad = np.broadcast_to(np.float64(0.5), P0.shape)
    for opt in (
        SGD(momentum=0.9, nesterov=True, weight_decay=0.1),
        Adam(weight_decay=0.1),
        AdamW(),
    ):
        run(opt, [grad], lr=0.1, scale=0.5)


def test_state_round_trip():
    opt = Adam()
    p = run(opt, [G1, G2], lr=0.01)
    scalars, slots = opt.state()
    other = Adam()
    q = {"w": p.copy()}
    other.setup(q)
    other.load_state(scalars, {k: {n: a.copy() for n, a in v.items()} for k, v in slots.items()})
    opt.step({"w": p}, {"w": G1}, lr=0.01)
    other.step(q, {"w": G1}, lr=0.01)
    assert other.iterations == 3
    assert np.array_equal(p, q["w"])


def test_bad_hyperparameters_are_refused():
    with pytest.raises(TrainingError, match="nesterov needs a momentum"):
        SGD(nesterov=True)
    with pytest.raises(TrainingError, match="beta2 must be in"):
        Adam(beta2=1.0)
    with pytest.raises(TrainingError, match="unknown optimizer 'rmsprop'; use one of sgd"):
        make_optimizer("rmsprop")
    with pytest.raises(TrainingError, match="takes no setting momentum"):
        make_optimizer("adam", momentum=0.9)


def test_global_norm_and_clip_scale():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert global_norm(grads) == 5.0
    assert clip_scale(5.0, 10.0) == 1.0
    assert math.isclose(clip_scale(5.0, 1.0), 1.0 / (5.0 + 1e-6))


def test_clipped_sgd_by_hand():
    grads = [G1 * 10.0]
    norm = np.sqrt(np.sum(G1 * G1)) * 10.0
    scale = clip_scale(global_norm({"w": grads[0]}), 1.0)
    assert math.isclose(scale, 1.0 / (norm + 1e-6))
    got = run(SGD(), grads, lr=0.1, scale=scale)
    assert np.allclose(got, P0 - 0.1 * grads[0] / norm, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw"])
def test_against_torch(name):
    torch = pytest.importorskip("torch")
    w = torch.tensor(P0, requires_grad=True)
    settings = {
        "sgd": (
            SGD(momentum=0.9, weight_decay=0.01),
            torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01),
        ),
        "nesterov": (
            SGD(momentum=0.8, nesterov=True),
            torch.optim.SGD([w], lr=0.1, momentum=0.8, nesterov=True),
        ),
        "adam": (Adam(weight_decay=0.01), torch.optim.Adam([w], lr=0.1, weight_decay=0.01)),
        "adamw": (AdamW(weight_decay=0.1), torch.optim.AdamW([w], lr=0.1, weight_decay=0.1)),
    }
    ours, theirs = settings[name]
    grads = [G1, G2, G1 * 0.5, -G2]
    for g in grads:
        theirs.zero_grad()
        w.grad = torch.tensor(g)
        theirs.step()
    assert np.allclose(run(ours, grads, lr=0.1), w.detach().numpy(), rtol=1e-10, atol=1e-12)
