"""Held-out masked-LM evaluation: loss and accuracy over the prepared 'validation' split.

Masking here is uniform over real tokens (the standard MLM accuracy), not the
training's rare-token smoothing, and draws from a fixed seed, so every model
evaluated on the same data sees exactly the same masks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from distil_jax import masking, sharding, steps
from distil_jax.data import loader as data_loader
from distil_jax.models import MaskedLM

EVAL_SEED = 10_000_019


def special_ids(summary: dict) -> list[int]:
    ids = summary["special_token_ids"]
    return [ids[k] for k in ("pad", "cls", "sep", "mask", "unk")]


def eval_token_probs(summary: dict, vocab_size: int) -> jax.Array:
    return masking.uniform_token_probs(vocab_size, special_ids(summary))


def make_eval_fn(model: MaskedLM, step_cfg: steps.StepConfig, param_shardings, mesh):
    batch_sh = sharding.mlm_batch_shardings(mesh)
    repl = sharding.replicated(mesh)
    fn = functools.partial(steps.eval_step, model=model, cfg=step_cfg)
    return jax.jit(fn, in_shardings=(param_shardings, batch_sh, repl, repl), out_shardings=repl)


def evaluate(
    eval_fn,
    params,
    token_probs,
    data_cfg,
    prepared_dir: str,
    mesh,
    *,
    batch_size: int,
    max_batches: int,
) -> dict[str, float]:
    """MLM loss and accuracy of `params` over at most `max_batches` held-out batches."""
    loader = data_loader.make_eval_loader(
        data_cfg,
        prepared_dir,
        global_batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    rng = jax.random.key(EVAL_SEED)
    totals = None
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        out = eval_fn(
            params, sharding.host_to_global(batch, mesh), token_probs, jax.random.fold_in(rng, i)
        )
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = max(float(totals["mlm_count"]), 1.0)
    return {
        "mlm_loss": float(totals["mlm_nll"]) / count,
        "mlm_accuracy": float(totals["mlm_correct"]) / count,
        "mlm_predictions": int(totals["mlm_count"]),
    }
