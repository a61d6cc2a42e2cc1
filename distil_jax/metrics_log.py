"""Where training metrics go: JSON lines, TensorBoard and a progress bar (process 0 only)."""

from __future__ import annotations

import json
import math
import os
import time

import jax
from tqdm.auto import tqdm


class MetricsLog:
    """Writes `<workdir>/metrics.jsonl` and TensorBoard events; shows a progress bar."""

    def __init__(
        self, workdir: str, total_steps: int, start_step: int, enabled: bool | None = None
    ):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:  # TensorBoard is optional; JSON lines always work
            self._tb = None
        self._bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            desc="distil",
            smoothing=0.1,
        )

    def write(self, step: int, metrics: dict[str, float], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, "time": time.time(), **metrics}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()

    def progress(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = {k: metrics[k] for k in ("loss", "loss_ce", "loss_mlm", "loss_cos") if k in metrics}
        postfix = {k.removeprefix("loss_"): f"{v:.3f}" for k, v in shown.items()}
        if "tokens_per_s" in metrics:
            postfix["tok/s"] = f"{metrics['tokens_per_s']:.3g}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
