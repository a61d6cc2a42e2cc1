"""Training and evaluation loaders over a prepared directory, built on grain.

A loader is ``grain.MapDataset.range(steps).map(assemble)``: element ``k`` is
this process's part of global batch ``k``, assembled from the batch plan
(``batch_plan.py``) by reading only this process's records. grain's thread
prefetching runs ahead; its iterator state is just the index of the next batch,
and since the plan can be rebuilt for any step, restoring that index resumes
exactly where the run stopped (even with another number of processes).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import grain
import numpy as np

from distil_jax.data import batch_plan
from distil_jax.data.config import source_identity, source_specs, validate
from distil_jax.data.prepared import PreparedSplit, open_split

STATE_VERSION = 1


def per_process_batch_size(
    global_batch_size: int, process_count: int, local_device_count: int | None = None
) -> int:
    """``global_batch_size // process_count``, or a ValueError naming the numbers."""
    if global_batch_size < 1:
        raise ValueError(f"global batch size must be >= 1, got {global_batch_size}")
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the process count "
            f"{process_count}"
        )
    per_process = global_batch_size // process_count
    if local_device_count and per_process % local_device_count:
        raise ValueError(
            f"per-process batch size {per_process} (global {global_batch_size} / "
            f"{process_count} processes) is not divisible by the {local_device_count} "
            "local devices"
        )
    return per_process


class Loader:
    """Iterator of ``{'input_ids', 'attention_mask'}`` int32 ``[b, Lb]`` batches."""

    def __init__(
        self,
        data: PreparedSplit,
        plan_of_epoch: Callable[[int], batch_plan.EpochPlan],
        steps_per_epoch: int,
        num_epochs: int | None,
        process_index: int,
        process_count: int,
        read_options: grain.ReadOptions,
        signature: dict,
    ):
        self._data = data
        self._plan_of_epoch = plan_of_epoch
        self._plans: dict[int, batch_plan.EpochPlan] = {}
        self._plan_lock = threading.Lock()
        self._process_index, self._process_count = process_index, process_count
        self._pad_id = data.summary["special_token_ids"]["pad"]
        self._signature = signature
        self.steps_per_epoch = steps_per_epoch
        self.num_steps = steps_per_epoch * num_epochs if num_epochs is not None else None
        # Infinite when num_epochs is None; grain treats sys.maxsize as unbounded.
        total = self.num_steps if self.num_steps is not None else sys.maxsize
        dataset = grain.MapDataset.range(total).map(self._assemble)
        self._iterator = iter(dataset.to_iter_dataset(read_options))

    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    @property
    def step(self) -> int:
        """Batches delivered so far (the index of the next global batch)."""
        return self._iterator.get_state()["next_index"]

    @property
    def epoch(self) -> int:
        """Complete epochs delivered so far (= the epoch of the next batch)."""
        return self.step // self.steps_per_epoch

    def get_state(self) -> dict:
        """JSON-serialisable state: the next step plus what the plan depends on."""
        return dict(version=STATE_VERSION, step=self.step, plan=self._signature)

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue with the batch an uninterrupted run would give after ``state``."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} != {STATE_VERSION}")
        saved = dict(state["plan"])
        if saved != self._signature:
            changed = sorted(
                k
                for k in set(saved) | set(self._signature)
                if saved.get(k) != self._signature.get(k)
            )
            raise ValueError(
                f"loader state was saved for another batch plan ({', '.join(changed)} differ); "
                "the same batches cannot be reproduced"
            )
        self._iterator.set_state({"next_index": int(state["step"])})

    def close(self) -> None:
        """Stop the prefetch threads (the loader cannot be used afterwards)."""
        self._iterator.close()

    def _plan(self, epoch: int) -> batch_plan.EpochPlan:
        with self._plan_lock:  # prefetch threads share plans; build each once
            if epoch not in self._plans:
                # Two epochs at most: prefetching may straddle an epoch boundary.
                for old in [e for e in self._plans if e < epoch - 1]:
                    del self._plans[old]
                self._plans[epoch] = self._plan_of_epoch(epoch)
            return self._plans[epoch]

    def _assemble(self, step: int) -> dict[str, np.ndarray]:
        epoch, position = divmod(step, self.steps_per_epoch)
        plan = self._plan(epoch)
        rows = batch_plan.process_rows(
            plan.rows[position], self._process_index, self._process_count
        )
        length = int(plan.lengths[position])
        input_ids = np.full((len(rows), length), self._pad_id, np.int32)  # [b, Lb]
        attention_mask = np.zeros((len(rows), length), np.int32)  # [b, Lb]
        real = np.flatnonzero(rows != batch_plan.PAD_ROW)
        records = self._data.source.__getitems__([int(rows[r]) for r in real])
        for r, record in zip(real, records, strict=True):
            ids = record["input_ids"]
            input_ids[r, : len(ids)] = ids
            attention_mask[r, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def _open(
    data_cfg: Mapping[str, Any],
    prepared_dir: str,
    split: str,
    global_batch_size: int,
    process_index: int,
    process_count: int,
) -> tuple[PreparedSplit, np.ndarray]:
    validate(data_cfg)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    per_process_batch_size(global_batch_size, process_count)
    data = open_split(prepared_dir, split)
    buckets = batch_plan.bucket_ids(data.lengths, tuple(data_cfg["bucket_lengths"]))
    return data, buckets


def _read_options(data_cfg: Mapping[str, Any]) -> grain.ReadOptions:
    return grain.ReadOptions(
        num_threads=data_cfg["loader_threads"], prefetch_buffer_size=data_cfg["prefetch_batches"]
    )


def _weights(data_cfg: Mapping[str, Any], data: PreparedSplit, prepared_dir: str) -> list[float]:
    """Mixing weights of the config's sources, which must be the prepared ones."""
    specs = source_specs(data_cfg)
    prepared = [source_identity(s) for s in data.summary["sources"]]
    if [source_identity(s) for s in specs] != prepared:
        raise ValueError(
            f"data.sources differ from the sources prepared in {prepared_dir!r} "
            f"({prepared}); only their weights may change without preparing again"
        )
    return [float(s["weight"]) for s in specs]


def make_train_loader(
    data_cfg: Mapping[str, Any],
    prepared_dir: str,
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    seed: int | None = None,
    split: str = "train",
    num_epochs: int | None = None,
) -> Loader:
    """Shuffled, bucketed, weighted batches of ``global_batch_size // process_count`` rows.

    seed: shuffle seed (None = data.shuffle_seed). num_epochs: None repeats forever
    (``loader.epoch`` counts the epochs); otherwise the loader stops after that many.
    Every process must pass the same data_cfg, seed and global_batch_size.
    """
    data, buckets = _open(
        data_cfg, prepared_dir, split, global_batch_size, process_index, process_count
    )
    seed = data_cfg["shuffle_seed"] if seed is None else int(seed)
    weights = _weights(data_cfg, data, prepared_dir)
    bucket_lengths = tuple(data_cfg["bucket_lengths"])
    per_epoch = batch_plan.sequences_per_epoch(data.source_ids, weights)
    steps_per_epoch = per_epoch // global_batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"global batch size {global_batch_size} exceeds the {per_epoch} sequences of one "
            f"epoch of {prepared_dir!r} split {split!r}"
        )

    def plan_of_epoch(epoch: int) -> batch_plan.EpochPlan:
        return batch_plan.train_epoch(
            buckets, data.source_ids, weights, bucket_lengths, global_batch_size, seed, epoch
        )

    signature = dict(
        kind="train",
        split=split,
        num_sequences=len(data),
        tokenizer_fingerprint=data.summary["tokenizer_fingerprint"],
        seed=seed,
        global_batch_size=global_batch_size,
        bucket_lengths=list(bucket_lengths),
        weights=weights,
    )
    return Loader(
        data,
        plan_of_epoch,
        steps_per_epoch,
        num_epochs,
        process_index,
        process_count,
        _read_options(data_cfg),
        signature,
    )


def make_eval_loader(
    data_cfg: Mapping[str, Any],
    prepared_dir: str,
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    split: str = "validation",
) -> Loader:
    """Each sequence of ``split`` exactly once, grouped by bucket, unshuffled.

    The last global batch is completed with all-pad rows (attention_mask 0), so
    every process yields the same number of batches of the same shapes.
    """
    data, buckets = _open(
        data_cfg, prepared_dir, split, global_batch_size, process_index, process_count
    )
    plan = batch_plan.eval_pass(buckets, tuple(data_cfg["bucket_lengths"]), global_batch_size)
    signature = dict(
        kind="eval",
        split=split,
        num_sequences=len(data),
        tokenizer_fingerprint=data.summary["tokenizer_fingerprint"],
        global_batch_size=global_batch_size,
        bucket_lengths=list(data_cfg["bucket_lengths"]),
    )
    return Loader(
        data,
        lambda epoch: plan,
        len(plan),
        1,
        process_index,
        process_count,
        _read_options(data_cfg),
        signature,
    )
