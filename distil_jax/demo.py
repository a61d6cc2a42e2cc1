"""The offline quickstart: make a teacher, distil it, and report what distillation kept.

Stages (each reused when a previous run finished it):
  1. corpus + WordPiece vocabulary from Python's own documentation (demo_corpus);
  2. corpus preparation with a held-out split (data.prepare);
  3. MLM pre-training of a small BERT teacher (train, mode "pretrain");
  4. a half-depth student initialised from it and distilled with the triple loss;
  5. a report: sizes, held-out MLM accuracy/loss, inference throughput, retention,
     speed-up, a loss-curve plot and a fill-mask example through transformers.
"""

from __future__ import annotations

import copy
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distil_jax import hf, mlm_eval, run_config, sharding
from distil_jax.data import prepared
from distil_jax.data.config import text_files_source
from distil_jax.data.preparation import prepare
from distil_jax.demo_corpus import train_wordpiece, write_corpus
from distil_jax.metrics_log import read_metrics
from distil_jax.models import MaskedLM, ModelConfig
from distil_jax.train import train


def _stage_done(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, "export", "config.json"))


def teacher_config(config, workdir: str):
    """The pre-training run of the teacher: the demo config in pretrain mode."""
    t = copy.deepcopy(config)
    d = config.demo
    t.mode = "pretrain"
    t.teacher = ""
    t.student.init = "random"
    t.student.arch = "bert"
    t.student.num_layers = d.teacher_layers
    t.student.hidden_size = d.hidden_size
    t.student.num_heads = d.num_heads
    t.student.intermediate_size = d.intermediate_size
    t.student.max_position_embeddings = config.data.max_len
    t.num_train_steps = d.teacher_steps
    t.optim.learning_rate = d.teacher_learning_rate
    t.masking.mlm_smoothing = d.teacher_mlm_smoothing
    t.export_dir = os.path.join(workdir, "export")
    return t


def evaluate_model(model_dir: str, config, prepared_dir: str, mesh) -> dict:
    """Held-out MLM loss/accuracy of an exported model; the same masks for every model."""
    cfg, params = hf.load_pretrained(model_dir)
    return evaluate_params(cfg, params, config, prepared_dir, mesh)


def evaluate_params(cfg: ModelConfig, params, config, prepared_dir: str, mesh) -> dict:
    summary = prepared.load_summary(prepared_dir)
    step_cfg = run_config.step_config(config, cfg, summary["special_token_ids"]["mask"])
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), params)
    fn = mlm_eval.make_eval_fn(MaskedLM(cfg), step_cfg, shardings, mesh)
    return mlm_eval.evaluate(
        fn,
        params,
        mlm_eval.eval_token_probs(summary, cfg.vocab_size),
        config.data,
        prepared_dir,
        mesh,
        batch_size=config.batch.micro_batch_size,
        max_batches=config.demo.eval_batches,
    )


def inference_throughput(
    model_dirs: dict[str, str], batch: int, length: int, repeats: int
) -> dict[str, float]:
    """Sequences/s of each model's encoder forward on the same inputs, timed alternately."""
    rng = np.random.default_rng(0)
    fns = {}
    for name, d in model_dirs.items():
        cfg, params = hf.load_pretrained(d)
        ids = rng.integers(5, cfg.vocab_size, size=(batch, length)).astype(np.int32)
        model = MaskedLM(cfg)
        # The encoder alone, as downstream inference runs it (the paper's Table 3 timed
        # STS-B predictions): no vocabulary projection, which costs both models alike.
        fn = jax.jit(
            lambda p, i, m=model: (
                m.apply({"params": p}, i, jnp.ones_like(i), compute_logits=False).last_hidden_state
            )
        )
        params = jax.device_put(params)
        fn(params, ids).block_until_ready()  # compile outside the timing
        fns[name] = (fn, params, ids)
    times = {name: [] for name in fns}
    for _ in range(repeats):  # alternate so drifts in machine load hit both alike
        for name, (fn, params, ids) in fns.items():
            t0 = time.perf_counter()
            fn(params, ids).block_until_ready()
            times[name].append(time.perf_counter() - t0)
    return {name: batch / float(np.median(t)) for name, t in times.items()}


def count_params(model_dir: str) -> int:
    _, params = hf.load_pretrained(model_dir)
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def plot_losses(runs: dict[str, str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6))
    for ax, (title, workdir) in zip(np.atleast_1d(axes), runs.items(), strict=True):
        records = [r for r in read_metrics(workdir) if r["kind"] == "train"]
        for key in ("loss", "loss_ce", "loss_mlm", "loss_cos"):
            pts = [(r["step"], r[key]) for r in records if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key)
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fill_mask_example(model_dir: str, text: str) -> list[dict]:
    from transformers import pipeline

    fill = pipeline("fill-mask", model=model_dir, tokenizer=model_dir, device="cpu")
    return [
        {"token": r["token_str"], "score": round(float(r["score"]), 4)} for r in fill(text, top_k=5)
    ]


def run_demo(config, workdir: str) -> dict:
    t_start = time.perf_counter()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    d = config.demo

    # 1. corpus and vocabulary.
    corpus = os.path.join(workdir, "corpus", "python_docs.txt")
    corpus_size = write_corpus(corpus, d.max_documents)
    tokenizer_dir = train_wordpiece(corpus, os.path.join(workdir, "tokenizer"), d.vocab_size)
    config.tokenizer = tokenizer_dir
    config.data.sources = [text_files_source(os.path.join(workdir, "corpus", "*.txt"))]
    config.data.prepared_dir = config.data.prepared_dir or os.path.join(workdir, "prepared")

    # 2. preparation (idempotent: reused when finished).
    prepared_dir = prepare(config.data, tokenizer_dir)

    # 3. the teacher.
    teacher_dir = os.path.join(workdir, "teacher")
    if not _stage_done(teacher_dir):
        train(teacher_config(config, teacher_dir), teacher_dir)
    teacher_export = os.path.join(teacher_dir, "export")

    # 4. the student, distilled from it.
    student_dir = os.path.join(workdir, "student")
    config.teacher = teacher_export
    config.export_dir = os.path.join(student_dir, "export")
    if not _stage_done(student_dir):
        train(config, student_dir)
    student_export = config.export_dir

    # 5. the report, measured now.
    mesh = sharding.make_mesh(-1, 1, 1)
    teacher_eval = evaluate_model(teacher_export, config, prepared_dir, mesh)
    student_eval = evaluate_model(student_export, config, prepared_dir, mesh)
    s_cfg = ModelConfig.from_hf_file(student_export)
    ids = jnp.zeros((1, 8), jnp.int32)
    random_params = nn.unbox(MaskedLM(s_cfg).init(jax.random.key(0), ids, ids)["params"])
    random_eval = evaluate_params(s_cfg, random_params, config, prepared_dir, mesh)
    speed = inference_throughput(
        {"teacher": teacher_export, "student": student_export},
        d.throughput_batch,
        config.data.max_len,
        d.throughput_repeats,
    )
    plot = os.path.join(workdir, "loss_curves.png")
    plot_losses(
        {"teacher (MLM pre-training)": teacher_dir, "student (distillation)": student_dir}, plot
    )
    report = {
        "corpus": corpus_size,
        "prepared": {
            k: prepared.load_summary(prepared_dir)[k]
            for k in ("num_sequences", "num_tokens", "vocab_size")
        },
        "teacher": {
            "dir": teacher_export,
            "params": count_params(teacher_export),
            "layers": ModelConfig.from_hf_file(teacher_export).num_layers,
            **teacher_eval,
            "sequences_per_s": speed["teacher"],
        },
        "student": {
            "dir": student_export,
            "params": count_params(student_export),
            "layers": s_cfg.num_layers,
            **student_eval,
            "sequences_per_s": speed["student"],
        },
        "random_init_student": random_eval,
        "retention_percent": 100.0
        * student_eval["mlm_accuracy"]
        / max(teacher_eval["mlm_accuracy"], 1e-9),
        "speedup": speed["student"] / speed["teacher"],
        "throughput_batch": [d.throughput_batch, config.data.max_len],
        "fill_mask": {
            "text": d.fill_mask_text,
            "student": fill_mask_example(student_export, d.fill_mask_text),
            "teacher": fill_mask_example(teacher_export, d.fill_mask_text),
        },
        "loss_plot": plot,
        "wall_seconds": time.perf_counter() - t_start,
    }
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    text = render_report(report)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(text)
    print(text)
    return report


def render_report(r: dict) -> str:
    t, s, z = r["teacher"], r["student"], r["random_init_student"]
    fm = r["fill_mask"]
    fmt = lambda preds: ", ".join(f"{p['token']} ({p['score']:.2f})" for p in preds)
    return "\n".join(
        [
            "# distil_jax demo report",
            "",
            f"Corpus: Python documentation, {r['corpus']['words']:,} words; "
            f"{r['prepared']['num_sequences']:,} training sequences, "
            f"{r['prepared']['num_tokens']:,} tokens, vocabulary {r['prepared']['vocab_size']:,}.",
            "",
            "| model | layers | parameters | held-out MLM accuracy | held-out MLM loss "
            "| encoder inference (seq/s) |",
            "|---|---:|---:|---:|---:|---:|",
            f"| teacher (BERT, MLM pre-trained) | {t['layers']} | {t['params']:,} | "
            f"{t['mlm_accuracy']:.2%} | {t['mlm_loss']:.3f} | {t['sequences_per_s']:.1f} |",
            f"| student (DistilBERT, distilled) | {s['layers']} | {s['params']:,} | "
            f"{s['mlm_accuracy']:.2%} | {s['mlm_loss']:.3f} | {s['sequences_per_s']:.1f} |",
            f"| student, random init (untrained) | {s['layers']} | {s['params']:,} | "
            f"{z['mlm_accuracy']:.2%} | {z['mlm_loss']:.3f} | |",
            "",
            f"Retention of the teacher's MLM accuracy: **{r['retention_percent']:.1f}%**; "
            f"student speed-up: **{r['speedup']:.2f}x** (batch {r['throughput_batch'][0]} x "
            f"{r['throughput_batch'][1]} tokens, same machine, timed alternately in one run).",
            "",
            f"Fill-mask through transformers' pipeline: `{fm['text']}`",
            f"- student: {fmt(fm['student'])}",
            f"- teacher: {fmt(fm['teacher'])}",
            "",
            f"Loss curves: {r['loss_plot']}",
            f"Wall time: {r['wall_seconds']:.0f} s",
            "",
        ]
    )
