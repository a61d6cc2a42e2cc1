"""The DistilBERT recipe on a Cloud TPU v4-32 slice (16 chips, 4 hosts), bfloat16.

    launch/tpu_pod.sh -n distil -z us-central2-b -t v4-32 -b BUCKET all
    launch/tpu_pod.sh -n distil -z us-central2-b -b BUCKET logs

Everything else is configs/base.py. TPUs compute natively in bfloat16 (no loss
scaling needed); master weights and optimiser state stay float32. Other slice
sizes: keep micro_batch_size x accumulation_steps = 4,096 and micro_batch_size
divisible by the chip count, e.g. v4-8 (4 chips):
`--config.batch.micro_batch_size=128 --config.batch.accumulation_steps=32`.

Throughput: not measured on TPUs yet. One micro-step costs ~340 GFLOP per
512-token sequence (80 GFLOP at 128 tokens); at 35-45% of a v4 chip's 275 TFLOP/s
bfloat16 peak that is ~280-360 full-length sequences/s per chip, ~1 s per
4,096-sequence step on 16 chips.
"""

from configs.base import get_config as base_config


def get_config():
    config = base_config()
    # The TPU's native matmul type; no loss scaling.
    config.dtype = "bfloat16"
    # 16 chips x 32 sequences per micro-step (32 GiB of HBM per v4 chip).
    config.batch.micro_batch_size = 512
    # 512 x 8 = 4,096 sequences per optimiser step.
    config.batch.accumulation_steps = 8
    # Pure data parallelism over all chips of all hosts: the student and its
    # optimiser state (~1 GB) fit on every chip.
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.tensor = 1
    # No recomputation: memory is not the limit at 32 sequences per chip.
    config.remat = False
    # XLA's attention (the TPU has no cuDNN).
    config.attention_implementation = "xla"
    # Checkpoints (to the bucket) every ~10 min at the rate above; a maintenance event
    # or `tpu_pod.sh stop` (SIGTERM) saves on its own.
    config.checkpoint_every = 500
    return config
