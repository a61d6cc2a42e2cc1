"""Preemption safety: SIGTERM, half-written checkpoints, non-finite losses."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from train_fixtures import REPO, leaves, tiny_config

from distil_jax.checkpoint import COMMIT_MARKER, Checkpoints
from distil_jax.train import Preempted, train


def _write_config_file(path: str, root: str, overrides: dict) -> str:
    with open(path, "w") as f:
        f.write(
            f"import sys\nsys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
            "from train_fixtures import tiny_config\n\n\n"
            f"def get_config():\n    return tiny_config({root!r}, **{overrides!r})\n"
        )
    return path


def test_sigterm_saves_exits_and_resumes_to_the_same_params(tmp_path):
    root = str(tmp_path)
    overrides = {"num_train_steps": 16, "checkpoint_every": 100, "log_every": 1}
    straight = train(tiny_config(root, **overrides), str(tmp_path / "straight"))
    assert straight["final_step"] == 16

    workdir = str(tmp_path / "interrupted")
    cfg_file = _write_config_file(str(tmp_path / "cfg.py"), root, overrides)
    cmd = [sys.executable, "-m", "distil_jax.main", f"--config={cfg_file}", f"--workdir={workdir}"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # wait until steps are running
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == Preempted.exit_code, out[-3000:]
    ckpt = Checkpoints(workdir)
    saved = ckpt.latest_step()
    ckpt.close()
    assert saved is not None and 3 <= saved < 16, saved
    assert not os.path.exists(os.path.join(workdir, "export"))

    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ckpt_a, ckpt_b = Checkpoints(str(tmp_path / "straight")), Checkpoints(workdir)
    (_, want), (_, got) = ckpt_a.restore_params(16), ckpt_b.restore_params(16)
    ckpt_a.close(), ckpt_b.close()
    for a, b in zip(leaves(want), leaves(got), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_half_written_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    workdir = str(tmp_path / "w")
    train(tiny_config(tmp_path, **{"num_train_steps": 4, "checkpoint_every": 2}), workdir)
    directory = os.path.join(workdir, "checkpoints")
    # A save killed before Orbax marked it complete, and one killed before its rename.
    os.remove(os.path.join(directory, "4", COMMIT_MARKER))
    shutil.copytree(
        os.path.join(directory, "2"), os.path.join(directory, "6.orbax-checkpoint-tmp-1234")
    )
    with caplog.at_level(logging.WARNING):
        ckpt = Checkpoints(workdir)
    assert ckpt.latest_step() == 2
    _, params = ckpt.restore_params()
    ckpt.close()
    assert all(np.all(np.isfinite(x)) for x in leaves(params))
    assert "never finished" in caplog.text
    kept = os.listdir(os.path.join(workdir, "incomplete_checkpoints"))
    assert len(kept) == 2  # moved aside, not deleted


def test_non_finite_loss_stops_with_a_clear_error_keeping_the_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "w")
    cfg = tiny_config(tmp_path, **{"num_train_steps": 4, "checkpoint_every": 2})
    train(cfg, workdir)
    # Continue the same run with a poisoned teacher: every loss from now on is NaN.
    poisoned = str(tmp_path / "poisoned_teacher")
    shutil.copytree(cfg.teacher, poisoned)
    from safetensors.numpy import load_file, save_file

    weights = load_file(os.path.join(poisoned, "model.safetensors"))
    key = "bert.embeddings.LayerNorm.weight"
    weights[key] = np.full_like(weights[key], np.nan)
    save_file(weights, os.path.join(poisoned, "model.safetensors"), metadata={"format": "pt"})
    cfg2 = tiny_config(
        tmp_path, **{"num_train_steps": 8, "checkpoint_every": 2, "teacher": poisoned}
    )
    with pytest.raises(FloatingPointError, match="non-finite loss.*last good checkpoint is step 4"):
        train(cfg2, workdir)
    ckpt = Checkpoints(workdir)
    assert ckpt.latest_step() == 4
    ckpt.close()
