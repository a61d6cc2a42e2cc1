"""Multi-process training: two real processes joined by jax.distributed on localhost.

Each child process sees 2 CPU devices; together they form one 4-device mesh and
exchange data with gloo, as hosts of a pod or nodes of a cluster would. The run
must equal a single-process run on the same global batches, write logs once, and
leave a checkpoint that one process can restore.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from train_fixtures import REPO, leaves, tiny_config

from distil_jax import distributed, run_config
from distil_jax.checkpoint import Checkpoints
from distil_jax.data.preparation import prepare
from distil_jax.metrics_log import read_metrics
from distil_jax.train import Run, train

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
# Two optimiser steps of 2 micro-steps of 8 sequences (4 per process): enough to cross
# an accumulation boundary, a checkpoint and the final export. The memory levers are
# on: rematerialised layers, and a mesh whose fsdp axis spans the two processes (the
# job's 4 devices form data 1 x fsdp 2 x tensor 2; the reference's 8, data 2 x 2 x 2),
# so parameters and optimiser state are split across processes and each process
# writes its own shards of the checkpoint.
OVERRIDES = {
    "num_train_steps": 2,
    "checkpoint_every": 2,
    "batch.micro_batch_size": 8,
    "batch.accumulation_steps": 2,
    "mesh.fsdp": 2,
    "mesh.tensor": 2,
    "remat": True,
    "eval_batches": 2,
}
# Compiling and running on 2 shared CPU cores; a hung collective must not hang pytest.
TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(path: str, root: str) -> str:
    """A config file for `--config` that rebuilds the test's tiny config in the child."""
    with open(path, "w") as f:
        f.write(
            f"import sys\nsys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
            "from train_fixtures import tiny_config\n\n\n"
            f"def get_config():\n    return tiny_config({root!r}, **{OVERRIDES!r})\n"
        )
    return path


def _launch_job(config_file: str, workdir: str, log_dir: str) -> list[subprocess.Popen]:
    """`python -m distil_jax.main` once per process, as a launcher on each host would."""
    port = _free_port()
    env = dict(
        os.environ,
        # Replaces conftest's 8 fake devices: each "host" has 2.
        XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
        JAX_PLATFORMS="cpu",
    )
    procs = []
    for i in range(NUM_PROCESSES):
        log = open(os.path.join(log_dir, f"process_{i}.log"), "w")  # a file: pipes can fill
        cmd = [
            sys.executable,
            "-m",
            "distil_jax.main",
            f"--config={config_file}",
            f"--workdir={workdir}",
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={NUM_PROCESSES}",
            f"--process_id={i}",
        ]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()  # the child holds its own copy of the descriptor
    return procs


def _wait_all(procs: list[subprocess.Popen], log_dir: str) -> None:
    """Waits for every process; if one fails or time runs out, stops the rest and fails.

    A process whose peer died would otherwise wait in a collective until the
    coordinator's heartbeat timeout.
    """
    deadline = time.monotonic() + TIMEOUT_S
    failure = None
    while any(p.poll() is None for p in procs):
        if any(p.returncode not in (None, 0) for p in procs):
            failure = "a process failed"
            break
        if time.monotonic() > deadline:
            failure = f"timed out after {TIMEOUT_S} s"
            break
        time.sleep(0.5)
    if failure is None and all(p.returncode == 0 for p in procs):
        return
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    tails = []
    for i, p in enumerate(procs):
        with open(os.path.join(log_dir, f"process_{i}.log")) as f:
            tails.append(f"--- process {i} (exit {p.returncode}) ---\n{f.read()[-4000:]}")
    pytest.fail(f"{failure or 'a process failed'}\n" + "\n".join(tails))


def test_two_processes_equal_one_process(tmp_path):
    root = str(tmp_path)
    cfg = tiny_config(root, **OVERRIDES)  # writes the teacher and corpus once, for all runs
    # Prepared before any run starts: the job's process 0 and the reference run would
    # otherwise both prepare the same directory at the same time.
    prepare(cfg.data, run_config.tokenizer_dir(cfg))

    job_dir, ref_dir = str(tmp_path / "job"), str(tmp_path / "reference")
    os.makedirs(tmp_path / "logs")
    procs = _launch_job(
        _write_config(str(tmp_path / "job_config.py"), root), job_dir, str(tmp_path / "logs")
    )
    # The reference (one process, this test's 8 devices, the same global batches) runs
    # while the job does: the data layout over devices differs, the batches do not.
    try:
        ref_results = train(tiny_config(root, **OVERRIDES), ref_dir)
    finally:
        _wait_all(procs, str(tmp_path / "logs"))

    # Logs, reports and the export come from process 0 alone: one metrics file in the
    # workdir, one line per logged step (a second writer would append duplicates).
    found = [
        os.path.join(d, f)
        for d, _, files in os.walk(job_dir)
        for f in files
        if f == "metrics.jsonl"
    ]
    assert found == [os.path.join(job_dir, "metrics.jsonl")]
    records = read_metrics(job_dir)
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == [1, 2]
    assert len(os.listdir(os.path.join(job_dir, "tensorboard"))) == 1
    with open(os.path.join(job_dir, "results.json")) as f:
        job_results = json.load(f)
    assert os.path.isfile(os.path.join(job_results["export_dir"], "config.json"))

    # Same losses and held-out figures as the single-process run ...
    ref_records = [r for r in read_metrics(ref_dir) if r["kind"] == "train"]
    for got, want in zip([r for r in records if r["kind"] == "train"], ref_records, strict=True):
        for key in ("loss", "loss_ce", "loss_mlm", "loss_cos"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
    for key in ("mlm_loss", "mlm_accuracy"):
        np.testing.assert_allclose(
            job_results["student_eval"][key], ref_results["student_eval"][key], rtol=1e-5
        )

    # ... and the same parameters, read back from the collectively written checkpoint.
    job_ckpt, ref_ckpt = Checkpoints(job_dir), Checkpoints(ref_dir)
    assert job_ckpt.all_steps() == [2]
    # Written collectively: each process wrote its own shards (Orbax's OCDBT layout
    # keeps one store per process).
    state_dir = os.path.join(job_ckpt.directory, "2", "state")
    assert {f"ocdbt.process_{i}" for i in range(NUM_PROCESSES)} <= set(os.listdir(state_dir))
    _, got = job_ckpt.restore_params()
    _, want = ref_ckpt.restore_params()
    ref_ckpt.close()
    for a, b in zip(leaves(want), leaves(got), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

    # The whole state (optimiser, step, data position) restores onto this single
    # process's 8-device mesh: a run can resume with another number of hosts.
    run = Run(tiny_config(root, **OVERRIDES), job_dir)
    state, data_state = job_ckpt.restore(run.abstract_state)
    job_ckpt.close()
    assert int(state.step) == 2 * OVERRIDES["batch.accumulation_steps"]
    assert int(state.opt_state.gradient_step) == 2
    assert data_state["step"] == int(state.step)
    for a, b in zip(leaves(state.params), leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)
    assert state.params["layer_0"]["ffn"]["intermediate"]["kernel"].sharding.mesh.size == 8


# --- settings resolution (no processes started) ------------------------------------


def test_resolve_prefers_arguments_then_project_then_jax_variables():
    env = {
        "DISTIL_JAX_COORDINATOR": "10.0.0.1:1234",
        "JAX_COORDINATOR_ADDRESS": "10.0.0.9:9999",
        "JAX_NUM_PROCESSES": "4",
        "JAX_PROCESS_ID": "3",
    }
    got = distributed.resolve(process_id=1, environ=env)
    assert got == distributed.Settings("10.0.0.1:1234", 4, 1)
    assert got.explicit
    # Nothing given: everything is left to JAX's cluster detection (SLURM, TPU).
    assert distributed.resolve(environ={}) == distributed.Settings()
    assert not distributed.resolve(environ={}).explicit


@pytest.mark.parametrize(
    "kwargs, env, message",
    [
        ({"coordinator_address": "localhost"}, {}, "HOST:PORT"),
        ({}, {"DISTIL_JAX_NUM_PROCESSES": "two"}, "DISTIL_JAX_NUM_PROCESSES"),
        ({"num_processes": 2, "process_id": 2}, {}, "not below"),
        ({"num_processes": 0}, {}, ">= 1"),
    ],
)
def test_resolve_rejects_bad_settings(kwargs, env, message):
    with pytest.raises(ValueError, match=message):
        distributed.resolve(**kwargs, environ=env)


def test_requested_only_by_the_project_variables():
    assert distributed.requested({"DISTIL_JAX_NUM_PROCESSES": "2"})
    # A SLURM allocation or JAX's own variable alone may be a single-process job.
    assert not distributed.requested({"SLURM_NTASKS": "8", "JAX_COORDINATOR_ADDRESS": "h:1"})


def test_one_process_needs_no_coordinator():
    # num_processes=1 returns before jax.distributed (which this process must not join).
    settings = distributed.initialize(num_processes=1)
    assert settings.num_processes == 1
    assert jax.process_count() == 1
