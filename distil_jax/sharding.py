"""Device mesh, logical-axis rules and the shardings of state and data.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data
parallelism whose devices also split parameters and optimiser state) and
`tensor` (Megatron-style splitting of heads, MLP and vocabulary). The models
name their parameter axes logically; `LOGICAL_RULES` maps those names onto
mesh axes, so changing the parallelism is a config change, not a code change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both

LOGICAL_RULES = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("transform", None),
)


def mesh_shape(sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Resolves one -1 entry to "the remaining devices" and checks the product."""
    sizes = [int(s) for s in sizes]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {sizes}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes {sizes}: each must be a positive integer or -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"mesh sizes {sizes}: {num_devices} devices are not divisible by {known}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh sizes {dict(zip(MESH_AXES, sizes, strict=True))} use {math.prod(sizes)} "
            f"devices but {num_devices} are available (config.mesh)"
        )
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape((data, fsdp, tensor), len(devices))
    # Devices in process order, so each host's devices form contiguous batch slices.
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """[B, L, ...] arrays: batch split over data and fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def mlm_batch_shardings(mesh: Mesh) -> dict[str, NamedSharding]:
    """Shardings of a training/eval batch: {'input_ids', 'attention_mask'} [B, L]."""
    return {k: batch_sharding(mesh) for k in ("input_ids", "attention_mask")}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def param_shardings(abstract_boxed_params, mesh: Mesh):
    """NamedShardings for params initialised with logical-axis metadata."""
    specs = nn.get_partition_spec(abstract_boxed_params)
    return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def optimizer_state_shardings(optimizer, abstract_opt_state, params_shardings, mesh: Mesh):
    """Copies of the param tree inside the optimiser state get the params' shardings;
    counters and other scalars are replicated."""
    return optax.tree_map_params(
        optimizer,
        lambda _, sharding: sharding,
        abstract_opt_state,
        params_shardings,
        transform_non_params=lambda _: replicated(mesh),
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )


def check_batch_divisible(global_batch: int, mesh: Mesh, process_count: int) -> None:
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % shards:
        raise ValueError(
            f"global batch {global_batch} is not divisible by the {shards} batch shards of the "
            "mesh (data x fsdp); change config.batch.micro_batch_size or config.mesh"
        )
    if global_batch % process_count:
        raise ValueError(
            f"global batch {global_batch} is not divisible by {process_count} processes"
        )


def host_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows [B/P, ...] -> one global array [B, ...] sharded over the batch."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
        for k, v in batch.items()
    }
