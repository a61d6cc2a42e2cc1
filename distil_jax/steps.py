"""Pure step functions: one distillation (or MLM pre-training) micro-step, and evaluation.

Everything here is a function of its inputs: the trainer jits `train_step`
once with explicit shardings and donates the state. The teacher's params are an
input (never state): its encoder runs outside `value_and_grad`, without
dropout, and its MLM head only where a loss needs its logits.

One call = one micro-batch; `optax.MultiSteps` inside the state's optimiser
averages k micro-batch gradients and applies one AdamW update every k calls.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.dynamic_scale import DynamicScale

from distil_jax import losses, masking, vocab_losses
from distil_jax.models import MaskedLM

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    params: Any  # the student's (or the pre-trained model's) float32 master weights
    opt_state: Any  # optax.MultiStepsState
    step: Array  # micro-steps taken, int32; seeds masking and dropout
    loss_scale: DynamicScale | None = None  # float16 only: dynamic loss scaling


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static (hashable) settings of a step, built from the run's config."""

    mode: str = "distill"  # "distill" (teacher + student) or "pretrain" (MLM only)
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_mse: float = 0.0
    restrict_ce_to_mask: bool = False
    logits_chunk_len: int = 128  # positions per sequence whose logits exist at once
    fused_vocab_grad: bool = True  # all-positions CE: `vocab_losses` (else remat + autodiff)
    mask_token_id: int = 4
    vocab_size: int = 30522
    mlm_mask_prop: float = 0.15
    word_mask: float = 0.8
    word_keep: float = 0.1
    word_rand: float = 0.1

    @property
    def alphas(self) -> dict[str, float]:
        return {
            "ce": self.alpha_ce,
            "mlm": self.alpha_mlm,
            "cos": self.alpha_cos,
            "mse": self.alpha_mse,
        }


def mask_batch(rng, batch, token_probs, cfg: StepConfig) -> masking.MaskedBatch:
    return masking.mask_tokens(
        rng,
        batch["input_ids"],
        batch["attention_mask"],
        token_probs,
        mask_token_id=cfg.mask_token_id,
        vocab_size=cfg.vocab_size,
        mlm_mask_prop=cfg.mlm_mask_prop,
        word_mask=cfg.word_mask,
        word_keep=cfg.word_keep,
        word_rand=cfg.word_rand,
    )


def gather_masked(predict_mask: Array, labels: Array, mlm_mask_prop: float):
    """Flat indices of the chosen positions, padded to a static bound.

    Returns (indices [K], labels [K] with -100 on padding slots, valid [K]).
    K = ceil(prop * B * L) bounds ceil(prop * real tokens) from above.
    """
    flat_mask = predict_mask.reshape(-1)  # [B*L]
    bound = max(1, math.ceil(mlm_mask_prop * flat_mask.size))
    (idx,) = jnp.nonzero(flat_mask, size=bound, fill_value=0)  # [K]
    valid = jnp.arange(bound) < jnp.sum(flat_mask)  # [K]
    sel_labels = jnp.where(valid, labels.reshape(-1)[idx], losses.IGNORE_INDEX)
    return idx, sel_labels, valid


def _terms_at_masked_positions(
    student_logits_fn, teacher_logits_fn, s_hidden, t_hidden, masked, cfg: StepConfig
):
    """Logits only at the chosen positions: MLM, and CE/MSE when restricted to the mask."""
    idx, labels, valid = gather_masked(masked.predict_mask, masked.labels, cfg.mlm_mask_prop)
    dim = s_hidden.shape[-1]
    s_logits = student_logits_fn(s_hidden.reshape(-1, dim)[idx])  # [K, V]
    terms = {"mlm": losses.masked_lm_loss(s_logits, labels)}
    if cfg.mode == "distill" and (cfg.alpha_ce or cfg.alpha_mse):
        t_logits = teacher_logits_fn(t_hidden.reshape(-1, dim)[idx])  # [K, V]
        if cfg.alpha_ce:
            terms["ce"] = losses.soft_cross_entropy(s_logits, t_logits, valid, cfg.temperature)
        if cfg.alpha_mse:
            terms["mse"] = losses.mse_loss(s_logits, t_logits, valid)
    return terms


def _terms_at_all_positions(
    student_logits_fn,
    teacher_logits_fn,
    s_hidden,
    t_hidden,
    attention_mask,
    labels,
    cfg: StepConfig,
):
    """CE (and MSE, MLM) over every real token, in rematerialised chunks, by autodiff.

    Each chunk holds [B, Lc, V] student and teacher logits; the scan body is
    rematerialised so the backward pass recomputes a chunk (both projections)
    instead of keeping every chunk's logits alive. `vocab_losses` does the same
    work without the recomputation; this path is kept as its reference.
    """
    split = lambda x: vocab_losses.split_into_chunks(x, cfg.logits_chunk_len)

    @jax.checkpoint
    def body(carry, xs):
        s_h, t_h, w, lab = xs
        s_logits = student_logits_fn(s_h)  # [B, Lc, V]
        t_logits = jax.lax.stop_gradient(teacher_logits_fn(t_h))  # [B, Lc, V]
        out = {"mlm": losses.masked_lm_loss(s_logits, lab)}
        if cfg.alpha_ce:
            out["ce"] = losses.soft_cross_entropy(s_logits, t_logits, w, cfg.temperature)
        if cfg.alpha_mse:
            out["mse"] = losses.mse_loss(s_logits, t_logits, w)
        return jax.tree.map(jnp.add, carry, out), None

    zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    init = {"mlm": zero}
    init.update({k: zero for k, a in (("ce", cfg.alpha_ce), ("mse", cfg.alpha_mse)) if a})
    xs = (split(s_hidden), split(t_hidden), split(attention_mask), split(labels))
    terms, _ = jax.lax.scan(body, init, xs)
    return terms


def _fused_terms_at_all_positions(
    student_params, teacher_params, student, teacher, s_hidden, t_hidden, attention_mask,
    labels, cfg: StepConfig,
):  # fmt: skip
    """CE (and MSE, MLM) over every real token through `vocab_losses`: (terms, grad carrier)."""
    head = lambda model, params, h: model.apply({"params": params}, h, method="head_features")
    tied = lambda p: (p["embeddings"]["word_embeddings"]["embedding"], p["head_bias"])  # [V,D],[V]
    return vocab_losses.vocab_losses(
        head(student, student_params, s_hidden),  # [B, L, D]
        *tied(student_params),
        head(teacher, teacher_params, t_hidden),  # [B, L, D]
        *tied(teacher_params),
        attention_mask,
        labels,
        alphas=cfg.alphas,
        temperature=cfg.temperature,
        chunk_len=cfg.logits_chunk_len,
        dtype=student.dtype,
    )


def student_loss(
    student_params,
    teacher_params,
    student: MaskedLM,
    teacher: MaskedLM | None,
    masked: masking.MaskedBatch,
    attention_mask,
    t_hidden,
    dropout_rng,
    cfg: StepConfig,
):
    """The micro-batch's loss for the student's params, and its metrics (each loss term)."""
    s_hidden = student.apply(
        {"params": student_params},
        masked.input_ids,
        attention_mask,
        deterministic=False,
        compute_logits=False,
        rngs={"dropout": dropout_rng},
    ).last_hidden_state  # [B, L, D]
    s_logits_fn = lambda h: student.apply({"params": student_params}, h, method="mlm_logits")
    t_logits_fn = None
    if teacher is not None:
        t_logits_fn = lambda h: teacher.apply({"params": teacher_params}, h, method="mlm_logits")
    grad_carrier = 0.0  # gradient of terms whose sums carry none (value 0)
    if cfg.mode == "pretrain" or cfg.restrict_ce_to_mask or not (cfg.alpha_ce or cfg.alpha_mse):
        terms = _terms_at_masked_positions(
            s_logits_fn, t_logits_fn, s_hidden, t_hidden, masked, cfg
        )
    elif cfg.fused_vocab_grad:
        terms, grad_carrier = _fused_terms_at_all_positions(
            student_params, teacher_params, student, teacher, s_hidden, t_hidden,
            attention_mask, masked.labels, cfg,
        )  # fmt: skip
    else:
        terms = _terms_at_all_positions(
            s_logits_fn, t_logits_fn, s_hidden, t_hidden, attention_mask, masked.labels, cfg
        )
    if cfg.mode == "distill" and cfg.alpha_cos:
        terms["cos"] = losses.cosine_loss(s_hidden, t_hidden, attention_mask)
    loss, metrics = losses.combine(terms, cfg.alphas)
    return loss + grad_carrier, metrics


def train_step(
    state: TrainState,
    teacher_params,
    batch: dict[str, Array],
    token_probs: Array,
    rng: Array,
    *,
    student: MaskedLM,
    teacher: MaskedLM | None,
    optimizer: optax.GradientTransformation,
    cfg: StepConfig,
):
    """One micro-step. batch: input_ids, attention_mask [B, L]. Returns (state, metrics)."""
    step_rng = jax.random.fold_in(rng, state.step)
    mask_rng, dropout_rng = jax.random.split(step_rng)
    attention_mask = batch["attention_mask"]
    masked = mask_batch(mask_rng, batch, token_probs, cfg)

    t_hidden = None
    if cfg.mode == "distill":
        t_hidden = teacher.apply(
            {"params": teacher_params},
            masked.input_ids,
            attention_mask,
            deterministic=True,
            compute_logits=False,
        ).last_hidden_state  # [B, L, D]
        t_hidden = jax.lax.stop_gradient(t_hidden)

    def loss_fn(params):
        return student_loss(
            params, teacher_params, student, teacher, masked, attention_mask, t_hidden,
            dropout_rng, cfg,
        )  # fmt: skip

    if state.loss_scale is not None:
        grad_fn = state.loss_scale.value_and_grad(loss_fn, has_aux=True)
        loss_scale, finite, (_, metrics), grads = grad_fn(state.params)
    else:
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        loss_scale, finite = None, jnp.array(True)

    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if state.loss_scale is not None:
        # An overflowed float16 micro-step is dropped whole: params, moments and
        # accumulation counters stay as they were; the scale has already shrunk.
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    new_state = state.replace(
        params=params, opt_state=opt_state, step=state.step + 1, loss_scale=loss_scale
    )
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["real_tokens"] = jnp.sum(attention_mask).astype(jnp.float32)
    metrics["masked_tokens"] = jnp.sum(masked.predict_mask).astype(jnp.float32)
    metrics["finite"] = finite.astype(jnp.float32)
    if loss_scale is not None:
        metrics["loss_scale"] = loss_scale.scale
    return new_state, metrics


def eval_step(
    params,
    batch: dict[str, Array],
    token_probs: Array,
    rng: Array,
    *,
    model: MaskedLM,
    cfg: StepConfig,
):
    """Held-out MLM sums of one batch: (nll sum, correct, count). Same masking as training."""
    masked = mask_batch(rng, batch, token_probs, cfg)
    hidden = model.apply(
        {"params": params}, masked.input_ids, batch["attention_mask"], compute_logits=False
    ).last_hidden_state
    idx, labels, _ = gather_masked(masked.predict_mask, masked.labels, cfg.mlm_mask_prop)
    logits = model.apply(
        {"params": params}, hidden.reshape(-1, hidden.shape[-1])[idx], method="mlm_logits"
    )  # [K, V]
    nll, count = losses.masked_lm_loss(logits, labels)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) & (labels != losses.IGNORE_INDEX))
    return {"mlm_nll": nll, "mlm_correct": correct.astype(jnp.float32), "mlm_count": count}
