"""Optimiser: schedule, accumulation, clipping and weight-decay mask (DESIGN.md §1.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distil_jax import optim


def _params():
    """A tiny Flax-like nested param dict: Dense, LayerNorm and embedding leaves."""
    return {
        "embed": {"embedding": jnp.full((4, 2), 2.0)},
        "layer_0": {
            "dense": {"kernel": jnp.full((2, 2), 1.0), "bias": jnp.full((2,), 0.5)},
            "ln": {"scale": jnp.full((2,), 1.5), "bias": jnp.full((2,), -0.5)},
        },
    }


def _grads_like(params, seed, scale=1.0):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noise = [scale * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, noise)


def _step(opt, grads, state, params):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def _adam_state(opt_state) -> optax.ScaleByAdamState:
    """The ScaleByAdamState inside MultiSteps(chain(clip, adamw))."""
    found = [
        s
        for s in jax.tree.leaves(
            opt_state.inner_opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
        )
        if isinstance(s, optax.ScaleByAdamState)
    ]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize(
    "total, frac, points",
    [
        # warmup = ceil(0.05 * 100) = 5 steps, then 95 steps of decay.
        (100, 0.05, {0: 0.0, 1: 0.2, 4: 0.8, 5: 1.0, 6: 94 / 95, 50: 50 / 95, 99: 1 / 95, 100: 0}),
        # 0.05 * 300 = 15.000000000000002 in float64: still 15 warmup steps.
        (300, 0.05, {14: 14 / 15, 15: 1.0, 16: 284 / 285, 300: 0.0, 400: 0.0}),
        # ceil(0.1 * 25) = 3.
        (25, 0.1, {0: 0.0, 2: 2 / 3, 3: 1.0, 14: 11 / 22}),
        # No warmup: full lr from the first step.
        (10, 0.0, {0: 1.0, 5: 0.5, 10: 0.0}),
    ],
)
def test_schedule_values(total, frac, points):
    schedule = optim.learning_rate_schedule(2e-3, total, frac)
    for step, expected in points.items():
        np.testing.assert_allclose(float(schedule(step)), 2e-3 * expected, rtol=1e-6, atol=1e-12)


def test_weight_decay_mask_spares_bias_and_scale():
    mask = optim.weight_decay_mask(_params())
    assert mask == {
        "embed": {"embedding": True},
        "layer_0": {
            "dense": {"kernel": True, "bias": False},
            "ln": {"scale": False, "bias": False},
        },
    }


def test_accumulation_emits_every_k_calls_and_schedule_counts_optimizer_steps():
    opt, schedule = optim.make_optimizer(1e-2, 10, 0.2, accumulation_steps=4)
    params = _params()
    state = opt.init(params)
    step = jax.jit(lambda g, s, p: _step(opt, g, s, p))
    for call in range(1, 13):
        new_params, state = step(_grads_like(params, call), state, params)
        changed = any(
            not np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new_params), strict=True)
        )
        emitted = call % 4 == 0
        # The very first optimiser step runs at lr = schedule(0) = 0 (warmup from 0).
        assert changed == (emitted and call > 4), call
        assert bool(opt.has_updated(state)) == emitted
        # Every count inside the wrapped chain (Adam's and the schedule's) moves once per k.
        found = optax.tree_utils.tree_get_all_with_path(state.inner_opt_state, "count")
        assert len(found) >= 2 and {int(c) for _, c in found} == {call // 4}
        assert int(state.gradient_step) == call // 4
        assert float(optim.current_learning_rate(state, schedule)) == pytest.approx(
            float(schedule(call // 4))
        )
        params = new_params


def test_k_micro_updates_equal_one_update_with_mean_gradient():
    k = 4
    accumulated, _ = optim.make_optimizer(1e-2, 10, 0.0, weight_decay=0.01, accumulation_steps=k)
    plain, _ = optim.make_optimizer(1e-2, 10, 0.0, weight_decay=0.01, accumulation_steps=1)
    p_acc = p_plain = _params()
    s_acc, s_plain = accumulated.init(p_acc), plain.init(p_plain)
    for opt_step in range(3):
        micro = [_grads_like(p_acc, 10 * opt_step + i, scale=3.0) for i in range(k)]
        for g in micro:
            p_acc, s_acc = _step(accumulated, g, s_acc, p_acc)
        mean = jax.tree.map(lambda *gs: sum(gs) / k, *micro)
        p_plain, s_plain = _step(plain, mean, s_plain, p_plain)
        for a, b in zip(jax.tree.leaves(p_acc), jax.tree.leaves(p_plain), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "micro, expected_clipped",
    [
        # Each micro-gradient has norm > 5 but their mean [1, 1] does not: no clipping.
        ([[30.0, 0.0], [-28.0, 2.0]], [1.0, 1.0]),
        # Mean [20, 0] has norm 20: clipped to [5, 0]. Clipping each micro-gradient
        # first would instead give mean([5, 0], [-5, 0]) = 0.
        ([[60.0, 0.0], [-20.0, 0.0]], [5.0, 0.0]),
    ],
)
def test_clipping_applies_to_accumulated_gradient(micro, expected_clipped):
    opt, _ = optim.make_optimizer(1e-2, 10, 0.0, b1=0.9, accumulation_steps=2)
    params = {"w": {"kernel": jnp.zeros(2)}}
    state = opt.init(params)
    for g in micro:
        params, state = _step(opt, {"w": {"kernel": jnp.asarray(g)}}, state, params)
    # After one optimiser step Adam's first moment is (1 - b1) * (clipped gradient).
    mu = _adam_state(state).mu["w"]["kernel"]
    np.testing.assert_allclose(mu / 0.1, expected_clipped, rtol=1e-5, atol=1e-6)


def test_weight_decay_shrinks_kernels_not_biases_or_scales_at_logged_lr():
    wd = 0.1
    opt, schedule = optim.make_optimizer(0.5, 10, 0.4, weight_decay=wd, accumulation_steps=2)
    params = _params()
    state = opt.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    mask = optim.weight_decay_mask(params)
    for _ in range(6):  # optimiser steps, across warmup and decay
        lr = float(optim.current_learning_rate(state, schedule))
        new = params
        for _ in range(2):  # zero gradients: Adam's update is exactly 0, only decay acts
            new, state = _step(opt, zeros, state, new)
        for decays, old_leaf, new_leaf in zip(
            jax.tree.leaves(mask), jax.tree.leaves(params), jax.tree.leaves(new), strict=True
        ):
            expected = old_leaf * (1 - lr * wd) if decays else old_leaf
            np.testing.assert_allclose(new_leaf, expected, rtol=1e-6)
        params = new
    # Kernels/embeddings did shrink overall; biases/scales are untouched.
    assert float(params["layer_0"]["dense"]["kernel"][0, 0]) < 1.0
    assert float(params["embed"]["embedding"][0, 0]) < 2.0
    assert float(params["layer_0"]["ln"]["scale"][0]) == 1.5
    assert float(params["layer_0"]["dense"]["bias"][0]) == 0.5
