"""The paper's setting: 8 x 16 GB V100, float16, 4,096 sequences per optimiser step.

    sbatch launch/slurm_gpu.sbatch -c configs/v100.py -w workdirs/v100    # SLURM, 1 node x 8
    launch/single_host_gpu.sh -c configs/v100.py -w workdirs/v100         # one 8-GPU machine

Everything else is configs/base.py (the DistilBERT recipe). V100s have no
bfloat16: compute runs in float16 with dynamic loss scaling (float32 master
weights and optimiser state), or set --config.dtype=float32 (about 8x slower on
the tensor cores). Install the CUDA-12 JAX wheels (launch/install.sh cuda12):
CUDA 13 no longer supports Volta.

Throughput: not measured on V100s yet. One micro-step costs ~340 GFLOP per
512-token sequence (teacher forward + student forward/backward; 80 GFLOP at 128
tokens); at 25-35% of the V100's 125 TFLOP/s float16 peak that is ~90-130
full-length sequences/s per GPU, ~4-6 s per 4,096-sequence step on 8 GPUs.
Measure with `python benchmarks/train_throughput.py --seq_len 128,512 --batch 16
--dtype float16` and see the progress bar's tok/s.

Memory: 16 sequences of up to 512 tokens per GPU. If a GPU runs out of memory,
set --config.remat=True (recompute the student's layers: less activation memory,
~20% more compute), or halve micro_batch_size and double accumulation_steps
(same optimiser step; the global batch does not change).
"""

from configs.base import get_config as base_config


def get_config():
    config = base_config()
    # No bfloat16 on V100 (sm_70): float16 with dynamic loss scaling (automatic).
    config.dtype = "float16"
    # 8 GPUs x 16 sequences per micro-step; must stay divisible by the GPU count.
    config.batch.micro_batch_size = 128
    # 128 x 32 = 4,096 sequences per optimiser step (the paper's "up to 4K").
    config.batch.accumulation_steps = 32
    # Pure data parallelism: the 66M-parameter student and its optimiser state fit
    # on every GPU, so splitting them (fsdp) would only add communication.
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.tensor = 1
    # 16 per GPU is expected to fit in 16 GB without recomputation (an estimate, not
    # measured): the first lever to pull on an out-of-memory error.
    config.remat = False
    # cuDNN's fused attention needs Ampere or newer; XLA's runs everywhere.
    config.attention_implementation = "xla"
    # ~40 min of training between checkpoints at the rate above; a SLURM time limit
    # or preemption saves on its own (SIGTERM), this bounds the loss from a crash.
    config.checkpoint_every = 500
    return config
