"""Throughput of our jitted distillation step: teacher forward + student forward/backward + AdamW.

    python benchmarks/train_throughput.py                      # BERT-base -> 6 layers, L128, B32
    python benchmarks/train_throughput.py --seq_len 128,512 --batch 64 --dtype bfloat16
    python benchmarks/train_throughput.py --teacher_layers 2 --student_layers 1 --hidden 128 \
        --heads 2 --ffn 512 --vocab 1000 --seq_len 128 --batch 8     # small CPU shape

The step is `distil_jax.steps.train_step` jitted as the trainer jits it (state
donated, float32 master weights, compute in --dtype), on one device, with the
masking inside the step. Compilation and --warmup steps are excluded; each of
the --steps timed steps is dispatched and then waited for with
`jax.block_until_ready`, and the median is reported (with min and max).

Reported: step time, sequences/s, tokens/s (B·L, every token real), achieved
TFLOP/s, MFU, peak device memory (`memory_stats()['peak_bytes_in_use']`, n/a on
CPU; the counter never resets, so in a sweep a point's figure is the maximum so
far), XLA's own memory estimate for the step, and XLA's FLOP count of the
compiled step (which includes recomputation and elementwise work, but counts a
loop body once) next to ours. --xla_cost prints only XLA's count of the traced
step, from shapes alone (no weights, no compilation: BERT-base works on a laptop).

FLOPs per micro-step (model FLOPs, 2 per multiply-add; B sequences of L tokens,
hidden D, FFN width F, vocabulary V, teacher/student depths n_t/n_s):

    enc(n)  = B·L · n · [ 2·(4·D² + 2·D·F)  +  4·L·D ]   # projections + FFN, then Q·Kᵀ and P·V
    head(P) = P · 2·(D² + D·V)                          # MLM transform + tied vocab projection
    FLOPs   = [enc(n_t) + head(P)]  +  3 · [enc(n_s) + head(P)]
              teacher forward         student forward + backward (backward ≈ 2× forward)

P = positions whose logits the loss needs: B·L when the CE runs over every real
token (the DistilBERT default), ceil(0.15·B·L) with --restrict_ce_to_mask.
Embedding lookups, LayerNorm, softmax, GELU, biases, losses and the optimiser
are left out (under 1% at BERT-base), and so is rematerialised work.

MFU = FLOPs / step time / peak, with the peak the device's dense bf16
tensor-core rate (H100 SXM and H200 989 TFLOP/s, A100 312, V100 125 fp16;
bench_common.PEAK_FLOPS) or --peak_tflops. On CPU it is n/a unless given.
The PyTorch reference (torch_reference.py) is counted with the same formula.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as common  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax.training.dynamic_scale import DynamicScale  # noqa: E402

from distil_jax import losses, masking, optim, steps  # noqa: E402
from distil_jax.models import DTYPES, MaskedLM  # noqa: E402

IMPL = "jax"


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{d.device_kind}"


def step_config(shape: common.Shape, opts) -> steps.StepConfig:
    """The DistilBERT recipe's loss settings (a_ce 5, a_mlm 2, a_cos 1, T 2)."""
    return steps.StepConfig(
        temperature=2.0,
        alpha_ce=5.0,
        alpha_mlm=2.0,
        alpha_cos=1.0,
        restrict_ce_to_mask=bool(opts.restrict_ce_to_mask),
        logits_chunk_len=int(opts.logits_chunk_len),
        fused_vocab_grad=not opts.no_fused_vocab_grad,
        mask_token_id=common.special_ids(shape.vocab)["mask"],
        vocab_size=shape.vocab,
    )


def _cost_flops(executable) -> float | None:
    """XLA's FLOP count of a lowered or compiled step (a dict, or a list of one in older jax)."""
    try:
        cost = executable.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None else None


def _memory_estimate(compiled) -> int | None:
    """Arguments + outputs - donated aliases + temporaries, from XLA's buffer assignment."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
    except Exception:
        return None


def peak_memory() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def build_step(shape: common.Shape, opts):
    """(jitted step, student, teacher, optimizer) as the trainer builds them, one device."""
    teacher_cfg, student_cfg = common.model_configs(shape)
    if opts.no_attention_dropout:
        student_cfg = student_cfg.replace(attention_dropout=0.0)
    dtype = DTYPES[shape.dtype]
    attention = None if opts.attention == "default" else opts.attention
    student = MaskedLM(
        student_cfg, dtype, jnp.float32, remat=opts.remat, attention_implementation=attention
    )
    teacher = MaskedLM(teacher_cfg, dtype, jnp.float32, attention_implementation=attention)
    # A long schedule: the benchmark's few steps stay in warmup, lr > 0 after step 0.
    optimizer, _ = optim.make_optimizer(
        5e-4, total_steps=100_000, warmup_fraction=0.05, accumulation_steps=opts.accumulation
    )
    step = functools.partial(
        steps.train_step,
        student=student,
        teacher=teacher,
        optimizer=optimizer,
        cfg=step_config(shape, opts),
    )
    jitted = jax.jit(step, donate_argnums=() if opts.no_donate else (0,))
    return jitted, student, teacher, optimizer


def _loss_scale(shape: common.Shape):
    if shape.dtype != "float16":
        return None
    # As the trainer: float16 steps run with dynamic loss scaling.
    return DynamicScale(fin_steps=jnp.int32(0), scale=jnp.float32(2.0**15))


def lowered_step(shape: common.Shape, opts):
    """The step lowered from shapes alone (nothing initialised): `.cost_analysis()` is
    XLA's FLOP count of the step as traced, before optimisation; `.compile()` gives
    its memory estimate on this machine's backend.

    Nothing is initialised, so it runs for BERT-base on a laptop. The
    excess over our model FLOPs is recomputation (--remat; the logits chunks with
    --no_fused_vocab_grad) plus elementwise work (~1%). A scan body counts once, so it is only
    complete when there is one logits chunk (--logits_chunk_len >= L).
    """
    jitted, student, teacher, optimizer = build_step(shape, opts)
    ids = jax.ShapeDtypeStruct((shape.batch, shape.seq_len), jnp.int32)

    def abstract(model):
        init = lambda i: nn.unbox(model.init(jax.random.key(0), i, i))["params"]
        return jax.eval_shape(init, ids)

    params = abstract(student)
    scale = jax.eval_shape(lambda: _loss_scale(shape))
    state = steps.TrainState(
        params,
        jax.eval_shape(optimizer.init, params),
        jax.ShapeDtypeStruct((), jnp.int32),
        scale,
    )
    probs = jax.ShapeDtypeStruct((shape.vocab,), jnp.float32)
    batch = {"input_ids": ids, "attention_mask": ids}
    return jitted.lower(state, abstract(teacher), batch, probs, jax.random.key(0))


class JaxStep:
    """Our step, compiled once for one shape; `time_steps` may be called repeatedly."""

    impl = IMPL

    def __init__(self, shape: common.Shape, opts, weights=None, seed: int = 0):
        self.shape, self.opts = shape, opts
        jitted, _, _, optimizer = build_step(shape, opts)
        teacher_np, student_np = weights if weights is not None else common.make_weights(shape)
        self.teacher_params = jax.device_put(teacher_np)
        params = jax.device_put(student_np)
        self.state = steps.TrainState(
            params, jax.jit(optimizer.init)(params), jnp.int32(0), _loss_scale(shape)
        )
        ids, mask = common.make_batch(shape, seed)
        self.batch = {"input_ids": jax.device_put(ids), "attention_mask": jax.device_put(mask)}
        self.token_probs = jax.device_put(common.token_probs(shape))
        self.rng = jax.random.key(seed)
        start = time.perf_counter()
        self.compiled = jitted.lower(*self._args()).compile()
        self.compile_s = time.perf_counter() - start
        self.metrics = None

    def _args(self):
        return self.state, self.teacher_params, self.batch, self.token_probs, self.rng

    def time_steps(self, n: int) -> list[float]:
        """Runs n steps; the wall time of each, dispatch to results ready."""
        times = []
        for _ in range(n):
            start = time.perf_counter()
            self.state, self.metrics = self.compiled(*self._args())
            jax.block_until_ready((self.state, self.metrics))
            times.append(time.perf_counter() - start)
        return times

    def losses(self) -> dict[str, float]:
        m = jax.device_get(self.metrics)
        keys = ("loss", "loss_ce", "loss_mlm", "loss_cos")
        return {k.replace("loss_", ""): float(m[k]) for k in keys if k in m}

    def result(self, times: list[float]) -> dict:
        return common.summarise(
            IMPL,
            device_name(),
            self.shape,
            times,
            common.step_flops(self.shape, self.opts.restrict_ce_to_mask),
            common.peak_flops(jax.devices()[0].device_kind, self.opts.peak_tflops),
            peak_memory(),
            self.losses(),
            compile_s=self.compile_s,
            xla_flops_per_step=_cost_flops(self.compiled),
            xla_mem_estimate_bytes=_memory_estimate(self.compiled),
        )


def benchmark(shape: common.Shape, opts, weights=None) -> dict:
    """Compile, warm up, time: the result dict of one shape (an error dict on OOM)."""
    try:
        runner = JaxStep(shape, opts, weights, seed=opts.seed)
        runner.time_steps(opts.warmup)
        return runner.result(runner.time_steps(opts.steps))
    except Exception as e:
        if not common.is_oom(e):
            raise
        return common.error_result(IMPL, device_name(), shape, "OOM")


def options_with(opts, extra: str) -> argparse.Namespace:
    """`opts` with the [jax]/[torch] options given in the string `extra` set on top."""
    parser = argparse.ArgumentParser(prog="--ab")
    common.add_option_args(parser)
    # argparse fills in a default only where the namespace lacks the attribute, so
    # parsing into a copy of `opts` changes exactly the options `extra` names.
    variant = parser.parse_args(shlex.split(extra), namespace=argparse.Namespace(**vars(opts)))
    if variant == opts:
        raise SystemExit(f"--ab {extra!r} changes no option: nothing to compare")
    return variant


def ab_benchmark(shape: common.Shape, opts) -> tuple[dict, dict]:
    """A = the options given, B = those plus --ab: same weights and batch, alternating rounds.

    Both steps stay compiled in one process and take turns (A, B, A, B, ...), so a
    slow spell of a shared machine lands on both; the medians are of the pooled steps.
    """
    weights = common.make_weights(shape, opts.seed)
    variants = {"A": opts, "B": options_with(opts, opts.ab)}
    runners = {k: JaxStep(shape, o, weights, seed=opts.seed) for k, o in variants.items()}
    for r in runners.values():
        r.time_steps(opts.warmup)
    per_round = max(1, opts.steps // opts.rounds)
    times = {k: [] for k in runners}
    for _ in range(opts.rounds):
        for k, r in runners.items():
            times[k] += r.time_steps(per_round)
    results = {k: r.result(times[k]) for k, r in runners.items()}
    results["A"]["variant"], results["B"]["variant"] = "A", f"B: {opts.ab}"
    return results["A"], results["B"]


# ---------------------------------------------------------------------------- loss agreement


def our_losses(shape: common.Shape, weights, input_ids, attention_mask, labels, opts):
    """The loss terms of our step on a given masked batch, float32, dropout off.

    The same code path as `train_step` (teacher forward, then `steps.student_loss`),
    minus the masking, so a masked batch made once can be fed to both
    implementations. Matmuls at full float32 precision: the GPU default (TF32)
    would differ from PyTorch's default by more than the 1e-4 the check allows.
    """
    teacher_cfg, student_cfg = common.model_configs(shape)
    # Rate-0 dropout is the identity, so the student's training-mode forward is deterministic.
    student = MaskedLM(student_cfg.replace(hidden_dropout=0.0, attention_dropout=0.0))
    teacher = MaskedLM(teacher_cfg)
    cfg = step_config(shape, opts)

    @jax.jit
    def run(teacher_params, student_params, ids, mask, labels):
        masked = masking.MaskedBatch(ids, labels, labels != losses.IGNORE_INDEX)
        t_hidden = teacher.apply(
            {"params": teacher_params}, ids, mask, deterministic=True, compute_logits=False
        ).last_hidden_state
        return steps.student_loss(
            student_params, teacher_params, student, teacher, masked, mask, t_hidden,
            jax.random.key(0), cfg,
        )[1]  # fmt: skip

    with jax.default_matmul_precision("highest"):
        m = jax.device_get(run(weights[0], weights[1], input_ids, attention_mask, labels))
    return {k.replace("loss_", ""): float(v) for k, v in m.items()}


def mask_once(shape: common.Shape, input_ids, attention_mask, seed: int = 0):
    """One masked batch from our masking under a fixed key: (ids, labels), numpy int32."""
    import numpy as np

    masked = masking.mask_tokens(
        jax.random.key(seed),
        jnp.asarray(input_ids),
        jnp.asarray(attention_mask),
        jnp.asarray(common.token_probs(shape)),
        mask_token_id=common.special_ids(shape.vocab)["mask"],
        vocab_size=shape.vocab,
    )
    return np.asarray(masked.input_ids, np.int32), np.asarray(masked.labels, np.int32)


# ---------------------------------------------------------------------------- main


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_shape_args(parser)
    common.add_option_args(parser)
    parser.add_argument(
        "--inference", action="store_true", help="also time student vs teacher forward"
    )
    parser.add_argument(
        "--ab",
        metavar="OPTIONS",
        help="A/B one change: time the step with these extra options (e.g. "
        "--ab='--no_fused_vocab_grad') against the step without, alternating, in one process",
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="--ab: alternating rounds of --steps/--rounds"
    )
    parser.add_argument(
        "--xla_cost",
        action="store_true",
        help="only print XLA's FLOP count of the traced step vs ours (no init, no run)",
    )
    parser.add_argument(
        "--xla_memory",
        action="store_true",
        help="with --xla_cost: also compile (for this machine's backend) and print XLA's "
        "memory estimate of the step",
    )
    return parser.parse_args(argv)


def _gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    accelerator = jax.default_backend() != "cpu"
    results = []
    print(f"device {device_name()}  jax {jax.__version__}")
    for shape in common.shapes_from_args(args, accelerator):
        model_flops = common.step_flops(shape, args.restrict_ce_to_mask)["total"]
        if args.xla_cost:
            lowered = lowered_step(shape, args)
            xla = _cost_flops(lowered) or float("nan")  # nan: no cost analysis here
            chunks = -(-shape.seq_len // args.logits_chunk_len)
            note = "" if chunks == 1 else f" (a scan body counts once: {chunks} logits chunks)"
            memory = ""
            if args.xla_memory:
                memory = f" | XLA memory estimate {_gib(_memory_estimate(lowered.compile()))}"
            print(
                f"{IMPL:<6} {shape.label():<44} | model {model_flops / 1e12:.3f} TFLOP/step"
                f" | XLA (traced) {xla / model_flops:.3f}x of it{note}{memory}",
                flush=True,
            )
            continue
        if args.ab:
            a, b = ab_benchmark(shape, args)
            results += [a, b]
            for r in (a, b):
                print(f"{r['variant'][0]}: " + common.report_line(r), flush=True)
            print(
                f"{'A/B':<9}{shape.label():<44} | B ({args.ab}) runs at "
                f"{a['step_time_s'] / b['step_time_s']:.3f}x A's speed",
                flush=True,
            )
            continue
        r = benchmark(shape, args)
        results.append(r)
        print(common.report_line(r), flush=True)
        if "error" not in r:
            xla = r["xla_flops_per_step"]
            ratio = "n/a" if not xla else f"{xla / model_flops:.2f}x"
            print(
                f"{'':6} compile {r['compile_s']:.1f} s | XLA (compiled, loop bodies once) "
                f"counts {ratio} our model FLOPs | XLA memory estimate "
                f"{_gib(r['xla_mem_estimate_bytes'])}"
            )
    if args.inference:
        import inference_speed

        for shape in common.shapes_from_args(args, accelerator):
            for r in inference_speed.benchmark(shape, ("jax",), args.steps, args.warmup):
                results.append(r)
                print(inference_speed.report_line(r), flush=True)
    common.write_json(args.json_out, results)
    return common.exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
