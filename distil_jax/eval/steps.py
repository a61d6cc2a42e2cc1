"""Pure fine-tuning and prediction steps, jitted once per run by `eval.trainer`.

Losses are those of transformers' heads: cross-entropy (classification), MSE
(regression), and the mean of the start and end cross-entropies (spans).
Each row carries a weight (0 for the rows that fill the last batch), and a
loss is the weighted mean over the batch.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from distil_jax.eval.heads import TaskModel

Array = jax.Array


@flax.struct.dataclass
class FinetuneState:
    params: Any  # float32 weights of encoder + head
    opt_state: Any  # optax.MultiStepsState
    step: Array  # micro-steps taken, int32; seeds dropout


def _weighted_mean(values: Array, weight: Array) -> Array:  # [B], [B] -> []
    return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def task_loss(outputs, batch: dict[str, Array], kind: str) -> Array:
    weight = batch["weight"]  # [B]
    if kind == "classification":
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["labels"])  # [B]
        return _weighted_mean(ce, weight)
    if kind == "regression":
        err = outputs[:, 0] - batch["labels"].astype(jnp.float32)  # [B]
        return _weighted_mean(err * err, weight)
    start_logits, end_logits = outputs  # [B, L] each
    start = optax.softmax_cross_entropy_with_integer_labels(start_logits, batch["start_positions"])
    end = optax.softmax_cross_entropy_with_integer_labels(end_logits, batch["end_positions"])
    return _weighted_mean((start + end) / 2, weight)


def _inputs(batch):
    return batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")


def train_step(
    state: FinetuneState,
    batch: dict[str, Array],
    rng: Array,
    *,
    model: TaskModel,
    optimizer: optax.GradientTransformation,
):
    """One micro-step on a batch of [B, L] inputs; returns (state, {loss, grad_norm})."""
    dropout_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        outputs = model.apply(
            {"params": params}, *_inputs(batch), deterministic=False, rngs={"dropout": dropout_rng}
        )
        return task_loss(outputs, batch, model.head.kind)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}


def predict_step(params, batch: dict[str, Array], *, model: TaskModel):
    """Logits without dropout: [B, C], or (start [B, L], end [B, L]) for spans."""
    return model.apply({"params": params}, *_inputs(batch), deterministic=True)
