"""The step benchmarks run on CPU at a tiny shape, report finite numbers, and do the same work.

Each script's `main` runs in-process. The JAX step's compilation dominates the
time, so a persistent compilation cache (scoped to this module, then reset)
lets the second compile of the identical step be a cache hit.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import bench_common as common  # noqa: E402
import compare  # noqa: E402
import inference_speed  # noqa: E402
import torch_reference  # noqa: E402
import train_throughput  # noqa: E402

TINY = [
    "--teacher_layers=2",
    "--student_layers=1",
    "--hidden=32",
    "--heads=4",
    "--ffn=64",
    "--vocab=128",
    "--seq_len=16",
    "--batch=4",
    "--steps=2",
    "--warmup=1",
    "--torch_threads=1",  # 2 threads on a shared 2-core box spin-wait for seconds per step
]
TINY_SHAPE = common.Shape(2, 1, 32, 4, 64, 128, 16, 4, "float32")


@pytest.fixture(scope="module", autouse=True)
def compilation_cache_dir(tmp_path_factory):
    keys = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {k: getattr(jax.config, k) for k in keys}
    jax.config.update(keys[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(keys[1], 0)
    jax.config.update(keys[2], 0)
    compilation_cache.reset_cache()
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_flop_count_matches_hand_count_and_xla():
    # BERT-base layer at L=128: 2·(4·768² + 2·768·3072) + 4·128·768 per token.
    assert common.encoder_flops_per_token(1, 768, 3072, 128) == 14_155_776 + 393_216
    shape = common.Shape(seq_len=128, batch=32)
    f = common.step_flops(shape)
    assert f["total"] == f["teacher_forward"] + 3 * f["student_forward"]
    # restricting the CE to the mask keeps the encoders, shrinks only the heads.
    r = common.step_flops(shape, restrict_ce_to_mask=True)
    head = common.head_flops_per_position(768, 30522)
    assert f["total"] - r["total"] == 4 * head * (shape.tokens - math.ceil(0.15 * shape.tokens))

    # XLA's own count of a teacher forward with logits everywhere (from the lowered
    # HLO, nothing compiled or initialised): ours counts the dots only, so it must
    # sit just below XLA's (elementwise work is the rest), not off by a factor.
    from distil_jax.models import MaskedLM

    shape = common.Shape(2, 1, 128, 4, 512, 256, 64, 2, "float32")
    teacher = MaskedLM(common.model_configs(shape)[0])
    ids = jax.ShapeDtypeStruct((shape.batch, shape.seq_len), jnp.int32)
    params = jax.eval_shape(lambda i: teacher.init(jax.random.key(0), i, i), ids)["params"]
    forward = jax.jit(lambda p, i, m: teacher.apply({"params": p}, i, m).logits)
    xla = forward.lower(params, ids, ids).cost_analysis()
    xla = (xla[0] if isinstance(xla, list | tuple) else xla)["flops"]
    ours = common.step_flops(shape)["teacher_forward"]
    assert 1.0 <= xla / ours < 1.15, (xla, ours)


def test_scripts_report_finite_numbers(tmp_path):
    out = tmp_path / "jax.json"
    assert train_throughput.main([*TINY, "--inference", f"--json_out={out}"]) == 0
    results = _load(out)
    step = results[0]
    assert step["impl"] == "jax" and common.all_finite(step)
    assert step["flops_per_step"] == common.step_flops(TINY_SHAPE)["total"]
    assert step["mfu"] is None and step["peak_mem_bytes"] is None  # CPU: no peak, no stats
    assert set(step["losses"]) == {"loss", "ce", "mlm", "cos"}
    inference = [r for r in results if r.get("kind") == "inference"]
    assert [r["batch"] for r in inference] == [1, 4]
    assert all(common.all_finite(r) for r in inference)

    out = tmp_path / "torch.json"
    assert torch_reference.main([*TINY, f"--json_out={out}"]) == 0
    (ref,) = _load(out)
    assert ref["impl"] == "torch" and common.all_finite(ref)
    assert ref["flops_per_step"] == step["flops_per_step"]  # the same count for both

    out = tmp_path / "inference.json"
    # jax's inference ran above; the PyTorch one with its own weights.
    assert inference_speed.main([*TINY, "--impl=torch", f"--json_out={out}"]) == 0
    assert all(r["impl"] == "torch" and common.all_finite(r) for r in _load(out))


def test_ab_times_one_change_against_the_step_without(tmp_path, capsys):
    out = tmp_path / "ab.json"
    argv = [*TINY, "--ab=--no_fused_vocab_grad", "--rounds=2", f"--json_out={out}"]
    assert train_throughput.main(argv) == 0
    a, b = _load(out)
    assert (a["variant"], b["variant"]) == ("A", "B: --no_fused_vocab_grad")
    assert a["timed_steps"] == b["timed_steps"] == 2 and common.all_finite(b)
    # Same weights, batch and number of steps; the two CE gradients agree, so the losses do.
    for term, value in a["losses"].items():
        assert b["losses"][term] == pytest.approx(value, rel=1e-4), term
    assert "runs at" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="changes no option"):
        train_throughput.main([*TINY, "--ab=--logits_chunk_len=128"])


def test_ab_option_applies_on_top_of_the_given_options():
    opts = train_throughput.parse_args(["--attention=xla", "--remat"])
    variant = train_throughput.options_with(opts, "--attention default")
    assert (variant.attention, variant.remat) == ("default", True)  # back to a default counts
    assert (opts.attention, opts.remat) == ("xla", True)  # A untouched
    with pytest.raises(SystemExit, match="changes no option"):
        train_throughput.options_with(opts, "--remat")


def test_markdown_report_of_a_failed_point_names_the_error():
    ok = {"label": "P", "impl": "torch", "step_time_s": 0.1, "step_time_min_s": 0.1,
          "step_time_max_s": 0.1, "seqs_per_s": 1.0, "tokens_per_s": 16.0, "tflops_per_s": 0.0,
          "mfu": None, "peak_mem_bytes": None}  # fmt: skip
    output = {"results": [{"label": "P", "impl": "jax", "error": "OOM"}, ok], "ratios": []}
    table = compare.markdown_report(output, "machine", "python benchmarks/compare.py")
    assert "| P | jax | OOM |" in table and "**" not in table


@pytest.mark.parametrize("restrict", [False, True])
def test_losses_agree_on_same_weights_and_batch(restrict):
    opts = compare.parse_args(["--restrict_ce_to_mask"] if restrict else [])
    agreement = compare.check_losses(TINY_SHAPE, opts)
    for term, v in agreement.items():
        assert math.isfinite(v["jax"]) and v["jax"] > 0, term
        assert v["abs_diff"] < 1e-4, (term, v)


def test_compare_runs_both_and_prints_ratio(tmp_path, capsys):
    out, md = tmp_path / "compare.json", tmp_path / "compare.md"
    assert compare.main([*TINY, "--rounds=2", f"--json_out={out}", f"--md_out={md}"]) == 0
    result = _load(out)
    assert result["loss_agreement"]["ok"]
    ours, ref = result["results"]
    assert (ours["impl"], ref["impl"]) == ("jax", "torch")
    assert ours["timed_steps"] == ref["timed_steps"] == 2
    (ratio,) = result["ratios"]
    assert ratio["ratio"] == pytest.approx(ours["tokens_per_s"] / ref["tokens_per_s"])
    assert "jax / torch" in capsys.readouterr().out
    table = md.read_text()
    assert "--rounds=2" in table and "| mlm |" in table
    assert f"**{ratio['ratio']:.2f}x**" in table


def test_isolated_rounds_pass_the_flags_through(tmp_path):
    opts = compare.parse_args([*TINY, "--remat", "--attention=xla", "--rounds=2"])
    argv = compare._script_argv(opts, TINY_SHAPE, 1)
    parsed = train_throughput.parse_args(argv)
    assert parsed.remat and parsed.attention == "xla" and parsed.steps == 1
    assert common.shapes_from_args(parsed, accelerator=False) == [TINY_SHAPE]
    assert torch_reference.parse_args(argv).torch_threads == 1


def test_gpu_suite_runs_every_benchmark_and_reports_failures(tmp_path):
    """benchmarks/gpu_suite.sh with a stand-in python that records its arguments."""
    suite = os.path.join(os.path.dirname(compare.__file__), "gpu_suite.sh")
    assert subprocess.run(["bash", "-n", suite]).returncode == 0
    if shutil.which("shellcheck"):
        assert subprocess.run(["shellcheck", suite], capture_output=True).returncode == 0
    fake = tmp_path / "python"
    fake.write_text(
        '#!/usr/bin/env bash\necho "$*" >>"$FAKE_LOG"\n'
        'echo "A/B      fake | $(basename "$1")"\n'
        '[[ "$*" != *"$FAKE_FAIL"* ]]\n'
    )
    fake.chmod(0o755)
    out, log = tmp_path / "out", tmp_path / "calls.log"
    env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log), "FAKE_FAIL": "--remat"}
    run = subprocess.run(["bash", suite, str(out)], env=env, capture_output=True, text=True)
    calls = log.read_text().splitlines()
    scripts = [os.path.basename(c.split()[0]) for c in calls]
    assert scripts.count("compare.py") == 2 and scripts.count("inference_speed.py") == 1
    assert any("--seq_len 512" in c and "--md_out" in c for c in calls)
    assert any("--ab=--no_fused_vocab_grad" in c for c in calls)
    assert all("--dtype bfloat16" in c for c in calls)
    # The failing A/B (--remat) fails the suite and is named, after every other run.
    assert run.returncode != 0 and len(calls) == 9
    summary = (out / "summary.md").read_text()
    assert "Failed: ab_remat" in summary and "### ab_fused_vocab_grad" in summary
