"""One fine-tuning run (a learning rate, a number of epochs, a seed) and prediction.

The same machinery as distillation: a device mesh, parameter shardings from
the logical axis names, `optim.make_optimizer` (AdamW, warmup + linear decay,
clipping), and a step jitted once per run with explicit shardings and the
state donated. The loop reads the loss back only every `log_every` steps.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from distil_jax import optim, sharding
from distil_jax.eval import features as feats
from distil_jax.eval.heads import abstract_boxed_params, make_task_model
from distil_jax.eval.hf_heads import LoadedTaskModel, draw_fresh
from distil_jax.eval.steps import FinetuneState, predict_step, train_step
from distil_jax.models import DTYPES


@dataclasses.dataclass(frozen=True)
class Hyper:
    """What varies between the runs of one (model, task)."""

    learning_rate: float
    epochs: float
    seed: int


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What stays fixed between them."""

    batch_size: int = 32
    eval_batch_size: int = 128
    warmup_fraction: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    buckets: tuple[int, ...] = (128,)  # allowed batch lengths (see features.bucket_lengths)
    dtype: str = "float32"
    log_every: int = 50
    progress: bool = True
    fast_compile: bool = False  # XLA backend optimisations off (see `compiler_options`)

    @property
    def compiler_options(self) -> dict | None:
        """Fast compiles at the cost of slower steps: on CPU a tiny model's step compiles
        ~3x faster; worth it in tests and quick checks, never in a real sweep."""
        if not self.fast_compile:
            return None
        return {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class Finetuner:
    """Built once per (model, task): the model, its shardings and the jitted predictor."""

    def __init__(self, loaded: LoadedTaskModel, mesh, settings: TrainSettings):
        if settings.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {settings.dtype!r}")
        self.loaded, self.mesh, self.settings = loaded, mesh, settings
        for name, size in (("batch", settings.batch_size), ("eval", settings.eval_batch_size)):
            if size < 1:
                raise ValueError(f"the {name} batch size must be >= 1, got {size}")
            sharding.check_batch_divisible(size, mesh, jax.process_count())
        self.model = make_task_model(loaded.cfg, loaded.head, DTYPES[settings.dtype])
        self.param_shardings = sharding.param_shardings(abstract_boxed_params(self.model), mesh)
        self.repl = sharding.replicated(mesh)
        self._predict = {}

    # ------------------------------------------------------------------ shardings

    def _batch_shardings(self, batch: dict[str, np.ndarray]) -> dict:
        return {k: sharding.batch_sharding(self.mesh, v.ndim) for k, v in batch.items()}

    def _global(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Every process builds the same global batch [B, ...] and contributes its rows
        [B/P, ...] (the checks in __init__ make B divisible by P)."""
        p, n = jax.process_index(), jax.process_count()
        rows = len(batch["weight"]) // n
        local = {k: v[p * rows : (p + 1) * rows] for k, v in batch.items()}
        return sharding.host_to_global(local, self.mesh)

    # ------------------------------------------------------------------ training

    def train(self, data: feats.Encoded, hyper: Hyper, desc: str = "") -> tuple[dict, dict]:
        """Fine-tunes from the loaded weights (head drawn with `hyper.seed`).

        Returns (params on device, {"final_loss", "steps"}).
        """
        s = self.settings
        steps_per_epoch = feats.num_batches(len(data), s.batch_size)
        total = max(1, math.ceil(hyper.epochs * steps_per_epoch))
        optimizer, _ = optim.make_optimizer(
            hyper.learning_rate,
            total,
            s.warmup_fraction,
            b1=s.b1,
            b2=s.b2,
            eps=s.eps,
            weight_decay=s.weight_decay,
            clip_norm=s.clip_norm,
        )
        params = jax.device_put(draw_fresh(self.loaded, hyper.seed), self.param_shardings)
        abstract_opt = jax.eval_shape(optimizer.init, params)
        opt_shardings = sharding.optimizer_state_shardings(
            optimizer, abstract_opt, self.param_shardings, self.mesh
        )
        opt_state = jax.jit(
            optimizer.init, out_shardings=opt_shardings, compiler_options=s.compiler_options
        )(params)
        state_shardings = FinetuneState(self.param_shardings, opt_shardings, self.repl)
        state = FinetuneState(params, opt_state, jax.device_put(jnp.int32(0), self.repl))

        sample = next(feats.batches(data, s.batch_size, list(s.buckets)))
        step_fn = jax.jit(
            functools.partial(train_step, model=self.model, optimizer=optimizer),
            in_shardings=(state_shardings, self._batch_shardings(sample), self.repl),
            out_shardings=(state_shardings, self.repl),
            donate_argnums=(0,),
            compiler_options=s.compiler_options,
        )
        rng = jax.device_put(jax.random.key(hyper.seed), self.repl)
        bar = tqdm(total=total, desc=desc or "finetune", leave=False, disable=not s.progress)
        step, pending, last_loss = 0, None, float("nan")
        try:
            for epoch in range(math.ceil(hyper.epochs)):
                order = np.random.default_rng([hyper.seed, epoch]).permutation(len(data))
                for batch in feats.batches(data, s.batch_size, list(s.buckets), order):
                    if step >= total:
                        break
                    state, metrics = step_fn(state, self._global(batch), rng)
                    step += 1
                    if step % s.log_every == 0 or step == total:
                        # Read the previous window's loss: the device is not waited on.
                        if pending is not None:
                            last_loss = self._check_finite(pending, step)
                            bar.set_postfix(loss=f"{last_loss:.4f}", epoch=epoch, refresh=False)
                        pending = metrics["loss"]
                    bar.update(1)
        finally:
            bar.close()
        final_loss = self._check_finite(pending, step) if pending is not None else last_loss
        return state.params, {"final_loss": final_loss, "steps": step}

    @staticmethod
    def _check_finite(loss, step: int) -> float:
        value = float(jax.device_get(loss))
        if not math.isfinite(value):
            raise FloatingPointError(
                f"non-finite fine-tuning loss {value} near step {step}: lower the learning rate "
                "or use float32"
            )
        return value

    # ------------------------------------------------------------------ prediction

    def predict(self, params, data: feats.Encoded):
        """Model outputs for every row, in row order: [N, C], or (start, end) [N, L] each."""
        s = self.settings
        order = np.argsort(data.lengths, kind="stable")  # similar lengths share a bucket
        # Span logits of each batch are as long as its bucket: pad to the full width.
        width = data.arrays["input_ids"].shape[1] if self.loaded.head.kind == "span" else None
        outputs = []
        for batch in feats.batches(data, s.eval_batch_size, list(s.buckets), order):
            fn = self._predict_fn(batch)
            out = jax.device_get(fn(params, self._global(batch)))
            real = int(batch["weight"].sum())  # the filled rows of the last batch go
            outputs.append(
                jax.tree.map(lambda x, n=real: _pad_width(np.asarray(x)[:n], width), out)
            )
        stacked = jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return jax.tree.map(lambda x: x[inverse], stacked)

    def _predict_fn(self, batch):
        keys = tuple(sorted(batch))
        if keys not in self._predict:
            self._predict[keys] = jax.jit(
                functools.partial(predict_step, model=self.model),
                in_shardings=(self.param_shardings, self._batch_shardings(batch)),
                out_shardings=self.repl,
                compiler_options=self.settings.compiler_options,
            )
        return self._predict[keys]


def _pad_width(x: np.ndarray, width: int | None) -> np.ndarray:
    """Span logits [B, l] -> [B, width], filled with a very negative logit (None: as is)."""
    if width is None or x.shape[1] == width:
        return x
    return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-1e9)
