"""The reference PyTorch distillation step, timed like ours (same shapes, flags, report).

    python benchmarks/torch_reference.py                       # BERT-base -> 6 layers, L128, B32
    python benchmarks/torch_reference.py --seq_len 128,512 --batch 64 --dtype bfloat16
    python benchmarks/torch_reference.py --teacher_layers 2 --student_layers 1 --hidden 128 \
        --heads 2 --ffn 512 --vocab 1000 --seq_len 128 --batch 8    # small CPU shape

Written by us from the published description of the method and of the
reference distiller (Sanh et al. 2019; DESIGN.md §1.1, §1.2, §1.4), one
micro-step as it does it:

  1. dynamic masking on the device: n = ceil(0.15 · real tokens) positions drawn
     without replacement ∝ token_probs[id] (torch.multinomial; reading n back is
     a host sync, as there), each 80% [MASK] / 10% kept / 10% random id;
  2. the student (DistilBertForMaskedLM, training mode, dropout on) and the
     teacher (BertForMaskedLM, eval mode, under no_grad) each compute FULL
     [B, L, V] logits and all hidden states;
  3. the triple loss over the selected rows of the full logits: KL(batchmean)
     of the temperature-softened distributions × T², cross-entropy against the
     labels (-100 ignored), and the cosine embedding loss of the last hidden
     states; a_ce 5, a_mlm 2, a_cos 1, T 2;
  4. backward, gradient clipping at norm 5, AdamW (betas 0.9/0.98, eps 1e-6,
     no decay on biases and LayerNorm), linear warmup/decay schedule.

Mixed precision: torch.autocast in bfloat16 (or float16 with a GradScaler) on
GPU, float32 master weights; float32 without autocast on CPU unless --dtype
asks otherwise. Attention is transformers' default SDPA (--torch_attention).

Timing: warm-up excluded; every step ends with torch.cuda.synchronize() on GPU;
median of --steps. MFU uses the FLOP formula of train_throughput.py (the same
count for both implementations); peak memory is torch.cuda.max_memory_allocated().
Weights are transformers' random init unless given (compare.py passes the same
weights to both implementations).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as common  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IMPL = "torch"
IGNORE_INDEX = -100
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- models


def _hf_config(config_cls, cfg, attention: str):
    fields = cfg.to_hf_dict()
    for key in ("model_type", "architectures"):
        fields.pop(key)
    return config_cls(**fields, attn_implementation=attention)


def _load(model: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Loads a `distil_jax.hf.flax_to_hf` state dict; only tied tensors may be absent."""
    tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied and not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def build_models(shape: common.Shape, weights=None, attention: str = "sdpa"):
    """(BertForMaskedLM teacher, DistilBertForMaskedLM student), float32, on the CPU.

    weights: (teacher, student) numpy params in our layout, or None for
    transformers' own random init (the student then is NOT the teacher's
    subset, which changes the loss values but not the work).
    """
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    from distil_jax.hf import flax_to_hf

    teacher_cfg, student_cfg = common.model_configs(shape)
    teacher = BertForMaskedLM(_hf_config(BertConfig, teacher_cfg, attention))
    student = DistilBertForMaskedLM(_hf_config(DistilBertConfig, student_cfg, attention))
    if weights is not None:
        _load(teacher, flax_to_hf(teacher_cfg, weights[0]))
        _load(student, flax_to_hf(student_cfg, weights[1]))
    return teacher, student


# ---------------------------------------------------------------------------- the step


def mask_tokens(
    input_ids, attention_mask, token_probs, split_probs, mask_id: int, vocab: int, prop=0.15
):
    """The reference's dynamic masking. Returns (masked ids, labels), both [B, L] int64.

    split_probs: [3] on the device, the [MASK] / keep / random proportions (0.8, 0.1, 0.1).
    """
    flat = input_ids.reshape(-1)  # [B*L]
    weights = token_probs[flat] * attention_mask.reshape(-1)  # pads get weight 0
    n = math.ceil(prop * int(attention_mask.sum()))  # .item(): a host sync, as there
    chosen = torch.multinomial(weights / weights.sum(), n, replacement=False)  # [n]
    predict = torch.zeros_like(flat, dtype=torch.bool)
    predict[chosen] = True
    real = flat[predict]  # [n] the original ids, in position order
    # 0 -> [MASK] (80%), 1 -> keep (10%), 2 -> random id (10%)
    action = torch.multinomial(split_probs, real.numel(), replacement=True)
    replaced = torch.where(action == 0, torch.full_like(real, mask_id), real)
    replaced = torch.where(action == 2, torch.randint_like(real, vocab), replaced)
    ids = flat.masked_scatter(predict, replaced)
    labels = flat.masked_fill(~predict, IGNORE_INDEX)
    return ids.view_as(input_ids), labels.view_as(input_ids)


def triple_loss(
    student,
    teacher,
    input_ids,
    attention_mask,
    labels,
    restrict_ce_to_mask: bool = False,
    temperature: float = 2.0,
    alphas=(5.0, 2.0, 1.0),
):
    """a_ce·L_ce + a_mlm·L_mlm + a_cos·L_cos over full logits, as the reference computes it.

    Returns (loss, {"ce", "mlm", "cos"} tensors).
    """
    s_out = student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
    s_logits, t_logits = s_out.logits, t_out.logits  # [B, L, V] each
    vocab = s_logits.shape[-1]
    select = (labels > -1) if restrict_ce_to_mask else attention_mask.bool()  # [B, L]
    s_rows, t_rows = s_logits[select], t_logits[select]  # [N, V]: copies of the chosen rows
    ce = F.kl_div(
        F.log_softmax(s_rows / temperature, dim=-1),
        F.softmax(t_rows / temperature, dim=-1),
        reduction="batchmean",
    ) * (temperature**2)
    mlm = F.cross_entropy(
        s_logits.view(-1, vocab), labels.view(-1), ignore_index=IGNORE_INDEX
    )  # mean over labelled positions
    real = attention_mask.bool()
    s_h, t_h = s_out.hidden_states[-1][real], t_out.hidden_states[-1][real]  # [N, D]
    cos = F.cosine_embedding_loss(s_h, t_h, s_h.new_ones(s_h.shape[0]), reduction="mean")
    a_ce, a_mlm, a_cos = alphas
    loss = a_ce * ce + a_mlm * mlm + a_cos * cos
    return loss, {"ce": ce, "mlm": mlm, "cos": cos}


def _param_groups(model: torch.nn.Module, weight_decay: float = 0.0):
    """Biases and LayerNorm weights are spared weight decay (it is 0 in the recipe anyway)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        spared = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
        (no_decay if spared else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class TorchStep:
    """The reference step for one shape; `time_steps` may be called repeatedly."""

    impl = IMPL

    def __init__(self, shape: common.Shape, opts, weights=None, seed: int = 0):
        torch.manual_seed(seed)
        if opts.torch_threads:
            torch.set_num_threads(opts.torch_threads)
        self.shape, self.opts = shape, opts
        self.device = device = torch_device()
        teacher, student = build_models(shape, weights, opts.torch_attention)
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.student = student.to(device).train()
        self.forward_teacher, self.forward_student = self.teacher, self.student
        if opts.torch_compile:
            self.forward_teacher = torch.compile(self.teacher)
            self.forward_student = torch.compile(self.student)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.student), lr=5e-4, betas=(0.9, 0.98), eps=1e-6
        )
        total, warm = 100_000, 5_000  # a long schedule, as in train_throughput
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: s / warm if s < warm else max(0.0, (total - s) / (total - warm)),
        )
        self.amp_dtype = TORCH_DTYPES[shape.dtype]
        self.amp = shape.dtype != "float32"
        self.scaler = (
            torch.amp.GradScaler(device.type) if shape.dtype == "float16" else None
        )  # float16 needs loss scaling; bfloat16 does not
        ids, mask = common.make_batch(shape, seed)
        self.input_ids = torch.from_numpy(ids).long().to(device)
        self.attention_mask = torch.from_numpy(mask).long().to(device)
        self.token_probs = torch.from_numpy(common.token_probs(shape)).to(device)
        self.split_probs = torch.tensor([0.8, 0.1, 0.1], device=device)
        self.mask_id = common.special_ids(shape.vocab)["mask"]
        self.terms = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def step(self) -> None:
        ids, labels = mask_tokens(
            self.input_ids,
            self.attention_mask,
            self.token_probs,
            self.split_probs,
            self.mask_id,
            self.shape.vocab,
        )
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            loss, terms = triple_loss(
                self.forward_student,
                self.forward_teacher,
                ids,
                self.attention_mask,
                labels,
                self.opts.restrict_ce_to_mask,
            )
        params = self.student.parameters()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.terms = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def time_steps(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            self.step()
            synchronize(self.device)
            times.append(time.perf_counter() - start)
        return times

    def losses(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.terms.items()}

    def result(self, times: list[float]) -> dict:
        peak_mem = None
        if self.device.type == "cuda":
            peak_mem = int(torch.cuda.max_memory_allocated(self.device))
        name = device_name(self.device)
        return common.summarise(
            IMPL,
            name,
            self.shape,
            times,
            common.step_flops(self.shape, self.opts.restrict_ce_to_mask),
            common.peak_flops(name, self.opts.peak_tflops),
            peak_mem,
            self.losses(),
        )


def benchmark(shape: common.Shape, opts, weights=None) -> dict:
    """Warm up, time: the result dict of one shape (an error dict on OOM)."""
    device = torch_device()
    try:
        runner = TorchStep(shape, opts, weights, seed=opts.seed)
        runner.time_steps(opts.warmup)
        return runner.result(runner.time_steps(opts.steps))
    except Exception as e:
        if not common.is_oom(e):
            raise
        return common.error_result(IMPL, device_name(device), shape, "OOM")
    finally:
        runner = None
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next point (or jax, in compare.py) gets the memory


# ---------------------------------------------------------------------------- loss agreement


def reference_losses(shape: common.Shape, weights, input_ids, attention_mask, labels, opts):
    """The reference's loss terms on a given masked batch: float32, both models in eval mode."""
    device = torch_device()
    teacher, student = build_models(shape, weights, opts.torch_attention)
    teacher.to(device).eval()
    student.to(device).eval()  # dropout off, so the check compares the same function
    as_long = lambda a: torch.from_numpy(np.array(a)).long().to(device)
    with torch.no_grad():
        loss, terms = triple_loss(
            student,
            teacher,
            as_long(input_ids),
            as_long(attention_mask),
            as_long(labels),
            opts.restrict_ce_to_mask,
        )
    return {"loss": float(loss), **{k: float(v) for k, v in terms.items()}}


# ---------------------------------------------------------------------------- main


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_shape_args(parser)
    common.add_option_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = torch_device()
    print(f"device {device_name(device)}  torch {torch.__version__}")
    results = []
    for shape in common.shapes_from_args(args, device.type == "cuda"):
        r = benchmark(shape, args)
        results.append(r)
        print(common.report_line(r), flush=True)
    common.write_json(args.json_out, results)
    return common.exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
