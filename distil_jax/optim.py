"""Optimiser (DESIGN.md §1.4): AdamW, warmup + linear decay, clip, accumulation.

Gradient accumulation is ``optax.MultiSteps`` around the whole chain, so the
clip and the schedule see the ACCUMULATED gradient and advance once per
optimiser step, i.e. once every ``accumulation_steps`` micro-batches. All step
counts here are optimiser steps.
"""

import math

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(
    peak_lr: float, total_steps: int, warmup_fraction: float
) -> optax.Schedule:
    """Linear warmup 0 -> peak over ceil(warmup_fraction * total_steps), then linear to 0.

    The value is 0 at step 0, ``peak_lr`` at the end of warmup and 0 from
    ``total_steps`` on. Steps are optimiser steps.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1], got {warmup_fraction}")
    # round() first so float noise (0.05 * 300 = 15.000000000000002) does not add a step.
    warmup_steps = math.ceil(round(warmup_fraction * total_steps, 6))
    decay_steps = total_steps - warmup_steps

    def schedule(count):
        step = jnp.asarray(count, jnp.float32)
        warmup = step / max(warmup_steps, 1)
        decay = (total_steps - step) / max(decay_steps, 1)
        # clip keeps the value in [0, peak] past total_steps or if count < 0.
        return peak_lr * jnp.clip(jnp.where(step < warmup_steps, warmup, decay), 0.0, 1.0)

    return schedule


def _key_name(entry) -> str | None:
    """The name of one pytree path entry (dict key or attribute), if it has one."""
    for attr in ("key", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return None


def weight_decay_mask(params):
    """Pytree of bools: True (decay) everywhere except leaves named 'bias' or 'scale'.

    Flax names LayerNorm parameters 'scale'/'bias' and Dense biases 'bias'; the
    reference spares exactly biases and LayerNorm weights from weight decay.
    """

    def decays(path, _leaf) -> bool:
        return not path or _key_name(path[-1]) not in ("bias", "scale")

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    peak_lr: float,
    total_steps: int,
    warmup_fraction: float,
    b1: float = 0.9,
    b2: float = 0.98,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    clip_norm: float = 5.0,
    accumulation_steps: int = 1,
) -> tuple[optax.MultiSteps, optax.Schedule]:
    """AdamW with global-norm clipping, wrapped in MultiSteps for accumulation.

    Args:
      total_steps: number of OPTIMISER steps (micro-batches / accumulation_steps).
      accumulation_steps: micro-batches averaged into one optimiser step.

    Returns:
      ``(optimizer, schedule)``: the ``optax.MultiSteps`` object (``init``,
      ``update``, ``has_updated``) and the learning-rate schedule it uses.
    """
    if accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
    schedule = learning_rate_schedule(peak_lr, total_steps, warmup_fraction)
    inner = optax.chain(
        # Inside MultiSteps, so it clips the averaged gradient of the k micro-batches.
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(
            learning_rate=schedule,
            b1=b1,
            b2=b2,
            eps=eps,
            weight_decay=weight_decay,
            mask=weight_decay_mask,
        ),
    )
    return optax.MultiSteps(inner, every_k_schedule=accumulation_steps), schedule


def current_learning_rate(opt_state: optax.MultiStepsState, schedule: optax.Schedule):
    """The learning rate the NEXT optimiser update will use (for logging).

    ``gradient_step`` counts completed optimiser steps, which is also the count
    the inner schedule is evaluated at on the next emitted update.
    """
    return schedule(opt_state.gradient_step)
