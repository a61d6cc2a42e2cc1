"""The sharded training step, accumulation, resume and the trainer end to end."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from train_fixtures import REPO, leaves, tiny_config
from transformers import AutoModelForMaskedLM

from distil_jax import convert, sharding
from distil_jax.data import loader as data_loader
from distil_jax.train import Run, train


def _batches(run, n, batch_size=None):
    loader = data_loader.make_train_loader(
        run.config.data,
        run.prepared_dir,
        global_batch_size=batch_size or run.config.batch.micro_batch_size,
        process_index=0,
        process_count=1,
        seed=0,
    )
    return [next(loader) for _ in range(n)]


def _run_steps(run, batches):
    state = run.initial_state()
    step = run.train_step_fn()
    teacher_before = leaves(run.teacher_params) if run.teacher is not None else None
    metrics = []
    for b in batches:
        state, m = step(
            state,
            run.teacher_params,
            sharding.host_to_global(b, run.mesh),
            run.token_probs,
            run.rng,
        )
        metrics.append(jax.device_get(m))
    return state, metrics, teacher_before


@pytest.mark.parametrize(
    "mesh",
    [
        dict(data=8, fsdp=1, tensor=1),
        dict(data=2, fsdp=2, tensor=2),
    ],
)
def test_sharded_step_equals_single_device(tmp_path, mesh):
    base = tiny_config(
        tmp_path, **{"student.hidden_dropout": 0.0, "student.attention_dropout": 0.0}
    )
    single = Run(base, str(tmp_path / "w1"), devices=jax.devices()[:1])
    batches = _batches(single, 4)
    want, want_metrics, _ = _run_steps(single, batches)

    cfg = tiny_config(
        tmp_path,
        **{f"mesh.{k}": v for k, v in mesh.items()},
        **{"student.hidden_dropout": 0.0, "student.attention_dropout": 0.0},
    )
    multi = Run(cfg, str(tmp_path / "w8"))
    assert multi.mesh.devices.size == 8
    got, got_metrics, teacher_before = _run_steps(multi, batches)
    for a, b in zip(leaves(want.params), leaves(got.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    np.testing.assert_allclose(want_metrics[-1]["loss"], got_metrics[-1]["loss"], rtol=1e-5)
    # The teacher is an input: bit-identical after the steps.
    for a, b in zip(teacher_before, leaves(multi.teacher_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # Params really are split over the mesh when fsdp/tensor > 1.
    kernel = got.params["layer_0"]["ffn"]["intermediate"]["kernel"]
    expected_shards = mesh["fsdp"] * mesh["tensor"]
    assert len({str(s.index) for s in kernel.addressable_shards}) == expected_shards


def test_accumulated_micro_steps_equal_one_large_step(tmp_path):
    # word_keep=1 leaves chosen tokens as they are and alpha_mlm=0, so CE and cosine over all
    # tokens do not depend on which tokens masking picks; full rows give equal counts per
    # micro-batch, so k micro-batches of b average to exactly one batch of k*b.
    common = {
        "student.hidden_dropout": 0.0,
        "student.attention_dropout": 0.0,
        "masking.word_mask": 0.0,
        "masking.word_keep": 1.0,
        "masking.word_rand": 0.0,
        "loss.alpha_mlm": 0.0,
        "optim.warmup_fraction": 0.0,
    }
    small = Run(
        tiny_config(
            tmp_path, **common, **{"batch.accumulation_steps": 2, "batch.micro_batch_size": 8}
        ),
        str(tmp_path / "a"),
    )
    big = Run(
        tiny_config(
            tmp_path, **common, **{"batch.accumulation_steps": 1, "batch.micro_batch_size": 16}
        ),
        str(tmp_path / "b"),
    )
    rng = np.random.default_rng(0)
    full = rng.integers(5, small.student_cfg.vocab_size, size=(32, 16)).astype(np.int32)
    full[:, 0], full[:, -1] = 2, 3  # [CLS] ... [SEP], no padding
    as_batch = lambda ids: {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    s_small, _, _ = _run_steps(small, [as_batch(full[i : i + 8]) for i in range(0, 32, 8)])
    s_big, _, _ = _run_steps(big, [as_batch(full[i : i + 16]) for i in range(0, 32, 16)])
    for a, b in zip(leaves(s_small.params), leaves(s_big.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # The schedule advanced once per optimiser step in both: 2 updates each.
    assert int(s_small.opt_state.gradient_step) == int(s_big.opt_state.gradient_step) == 2


def test_fused_chunked_ce_equals_unchunked_autodiff(tmp_path):
    """`vocab_losses`' hand-formed gradient over 4-position chunks = JAX's autodiff of
    the rematerialised CE over chunks of gcd(L, 64) (whole sequences of 32), in the step."""
    no_dropout = {"student.hidden_dropout": 0.0, "student.attention_dropout": 0.0}
    cfgs = [
        tiny_config(
            tmp_path, **no_dropout, **{"loss.fused_vocab_grad": fused, "loss.logits_chunk_len": c}
        )
        for fused, c in ((True, 4), (False, 64))
    ]
    runs = [Run(c, str(tmp_path / f"f{i}")) for i, c in enumerate(cfgs)]
    batches = _batches(runs[0], 3)
    (sa, ma, _), (sb, mb, _) = (_run_steps(r, batches) for r in runs)
    for key in ("loss", "loss_ce", "loss_mlm", "loss_cos", "grad_norm"):
        np.testing.assert_allclose(ma[-1][key], mb[-1][key], rtol=1e-5)
    for a, b in zip(leaves(sa.params), leaves(sb.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_restrict_ce_to_mask_uses_masked_positions(tmp_path):
    run = Run(tiny_config(tmp_path, **{"loss.restrict_ce_to_mask": True}), str(tmp_path / "w"))
    _, metrics, _ = _run_steps(run, _batches(run, 2))
    assert all(np.isfinite(m["loss_ce"]) and m["loss_ce"] > 0 for m in metrics)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_steps_keep_float32_masters(tmp_path, dtype):
    run = Run(tiny_config(tmp_path, dtype=dtype), str(tmp_path / "w"))
    state, metrics, _ = _run_steps(run, _batches(run, 4))
    assert (state.loss_scale is not None) == (dtype == "float16")  # dynamic loss scaling
    assert all(np.isfinite(m["loss"]) for m in metrics)
    assert {x.dtype for x in leaves(state.params)} == {np.dtype(np.float32)}
    teacher_kernel = run.teacher_params["layer_0"]["ffn"]["intermediate"]["kernel"]
    assert teacher_kernel.dtype == dtype  # the frozen teacher is stored in the compute dtype
    assert run.teacher_params["layer_0"]["output_norm"]["scale"].dtype == np.float32


def _main(config_overrides: dict, workdir: str, root: str):
    """`python -m distil_jax.main` on the tiny config, in a fresh process."""
    config_file = workdir + "_config.py"
    with open(config_file, "w") as f:
        f.write(
            f"import sys\nsys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
            "from train_fixtures import tiny_config\n\n\n"
            f"def get_config():\n    return tiny_config({root!r}, **{config_overrides!r})\n"
        )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "distil_jax.main",
            f"--config={config_file}",
            f"--workdir={workdir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_resume_in_a_fresh_process_equals_a_straight_run(tmp_path):
    root = str(tmp_path)
    straight = tiny_config(root, **{"num_train_steps": 4, "checkpoint_every": 2})
    train(straight, str(tmp_path / "straight"))
    from distil_jax.checkpoint import Checkpoints

    ck = Checkpoints(str(tmp_path / "straight"))
    _, want = ck.restore_params(4)
    ck.close()

    halves = str(tmp_path / "halves")
    first = train(
        tiny_config(root, **{"num_train_steps": 4, "checkpoint_every": 2, "steps_per_run": 2}),
        halves,
    )
    assert first["final_step"] == 2 and "export_dir" not in first
    assert not os.path.exists(os.path.join(halves, "export"))
    second = _main({"num_train_steps": 4, "checkpoint_every": 2}, halves, root)
    assert second.returncode == 0, second.stderr[-3000:]
    ck = Checkpoints(halves)
    assert ck.all_steps()[-1] == 4
    _, got = ck.restore_params(4)
    ck.close()
    for a, b in zip(leaves(want), leaves(got), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["distill", "pretrain"])
def test_end_to_end_lowers_loss_and_exports(tmp_path, mode):
    cfg = tiny_config(
        tmp_path,
        mode=mode,
        **{
            "num_train_steps": 30,
            "checkpoint_every": 30,
            "optim.learning_rate": 3e-3,
            "eval_every": 30,
        },
    )
    results = train(cfg, str(tmp_path / "w"))
    records = [json.loads(x) for x in open(tmp_path / "w" / "metrics.jsonl")]
    steps = [r for r in records if r["kind"] == "train"]
    first, last = (
        lambda k: np.mean([r[k] for r in steps[:3]]),
        lambda k: np.mean([r[k] for r in steps[-5:]]),
    )
    # Random words: the MLM loss can only fall to the unigram entropy, so the checks are
    # relative; the cosine term (student copying the teacher's states) must fall clearly.
    assert last("loss") < 0.98 * first("loss"), [r["loss"] for r in steps]
    if mode == "distill":
        assert last("loss_cos") < 0.6 * first("loss_cos")
    model, info = AutoModelForMaskedLM.from_pretrained(
        results["export_dir"], output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    expected_type = "DistilBertForMaskedLM" if mode == "distill" else "BertForMaskedLM"
    assert type(model).__name__ == expected_type
    assert os.path.isdir(tmp_path / "w" / "tensorboard")
    assert "student_eval" in results and 0 <= results["student_eval"]["mlm_accuracy"] <= 1
    # The export CLI rebuilds the same directory from the checkpoint alone.
    out = str(tmp_path / "cli_export")
    assert convert.main(["export", "--workdir", str(tmp_path / "w"), "--out", out]) == 0
    again = AutoModelForMaskedLM.from_pretrained(out)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_main_reports_bad_input_without_a_traceback(tmp_path):
    config_file = tmp_path / "bad_config.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from configs.base import get_config as base\n\n\n"
        "def get_config():\n"
        "    c = base()\n"
        f"    c.teacher = {str(tmp_path / 'no_such_teacher')!r}\n"
        "    return c\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "distil_jax.main",
            f"--config={config_file}",
            f"--workdir={tmp_path / 'w'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error:" in out.stderr and "no_such_teacher" in out.stderr
    assert "Traceback" not in out.stderr
