"""The device mesh, how parameters and batches are laid out on it, and global batches.

One mesh with two axes: `data` (pure data parallelism: parameters
replicated) and `fsdp` (data parallelism whose parameters are sharded, as
ZeRO-3 / FSDP). A batch is split over both axes; a parameter is split over
`fsdp` along its largest axis that `fsdp` divides, when it is big enough to
be worth the all-gather (big_vision's `fsdp` rule); everything else is
replicated.

Both axes are `AxisType.Auto`: jax 0.10's default, Explicit, refuses
FSDP-sharded flax convolutions ("specify the output sharding via
out_sharding"), while Auto leaves the collectives to XLA's partitioner.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = MESH_AXES  # the batch is split over every device
# Parameters smaller than this many elements stay replicated: gathering them
# costs more in latency than their copies cost in memory.
FSDP_MIN_SIZE = 2**14


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
    """(data, fsdp) with one -1 resolved to all remaining devices; checked against the count."""
    if data == -1 and fsdp == -1:
        raise ValueError("mesh.data and mesh.fsdp cannot both be -1")
    for name, size in (("mesh.data", data), ("mesh.fsdp", fsdp)):
        if size == 0 or size < -1:
            raise ValueError(f"{name} must be a positive device count or -1, got {size}")
    known = (data if data != -1 else 1) * (fsdp if fsdp != -1 else 1)
    if num_devices % known:
        raise ValueError(
            f"a mesh of data={data} x fsdp={fsdp} needs a multiple of {known} devices; "
            f"there are {num_devices}")
    if data == -1:
        data = num_devices // known
    if fsdp == -1:
        fsdp = num_devices // known
    if data * fsdp != num_devices:
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but there are "
            f"{num_devices}: set mesh.data or mesh.fsdp to -1 to use all of them")
    return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> jax.sharding.Mesh:
    """The (data, fsdp) mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(data, fsdp, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def fsdp_spec(shape, fsdp_size: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """How one parameter of `shape` is laid out: split on `fsdp` along its largest
    divisible axis when it has at least `min_size` elements, else replicated."""
    if fsdp_size == 1 or math.prod(shape) < min_size:
        return P()
    candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % fsdp_size == 0]
    if not candidates:
        return P()
    spec = [None] * len(shape)
    spec[int(candidates[0])] = "fsdp"
    return P(*spec)


def tree_shardings(abstract_tree, mesh, min_size: int = FSDP_MIN_SIZE):
    """NamedShardings for every leaf of a (ShapeDtypeStruct) tree by the fsdp rule."""
    fsdp_size = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(np.shape(leaf)), fsdp_size, min_size)),
        abstract_tree)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


def data_parallel_size(mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_size(global_batch: int, mesh, what: str = "batch_size") -> int:
    """The per-process batch of a global `global_batch`, checked to split evenly."""
    size = data_parallel_size(mesh)
    if global_batch % size:
        raise ValueError(
            f"{what}={global_batch} does not split over the mesh's {size} data-parallel devices "
            f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}); use a multiple of {size}")
    if global_batch % jax.process_count():
        raise ValueError(f"{what}={global_batch} does not split over {jax.process_count()} processes")
    return global_batch // jax.process_count()


def global_batch(local_batch, mesh):
    """A process's batch (numpy arrays, leading axis its share) as global arrays on the mesh."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
