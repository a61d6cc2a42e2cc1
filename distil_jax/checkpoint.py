"""Orbax checkpoints of a training run: the train state plus the data position.

Saves are asynchronous; a run started on a workdir that has a checkpoint
resumes from the latest complete one. Orbax writes each step into a temporary
directory and renames it when the write is complete, so a save cut off by a
crash or a kill is never taken for the latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from distil_jax.steps import TrainState

COMMIT_MARKER = "commit_success.txt"  # written by Orbax once a step's save is complete


class Checkpoints:
    """The checkpoints of one workdir: `<workdir>/checkpoints/<step>/{state,data}`."""

    def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if jax.process_index() == 0:
            set_aside_incomplete(self.directory)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("checkpoints: incomplete set aside")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: TrainState, data_state: dict | None, force: bool = False):
        args = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            args["data"] = ocp.args.JsonSave(data_state)
        return self._manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, abstract_state: TrainState, step: int | None = None):
        """Restores (state, data_state) onto the shardings of `abstract_state`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        args = {"state": ocp.args.StandardRestore(abstract_state)}
        if self._has_item(step, "data"):
            args["data"] = ocp.args.JsonRestore()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # orbax raises many types for unreadable files
            raise ValueError(
                f"checkpoint {step} in {self.directory} could not be restored ({e}); it may be "
                "corrupt or from another model/config. Move it aside to resume from an earlier one."
            ) from e
        return restored["state"], restored.get("data")

    def restore_params(self, step: int | None = None) -> tuple[int, dict]:
        """The saved model params (host numpy), for export; no target needed."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; have {self.all_steps()}"
            )
        # Saved shardings name the devices of the job that wrote them (e.g. 2 hosts x 4
        # GPUs); here, on any machine, every array goes to one local device.
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(fallback_sharding=local)),
        )
        state = restored["state"]
        params = state["params"] if isinstance(state, dict) else state.params
        return step, jax.device_get(params)

    def _has_item(self, step: int, item: str) -> bool:
        return os.path.isdir(os.path.join(self.directory, str(step), item))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def set_aside_incomplete(directory: str) -> list[str]:
    """Moves checkpoints whose save never finished out of the way, with a warning.

    Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when
    done, and marks a finished step with `commit_success.txt`; a process killed
    mid-save leaves one without the other. Such a directory must not be taken
    for the latest checkpoint; it is moved (not deleted) to
    `<workdir>/incomplete_checkpoints/`, so nothing of the user's is lost.
    """
    if not os.path.isdir(directory):
        return []
    moved = []
    aside = os.path.join(os.path.dirname(directory), "incomplete_checkpoints")
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isdir(path):
            continue
        tmp = ".orbax-checkpoint-tmp" in name
        unfinished = name.isdigit() and not os.path.exists(os.path.join(path, COMMIT_MARKER))
        if tmp or unfinished:
            os.makedirs(aside, exist_ok=True)
            target = os.path.join(aside, f"{name}.{int(time.time())}")
            shutil.move(path, target)
            moved.append(name)
            logging.warning(
                "checkpoint %s in %s was never finished (killed during save?): skipped and "
                "moved to %s; resuming from the previous complete checkpoint",
                name,
                directory,
                target,
            )
    return moved
