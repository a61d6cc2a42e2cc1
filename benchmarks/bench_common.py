"""What the step benchmarks share: flags, shapes, the FLOP count, weights, timing, report.

Both implementations (ours in `train_throughput.py`, the PyTorch reference in
`torch_reference.py`) describe their work with the same `Shape`, count it with
the same `step_flops` and print it with the same `report_line`, so their
numbers can be set side by side without translation.

Only numpy, jax/flax (through `distil_jax.models` and `distil_jax.hf`) are
imported here: nothing that pulls ml_collections, grain or tensorflow-datasets,
which the GPU machines do not have. Importing jax does not start a backend;
only `make_weights` runs jax code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as `python benchmarks/x.py`: make distil_jax importable
    sys.path.insert(0, REPO)

# BERT's special ids ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103);
# tiny vocabularies fall back to the first ids so the ids stay in range.
BERT_SPECIALS = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}

# Dense bf16 (fp16 on V100) tensor-core peak per device, FLOP/s, from the vendors'
# data sheets (without sparsity). Matched against the device name, first hit wins,
# so the more specific names come first.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (device name "NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("V100", 125e12),
    ("L4", 121e12),
)


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark point: the two models, the micro-batch and the compute dtype."""

    teacher_layers: int = 12
    student_layers: int = 6
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    vocab: int = 30522
    seq_len: int = 128
    batch: int = 32
    dtype: str = "float32"  # resolved: float32, bfloat16 or float16

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len

    def label(self) -> str:
        return (
            f"T{self.teacher_layers}/S{self.student_layers} D{self.hidden} "
            f"V{self.vocab} L{self.seq_len} B{self.batch} {self.dtype}"
        )


def special_ids(vocab: int) -> dict[str, int]:
    if vocab > max(BERT_SPECIALS.values()):
        return dict(BERT_SPECIALS)
    return {name: i for i, name in enumerate(BERT_SPECIALS)}  # pad 0 ... mask 4


def model_configs(shape: Shape):
    """(teacher, student) `ModelConfig`s: a BERT teacher and its DistilBERT student."""
    from distil_jax.models import ModelConfig

    teacher = ModelConfig(
        arch="bert",
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_layers=shape.teacher_layers,
        num_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=max(512, shape.seq_len),
        type_vocab_size=2,
    )
    return teacher, teacher.student(shape.student_layers)


# ---------------------------------------------------------------------------- flags


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    """The flags every step benchmark takes (defaults: BERT-base -> 6 layers)."""
    s = Shape()
    p = parser.add_argument
    p("--teacher_layers", type=int, default=s.teacher_layers)
    p("--student_layers", type=int, default=s.student_layers)
    p("--hidden", type=int, default=s.hidden)
    p("--heads", type=int, default=s.heads)
    p("--ffn", type=int, default=s.ffn)
    p("--vocab", type=int, default=s.vocab)
    p("--seq_len", type=_int_list, default=[128], help="one length or a list: 128,512")
    p("--batch", type=_int_list, default=[32], help="micro-batch, or a list to sweep")
    p("--steps", type=int, default=20, help="timed steps (median reported)")
    p("--warmup", type=int, default=3, help="untimed steps first (compilation included)")
    p(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="compute dtype; auto = bfloat16 on an accelerator, float32 on CPU",
    )
    p("--peak_tflops", type=float, default=None, help="override the device's bf16 peak")
    p("--seed", type=int, default=0)
    p("--json_out", default=None, help="write the results (a JSON list) here")


def add_option_args(parser: argparse.ArgumentParser) -> None:
    """Implementation options; every script accepts all, so compare.py can pass its
    flags through. [jax] / [torch] says which implementation reads one."""
    p = parser.add_argument
    p(
        "--attention",
        default="default",
        choices=("default", "xla", "cudnn"),
        help="[jax] jax.nn.dot_product_attention implementation (default: jax's, i.e. XLA's)",
    )
    p("--remat", action="store_true", help="[jax] rematerialise each student layer")
    p("--no_donate", action="store_true", help="[jax] do not donate the train state")
    p("--logits_chunk_len", type=int, default=128, help="[jax] positions per logits chunk")
    p(
        "--no_fused_vocab_grad",
        action="store_true",
        help="[jax] every-token CE by remat + autodiff (recomputes logits) instead of vocab_losses",
    )
    p(
        "--no_attention_dropout",
        action="store_true",
        help="[jax] student attention dropout 0 (lets the fused attention path run)",
    )
    p("--accumulation", type=int, default=1, help="[jax] micro-batches per optimiser step")
    p("--restrict_ce_to_mask", action="store_true", help="CE only at the masked positions")
    p(
        "--torch_attention",
        default="sdpa",
        choices=("sdpa", "eager"),
        help="[torch] transformers attn_implementation",
    )
    p("--torch_compile", action="store_true", help="[torch] torch.compile both models")
    p(
        "--torch_threads",
        type=int,
        default=0,
        help="[torch] CPU intra-op threads (0: torch's default, one per core)",
    )


def shapes_from_args(args, accelerator: bool) -> list[Shape]:
    """Every (seq_len, batch) point of the sweep, shortest first.

    Ascending order matters for JAX: its peak-memory counter never resets, so a
    point's figure is only its own when no bigger point ran before it.
    """
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if accelerator else "float32")
    return [
        Shape(
            args.teacher_layers,
            args.student_layers,
            args.hidden,
            args.heads,
            args.ffn,
            args.vocab,
            seq_len,
            batch,
            dtype,
        )
        for seq_len in sorted(args.seq_len)
        for batch in sorted(args.batch)
    ]


# ---------------------------------------------------------------------------- FLOPs


def encoder_flops_per_token(layers: int, hidden: int, ffn: int, seq_len: int) -> int:
    """Forward FLOPs of the encoder per token (2 per multiply-add).

    Per layer: the Q, K, V and output projections (4·D² weights) and the two FFN
    matmuls (2·D·F weights) give 2·(4·D² + 2·D·F); attention adds Q·Kᵀ and P·V,
    each L·D multiply-adds per query token: 2·2·L·D.
    """
    dense = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2 * 2 * seq_len * hidden
    return layers * (dense + attention)


def head_flops_per_position(hidden: int, vocab: int) -> int:
    """The MLM head at one position: transform dense (D²) + tied vocab projection (D·V)."""
    return 2 * (hidden * hidden + hidden * vocab)


def logits_positions(shape: Shape, restrict_ce_to_mask: bool, mlm_mask_prop: float = 0.15) -> int:
    """Positions whose logits the triple loss needs.

    CE over every real token needs them everywhere (all B·L positions are real
    here); restricted to the mask (or MLM alone) it needs the ~15% chosen ones,
    the static bound ceil(0.15·B·L) our step pads to.
    """
    if restrict_ce_to_mask:
        return max(1, math.ceil(mlm_mask_prop * shape.tokens))
    return shape.tokens


def step_flops(shape: Shape, restrict_ce_to_mask: bool = False) -> dict[str, float]:
    """Model FLOPs of one distillation micro-step (see train_throughput's docstring).

    teacher forward + 3 × student forward (forward + backward ≈ 2× forward),
    each = tokens · encoder_flops_per_token + positions · head_flops_per_position.
    Not counted: embeddings lookups, LayerNorm, softmax, GELU, biases, the
    losses, the optimiser (all O(tokens·D) or O(params), under 1%), and any
    recomputation (rematerialisation is not model work).
    """
    positions = logits_positions(shape, restrict_ce_to_mask)
    head = positions * head_flops_per_position(shape.hidden, shape.vocab)
    teacher = (
        shape.tokens
        * encoder_flops_per_token(shape.teacher_layers, shape.hidden, shape.ffn, shape.seq_len)
        + head
    )
    student = (
        shape.tokens
        * encoder_flops_per_token(shape.student_layers, shape.hidden, shape.ffn, shape.seq_len)
        + head
    )
    return {
        "teacher_forward": float(teacher),
        "student_forward": float(student),
        "total": float(teacher + 3 * student),
    }


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None (e.g. CPU) when not known."""
    if override_tflops:
        return override_tflops * 1e12
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


# ---------------------------------------------------------------------------- weights


def make_weights(shape: Shape, seed: int = 0):
    """Random float32 numpy weights: (teacher params, student params).

    The student is initialised from the teacher as in the recipe (every other
    layer, first and last kept), so its logits start close to the teacher's and
    the loss values are those of a real run's first steps.
    """
    import flax.linen as nn
    import jax
    import numpy as np

    from distil_jax import hf
    from distil_jax.models import MaskedLM, init_params

    teacher_cfg, student_cfg = model_configs(shape)
    boxed = jax.jit(lambda key: init_params(MaskedLM(teacher_cfg), key))(jax.random.key(seed))
    teacher = jax.tree.map(np.asarray, jax.device_get(nn.unbox(boxed)))
    layers = hf.student_layer_map(shape.teacher_layers, shape.student_layers)
    _, student, _ = hf.init_student(teacher_cfg, teacher, layers)
    return teacher, student


def make_batch(shape: Shape, seed: int = 0):
    """Unmasked ids [B, L] (int32) and attention mask [B, L] (all real tokens).

    Full-length sequences: the benchmark times one length bucket, where padding
    is the data pipeline's business. Ids avoid the special tokens so masking
    may pick any position.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    low = max(special_ids(shape.vocab).values()) + 1
    ids = rng.integers(low, shape.vocab, size=(shape.batch, shape.seq_len), dtype=np.int32)
    ids[:, 0] = special_ids(shape.vocab)["cls"]
    ids[:, -1] = special_ids(shape.vocab)["sep"]
    return ids, np.ones_like(ids)


def token_probs(shape: Shape):
    """Uniform selection weights with the specials at 0 (float32 [V], numpy)."""
    import numpy as np

    probs = np.ones((shape.vocab,), np.float32)
    probs[list(special_ids(shape.vocab).values())] = 0.0
    return probs


# ---------------------------------------------------------------------------- report


def summarise(
    impl: str,
    device: str,
    shape: Shape,
    step_times: Sequence[float],
    flops: dict[str, float],
    peak: float | None,
    peak_mem: int | None,
    losses: dict[str, float],
    **extra,
) -> dict:
    """The result dict both implementations return (and write as JSON)."""
    median = statistics.median(step_times)
    achieved = flops["total"] / median
    return {
        "impl": impl,
        "device": device,
        "shape": dataclasses.asdict(shape),
        "label": shape.label(),
        "timed_steps": len(step_times),
        "step_time_s": median,
        "step_time_min_s": min(step_times),
        "step_time_max_s": max(step_times),
        "seqs_per_s": shape.batch / median,
        "tokens_per_s": shape.tokens / median,
        "flops_per_step": flops["total"],
        "flops": flops,
        "tflops_per_s": achieved / 1e12,
        "peak_tflops": None if peak is None else peak / 1e12,
        "mfu": None if peak is None else achieved / peak,
        "peak_mem_bytes": peak_mem,
        "losses": losses,
        **extra,
    }


def error_result(impl: str, device: str, shape: Shape, error: str) -> dict:
    return {
        "impl": impl,
        "device": device,
        "shape": dataclasses.asdict(shape),
        "label": shape.label(),
        "error": error,
    }


def is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("resource_exhausted", "out of memory", "outofmemory"))


def _fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def report_line(r: dict) -> str:
    """One line per result, the same for both implementations."""
    head = f"{r['impl']:<6} {r['label']:<44}"
    if "error" in r:
        return f"{head} | {r['error']}"
    mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    return (
        f"{head} | step {1e3 * r['step_time_s']:8.2f} ms | {r['seqs_per_s']:9.1f} seq/s"
        f" | {r['tokens_per_s']:10.0f} tok/s | {r['tflops_per_s']:7.2f} TFLOP/s | MFU {mfu:>5}"
        f" | peak mem {_fmt_bytes(r['peak_mem_bytes'])} | loss {r['losses'].get('loss', 0):.4f}"
    )


def write_json(path: str | None, results) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def exit_status(results) -> int:
    """0 when every timed result is finite. An error result (e.g. an OOM point of a
    sweep) is a finding, not a failure; a non-finite number is."""
    timed = [r for r in results if "error" not in r]
    return 0 if all(all_finite(r) for r in timed) else 1


def all_finite(r: dict) -> bool:
    """True when every reported number of a (non-error) result is finite."""
    if "error" in r:
        return False
    if r.get("kind") == "inference":
        values = [r["teacher_s"], r["student_s"], r["speedup"]]
    else:
        values = [r["step_time_s"], r["seqs_per_s"], r["tokens_per_s"], r["tflops_per_s"]]
        values += list(r["losses"].values())
    return all(math.isfinite(v) for v in values)
