"""Launch scripts and scale presets: syntax, lint, usage, and their logic with stubbed tools.

The scripts drive gcloud, srun/scontrol and nvidia-smi, none of which exist here:
the tests put stand-ins for them (and for the venv's python) first on PATH and
check what the scripts would have run.
"""

import os
import re
import shutil
import stat
import subprocess
import sys

import pytest
from train_fixtures import REPO

sys.path.insert(0, REPO)
from configs import tpu as tpu_preset  # noqa: E402
from configs import v100 as v100_preset  # noqa: E402
from distil_jax import run_config  # noqa: E402

LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = sorted(os.listdir(LAUNCH))
PRESETS = {"v100": (v100_preset, 8), "tpu": (tpu_preset, 16)}  # devices they are sized for


def _bash(*args, env=None, cwd=REPO, timeout=60):
    return subprocess.run(
        ["bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _stub(directory, name: str, body: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("#!/usr/bin/env bash\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def _fake_python(directory) -> str:
    """A venv whose python records its arguments and device environment, then exits
    with $FAKE_EXIT; `python -c CODE` (the scripts' port picker) runs for real."""
    bin_dir = os.path.join(directory, "venv", "bin")
    os.makedirs(bin_dir)
    _stub(
        bin_dir,
        "python",
        f'if [[ "$1" == -c ]]; then exec {sys.executable} "$@"; fi\n'
        'echo "cuda=${CUDA_VISIBLE_DEVICES:-} local=${JAX_LOCAL_DEVICE_IDS:-} $*" >>"$FAKE_LOG"\n'
        'exit "${FAKE_EXIT:-0}"\n',
    )
    return os.path.dirname(bin_dir)


def _env(tmp_path, **extra) -> dict:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_"))}
    env.update(PATH=f"{stubs}:{env['PATH']}", FAKE_LOG=str(tmp_path / "calls.log"), **extra)
    return env


def _calls(tmp_path) -> list[str]:
    path = tmp_path / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


# --- every script -------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_has_usage(script):
    path = os.path.join(LAUNCH, script)
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert _bash("-n", path).returncode == 0
    with open(path) as f:
        assert "set -euo pipefail" in f.read()
    shown = _bash(path, "-h")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Usage:")
    wrong = _bash(path, "-Z")  # an unknown option: usage on stderr, status 2
    assert wrong.returncode == 2 and "Usage:" in wrong.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck():
    paths = [os.path.join(LAUNCH, s) for s in SCRIPTS]
    result = subprocess.run(
        ["shellcheck", "--shell=bash", *paths], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout


# --- SLURM --------------------------------------------------------------------------


def _slurm_env(tmp_path, nodes: int, tasks_per_node: int, gpus: int = 8, **extra) -> dict:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    # srun runs the task command once, as one task of the job would.
    _stub(stubs, "srun", 'shift\nexec "$@"\n')
    _stub(stubs, "scontrol", 'echo "scontrol $*" >>"$FAKE_LOG"\n')
    return _env(
        tmp_path,
        SLURM_JOB_ID="4242",
        SLURM_JOB_NUM_NODES=str(nodes),
        SLURM_NTASKS=str(nodes * tasks_per_node),
        SLURM_GPUS_ON_NODE=str(gpus),
        SLURM_SUBMIT_DIR=REPO,
        **extra,
    )


def test_slurm_one_process_per_gpu(tmp_path):
    venv = _fake_python(tmp_path)
    env = _slurm_env(tmp_path, nodes=2, tasks_per_node=8, CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
    workdir = str(tmp_path / "w")
    args = ["-e", venv, "-w", workdir, "--", "--config.num_train_steps=10"]
    result = _bash("launch/slurm_gpu.sbatch", *args, env=env)
    assert result.returncode == 0, result.stderr
    (call,) = _calls(tmp_path)
    assert "-m distil_jax.main --distributed --config=configs/v100.py" in call
    assert f"--workdir={workdir} --config.num_train_steps=10" in call
    # JAX's SLURM detection picks the GPU of the local rank: nothing forced.
    assert "local= " in call


def test_slurm_one_process_per_node_sees_all_gpus(tmp_path):
    venv = _fake_python(tmp_path)
    env = _slurm_env(tmp_path, nodes=2, tasks_per_node=1, gpus=4)
    assert _bash("launch/slurm_gpu.sbatch", "-e", venv, env=env).returncode == 0
    assert "local=0,1,2,3 " in _calls(tmp_path)[0]


def test_slurm_task_bound_to_one_gpu_uses_index_zero(tmp_path):
    venv = _fake_python(tmp_path)
    env = _slurm_env(tmp_path, nodes=1, tasks_per_node=8, CUDA_VISIBLE_DEVICES="5")
    assert _bash("launch/slurm_gpu.sbatch", "-e", venv, env=env).returncode == 0
    assert "cuda=5 local=0 " in _calls(tmp_path)[0]


def test_slurm_requeues_after_a_sigterm_checkpoint(tmp_path):
    venv = _fake_python(tmp_path)
    env = _slurm_env(tmp_path, nodes=1, tasks_per_node=8, FAKE_EXIT="75")
    result = _bash("launch/slurm_gpu.sbatch", "-e", venv, env=env)
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path)[-1] == "scontrol requeue 4242"
    # Any other failure is the job's status, and nothing is requeued.
    (tmp_path / "calls.log").unlink()
    env["FAKE_EXIT"] = "3"
    assert _bash("launch/slurm_gpu.sbatch", "-e", venv, env=env).returncode == 3
    assert not any(c.startswith("scontrol") for c in _calls(tmp_path))


def test_slurm_rejects_an_uneven_layout(tmp_path):
    venv = _fake_python(tmp_path)
    env = _slurm_env(tmp_path, nodes=1, tasks_per_node=4, gpus=8)
    result = _bash("launch/slurm_gpu.sbatch", "-e", venv, env=env)
    assert result.returncode == 2 and "one task per GPU" in result.stderr


# --- one machine --------------------------------------------------------------------


def _gpu_env(tmp_path, num_gpus: int, **extra) -> dict:
    env = _env(tmp_path, **extra)
    lines = "\\n".join(f"GPU {i}: Tesla V100-SXM2-16GB" for i in range(num_gpus))
    _stub(tmp_path / "stubs", "nvidia-smi", f'printf "{lines}\\n"\n')
    return env


def test_single_host_one_process_for_all_gpus(tmp_path):
    venv = _fake_python(tmp_path)
    env = _gpu_env(tmp_path, 4)
    result = _bash("launch/single_host_gpu.sh", "-e", venv, "-w", str(tmp_path / "w"), env=env)
    assert result.returncode == 0, result.stderr
    (call,) = _calls(tmp_path)
    assert call.startswith("cuda=0,1,2,3 ")
    assert "--distributed" not in call and "--num_processes" not in call


def test_single_host_one_process_per_gpu(tmp_path):
    venv = _fake_python(tmp_path)
    env = _gpu_env(tmp_path, 2)
    workdir = str(tmp_path / "w")
    result = _bash("launch/single_host_gpu.sh", "-p", "-e", venv, "-w", workdir, env=env)
    assert result.returncode == 0, result.stderr
    calls = sorted(_calls(tmp_path))
    assert len(calls) == 2
    ports = set()
    for i, call in enumerate(calls):
        assert call.startswith(f"cuda={i} ")
        assert f"--num_processes=2 --process_id={i}" in call
        ports.add(re.search(r"--coordinator_address=127\.0\.0\.1:(\d+)", call).group(1))
    assert len(ports) == 1  # one coordinator for both
    assert sorted(os.listdir(os.path.join(workdir, "logs"))) == [
        "process_0.log",
        "process_1.log",
    ]


def test_single_host_reports_a_failed_process(tmp_path):
    venv = _fake_python(tmp_path)
    env = _gpu_env(tmp_path, 2, FAKE_EXIT="3")
    result = _bash("launch/single_host_gpu.sh", "-p", "-e", venv, "-w", str(tmp_path), env=env)
    assert result.returncode == 3
    assert "a process failed (exit 3)" in result.stderr


# --- TPU ----------------------------------------------------------------------------


def _gcloud_env(tmp_path, vm_exists: bool) -> dict:
    env = _env(tmp_path)
    describe = "exit 0" if vm_exists else "exit 1"
    _stub(
        tmp_path / "stubs",
        "gcloud",
        f'echo "gcloud $*" >>"$FAKE_LOG"\nif [[ "$4" == describe ]]; then {describe}; fi\n',
    )
    return env


def test_tpu_train_runs_main_on_every_worker(tmp_path):
    env = _gcloud_env(tmp_path, vm_exists=True)
    args = ["-n", "pod", "-z", "us-central2-b", "-b", "bkt", "train", "--", "--config.seed=1"]
    result = _bash("launch/tpu_pod.sh", *args, env=env)
    assert result.returncode == 0, result.stderr
    (call,) = _calls(tmp_path)
    assert call.startswith("gcloud compute tpus tpu-vm ssh pod --zone=us-central2-b --worker=all")
    assert "-m distil_jax.main --distributed --config=configs/tpu.py" in call
    assert "--workdir=/mnt/bkt/distil_jax/tpu" in call
    assert "--config.data.prepared_dir=/mnt/bkt/distil_jax/prepared --config.seed=1" in call


def test_tpu_up_creates_a_missing_vm_and_installs_everywhere(tmp_path):
    env = _gcloud_env(tmp_path, vm_exists=False)
    args = ["-n", "pod", "-z", "z1", "-t", "v4-16", "-s", "up"]
    result = _bash("launch/tpu_pod.sh", *args, env=env)
    assert result.returncode == 0, result.stderr
    calls = _calls(tmp_path)
    assert calls[1].startswith("gcloud compute tpus tpu-vm create pod --zone=z1")
    assert "--accelerator-type=v4-16" in calls[1] and calls[1].endswith("--spot")
    assert any(" scp " in c and c.endswith("--worker=all") for c in calls)
    assert any("launch/install.sh" in c and " tpu" in c for c in calls)


def test_tpu_train_needs_a_shared_workdir(tmp_path):
    env = _gcloud_env(tmp_path, vm_exists=True)
    result = _bash("launch/tpu_pod.sh", "-n", "pod", "-z", "z1", "train", env=env)
    assert result.returncode == 2 and "shared" in result.stderr
    assert _calls(tmp_path) == []


# --- presets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_valid_and_reaches_4k_sequences(name):
    module, devices = PRESETS[name]
    config = module.get_config()
    run_config.validate(config)
    batch = config.batch
    assert batch.micro_batch_size * batch.accumulation_steps == 4096
    assert batch.micro_batch_size % devices == 0  # whole sequences on every device
    # V100s have no bfloat16; TPUs compute in it natively.
    assert config.dtype == {"v100": "float16", "tpu": "bfloat16"}[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_comments_every_field_it_sets(name):
    path = os.path.join(REPO, "configs", f"{name}.py")
    with open(path) as f:
        lines = [line.strip() for line in f]
    for i, line in enumerate(lines):
        if line.startswith("config.") and "=" in line:
            assert lines[i - 1].startswith("#") or lines[i - 1].startswith("config."), line
