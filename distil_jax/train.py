"""The trainer: set-up (mesh, sharded state, restore), the step loop and its cadence.

No maths here: the losses live in `losses`, the step in `steps`. The loop
dispatches one jitted micro-step per batch and only reads values back from the
device every `log_every` optimiser steps (and at checkpoints).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training.dynamic_scale import DynamicScale
from jax.experimental import multihost_utils

from distil_jax import hf, masking, mlm_eval, optim, run_config, sharding, steps
from distil_jax.checkpoint import Checkpoints
from distil_jax.data import loader as data_loader
from distil_jax.data import prepared
from distil_jax.data.preparation import prepare
from distil_jax.metrics_log import MetricsLog
from distil_jax.models import DTYPES, MaskedLM

RUN_FILE = "run.json"


def _abstract_boxed_params(model: MaskedLM):
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return jax.eval_shape(lambda i: model.init(jax.random.key(0), i, i), ids)["params"]


def _with_shardings(abstract, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )


class Run:
    """Everything built from a config before the first step."""

    def __init__(self, config, workdir: str, devices=None):
        run_config.validate(config)
        self.config, self.workdir = config, workdir
        self.mesh = sharding.make_mesh(
            config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices
        )
        self.repl = sharding.replicated(self.mesh)
        sharding.check_batch_divisible(
            config.batch.micro_batch_size, self.mesh, jax.process_count()
        )

        # Models.
        self.teacher_cfg, teacher_np = run_config.load_teacher(config)
        self.tokenizer_dir = run_config.tokenizer_dir(config)
        self.prepared_dir = self._prepare_data()
        summary = prepared.load_summary(self.prepared_dir)
        self.summary = summary
        self.student_cfg, student_np = run_config.build_student(
            config, self.teacher_cfg, teacher_np, summary["vocab_size"]
        )
        distill = config.mode == "distill"
        run_config.check_vocab(
            summary, [self.student_cfg, self.teacher_cfg if distill else None], self.tokenizer_dir
        )
        if distill and self.teacher_cfg.hidden_size != self.student_cfg.hidden_size:
            raise ValueError(
                f"the cosine loss needs equal widths: teacher hidden_size "
                f"{self.teacher_cfg.hidden_size} != student {self.student_cfg.hidden_size}"
            )
        self.student = run_config.make_model(self.student_cfg, config, trainable=True)
        self.teacher = run_config.make_model(self.teacher_cfg, config, False) if distill else None

        # Optimiser, counted in optimiser steps.
        self.accum = int(config.batch.accumulation_steps)
        self.total_steps = run_config.total_optimizer_steps(config, summary["num_sequences"])
        self.optimizer, self.schedule = optim.make_optimizer(
            config.optim.learning_rate,
            self.total_steps,
            config.optim.warmup_fraction,
            b1=config.optim.b1,
            b2=config.optim.b2,
            eps=config.optim.eps,
            weight_decay=config.optim.weight_decay,
            clip_norm=config.optim.clip_norm,
            accumulation_steps=self.accum,
        )

        # Shardings: params from logical axis names, optimiser state alike.
        boxed = _abstract_boxed_params(self.student)
        self.param_shardings = sharding.param_shardings(boxed, self.mesh)
        abstract_params = nn.unbox(boxed)
        abstract_opt = jax.eval_shape(self.optimizer.init, abstract_params)
        opt_shardings = sharding.optimizer_state_shardings(
            self.optimizer, abstract_opt, self.param_shardings, self.mesh
        )
        loss_scale = None
        if config.dtype == "float16":
            loss_scale = DynamicScale(fin_steps=jnp.int32(0), scale=jnp.float32(2.0**15))
        self.state_shardings = steps.TrainState(
            params=self.param_shardings,
            opt_state=opt_shardings,
            step=self.repl,
            loss_scale=jax.tree.map(lambda _: self.repl, loss_scale),
        )
        self.abstract_state = _with_shardings(
            steps.TrainState(
                abstract_params,
                abstract_opt,
                jax.ShapeDtypeStruct((), jnp.int32),
                jax.tree.map(lambda x: jax.ShapeDtypeStruct((), x.dtype), loss_scale),
            ),
            self.state_shardings,
        )
        self._student_np, self._loss_scale = student_np, loss_scale

        if distill:
            self.teacher_shardings = sharding.param_shardings(
                _abstract_boxed_params(self.teacher), self.mesh
            )
            # The frozen teacher's matrices live in the compute dtype: half the memory and
            # no cast every step. Biases and LayerNorm stay float32, as in mixed precision.
            self.teacher_params = jax.device_put(
                run_config.frozen_params(teacher_np, DTYPES[config.dtype]), self.teacher_shardings
            )
        else:
            self.teacher_shardings, self.teacher_params = {}, {}

        counts = run_config.token_counts_or_uniform(
            prepared.load_token_counts(self.prepared_dir), self.student_cfg.vocab_size
        )
        probs = masking.token_probs_from_counts(
            counts, config.masking.mlm_smoothing, special_ids=mlm_eval.special_ids(summary)
        )
        self.token_probs = jax.device_put(jnp.asarray(probs), self.repl)
        self.eval_token_probs = jax.device_put(
            mlm_eval.eval_token_probs(summary, self.student_cfg.vocab_size), self.repl
        )
        mask_id = summary["special_token_ids"]["mask"]
        self.step_cfg = run_config.step_config(config, self.student_cfg, mask_id)
        self.rng = jax.random.key(config.seed)

    def _prepare_data(self) -> str:
        """Process 0 prepares (or reuses) the corpus; the others wait for it."""
        if jax.process_index() == 0:
            prepare(self.config.data, self.tokenizer_dir)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("prepare_data")
        return self.config.data.prepared_dir

    def initial_state(self) -> steps.TrainState:
        if self._student_np is not None:
            params = jax.device_put(self._student_np, self.param_shardings)
        else:
            ids = jnp.zeros((1, 8), jnp.int32)
            init = lambda rng: nn.unbox(self.student.init(rng, ids, ids)["params"])
            params = jax.jit(init, out_shardings=self.param_shardings)(
                jax.random.key(self.config.seed)
            )
        opt_state = jax.jit(self.optimizer.init, out_shardings=self.state_shardings.opt_state)(
            params
        )
        return steps.TrainState(
            params, opt_state, jax.device_put(jnp.int32(0), self.repl), self._loss_scale
        )

    def train_step_fn(self):
        batch_sh = sharding.mlm_batch_shardings(self.mesh)
        step = functools.partial(
            steps.train_step,
            student=self.student,
            teacher=self.teacher,
            optimizer=self.optimizer,
            cfg=self.step_cfg,
        )
        return jax.jit(
            step,
            in_shardings=(
                self.state_shardings,
                self.teacher_shardings,
                batch_sh,
                self.repl,
                self.repl,
            ),
            out_shardings=(self.state_shardings, self.repl),
            donate_argnums=(0,),
        )

    def eval_fn(self, model: MaskedLM, shardings):
        return mlm_eval.make_eval_fn(model, self.step_cfg, shardings, self.mesh)

    def has_held_out(self) -> bool:
        split = self.summary.get("splits", {}).get("validation", {})
        return split.get("sequences", 0) > 0

    def evaluate(self, eval_fn, params) -> dict[str, float]:
        """Held-out MLM loss and accuracy, with the same masks for every model."""
        return mlm_eval.evaluate(
            eval_fn,
            params,
            self.eval_token_probs,
            self.config.data,
            self.prepared_dir,
            self.mesh,
            batch_size=self.config.batch.micro_batch_size,
            max_batches=self.config.eval_batches,
        )

    def write_run_file(self) -> None:
        if jax.process_index() != 0:
            return
        os.makedirs(self.workdir, exist_ok=True)
        with open(os.path.join(self.workdir, RUN_FILE), "w") as f:
            json.dump(
                {
                    "student_config": self.student_cfg.to_hf_dict(),
                    "tokenizer_dir": os.path.abspath(self.tokenizer_dir),
                    "mode": self.config.mode,
                    "total_steps": self.total_steps,
                    "accumulation_steps": self.accum,
                },
                f,
                indent=2,
            )

    def export(self, params, out_dir: str) -> str | None:
        host_params = multihost_utils.process_allgather(params, tiled=True)
        if jax.process_index() != 0:
            return None
        return hf.save_pretrained(self.student_cfg, host_params, out_dir, self.tokenizer_dir)


def _mean_window(window: list[dict]) -> dict[str, float]:
    fetched = jax.device_get(window)
    out = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    out["real_tokens"] = float(np.sum([m["real_tokens"] for m in fetched]))
    return out


class Preempted(Exception):
    """Raised after the checkpoint of a run stopped by SIGTERM has been written."""

    exit_code = 75  # EX_TEMPFAIL: "try again"; launch scripts requeue on it


class PreemptionWatch:
    """SIGTERM (TPU maintenance, SLURM time limit) -> stop at the next optimiser step.

    Multi-process runs use JAX's preemption sync point, so every process agrees
    on the same step; a single process just watches for the signal.
    """

    def __init__(self):
        self._requested = False
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint at the next optimiser step, then exiting")
        self._requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # the preemption service is off in this job
                return False
        return self._requested

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train(config, workdir: str) -> dict:
    """Runs (or resumes) a distillation / pre-training run; returns its final figures.

    Raises Preempted (after saving) when SIGTERM arrives, FloatingPointError on a
    non-finite loss (keeping the last good checkpoint).
    """
    run = Run(config, workdir)
    run.write_run_file()
    ckpt = Checkpoints(workdir, max_to_keep=config.keep_checkpoints)
    loader = data_loader.make_train_loader(
        config.data,
        run.prepared_dir,
        global_batch_size=config.batch.micro_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        seed=config.data.shuffle_seed,
    )

    start = ckpt.latest_step()
    if start is not None:
        state, data_state = ckpt.restore(run.abstract_state)
        if data_state is not None:
            loader.set_state(data_state)
        logging.info("resumed from optimiser step %d of %s", start, ckpt.directory)
    else:
        state, start = run.initial_state(), 0

    step_fn = run.train_step_fn()
    eval_student = run.eval_fn(run.student, run.param_shardings) if run.has_held_out() else None
    log = MetricsLog(workdir, run.total_steps, start)
    results: dict = {"start_step": start, "total_steps": run.total_steps}
    if eval_student is not None and run.teacher is not None and start == 0:
        eval_teacher = run.eval_fn(run.teacher, run.teacher_shardings)
        results["teacher_eval"] = run.evaluate(eval_teacher, run.teacher_params)
        log.write(0, results["teacher_eval"], kind="eval_teacher")

    window, t0 = [], time.perf_counter()
    opt_step, preempted = start, False
    watch = PreemptionWatch()
    try:
        for micro in range(start * run.accum, run.total_steps * run.accum):
            batch = sharding.host_to_global(next(loader), run.mesh)
            state, metrics = step_fn(state, run.teacher_params, batch, run.token_probs, run.rng)
            window.append(metrics)
            if (micro + 1) % run.accum:
                continue
            opt_step = (micro + 1) // run.accum
            last = opt_step == run.total_steps
            preempted = watch.reached(opt_step)
            stop_early = bool(config.steps_per_run) and opt_step - start >= config.steps_per_run
            save = opt_step % config.checkpoint_every == 0 or last or stop_early or preempted
            if opt_step % config.log_every == 0 or save:
                values = _mean_window(window)
                elapsed = time.perf_counter() - t0
                values["tokens_per_s"] = values["real_tokens"] / max(elapsed, 1e-9)
                values["learning_rate"] = float(run.schedule(opt_step - 1))
                values["epoch"] = loader.epoch
                if not math.isfinite(values["loss"]):
                    raise FloatingPointError(
                        f"non-finite loss {values['loss']} at optimiser step {opt_step}; the "
                        f"last good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. "
                        "Lower config.optim.learning_rate or use float32/bfloat16."
                    )
                log.write(opt_step, values)
                log.progress(opt_step, values)
                results["last_train"] = values
                window, t0 = [], time.perf_counter()
            if save:
                ckpt.save(opt_step, state, loader.get_state())
            if eval_student is not None and (
                (config.eval_every and opt_step % config.eval_every == 0) or last
            ):
                results["student_eval"] = run.evaluate(eval_student, state.params)
                log.write(opt_step, results["student_eval"], kind="eval")
            if stop_early or preempted:
                break
    finally:
        watch.close()
        ckpt.close()
        log.close()

    results["final_step"] = opt_step
    if opt_step == run.total_steps:
        export_dir = config.export_dir or os.path.join(workdir, "export")
        results["export_dir"] = run.export(state.params, export_dir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    if preempted:
        raise Preempted(f"stopped by SIGTERM after saving optimiser step {opt_step}")
    return results
