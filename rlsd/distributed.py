"""The only module that knows about ranks, gathering and the main process.

Every helper accepts ``accelerator=None`` for plain single-process use (tests, notebooks).

Randomness contract (see docs/architecture.md):
  * :func:`rank_generator` gives rank ``r`` a stream derived from ``(seed, iteration, rank)``;
    it does not depend on the world size, but the samples a rank draws do depend on the split.
  * :func:`sample_generator_for_slot` gives global sample slot ``i`` (e.g. the i-th prompt group
    of the global batch) a stream derived from ``(seed, iteration, i)``. Drawing each slot's
    noise from its own generator makes the global batch identical for every world size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Domain-separation tags so rank streams and slot streams never coincide.
_RANK_STREAM = 0
_SLOT_STREAM = 1


def _derived_seed(seed: int, stream: int, iteration: int, index: int) -> int:
    """A 64-bit seed hashed from (seed, stream, iteration, index) with numpy's SeedSequence."""
    for name, value in (("seed", seed), ("iteration", iteration), ("index", index)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0 to derive a generator, got {value}")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(stream, int(iteration), int(index)))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def _generator(seed: int, device: str | torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def rank_generator(seed: int, iteration: int, rank: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Per-rank stream from (seed, iteration, rank); the same for a given rank at any world size."""
    return _generator(_derived_seed(seed, _RANK_STREAM, iteration, rank), device)


def sample_generator_for_slot(
    seed: int, iteration: int, global_index: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """Stream for global sample slot ``global_index`` of iteration ``iteration``, independent of ranks."""
    return _generator(_derived_seed(seed, _SLOT_STREAM, iteration, global_index), device)


def slot_generators(
    seed: int, iteration: int, slots: range | slice, device: str | torch.device = "cpu"
) -> list[torch.Generator]:
    """Generators for a contiguous range of global slots, e.g. ``local_slice(...)`` of this rank."""
    if isinstance(slots, slice):
        slots = range(slots.start or 0, slots.stop, slots.step or 1)
    return [sample_generator_for_slot(seed, iteration, i, device) for i in slots]


def local_slice(global_n: int, rank: int, world: int, *, name: str = "the global batch size") -> slice:
    """Indices ``[rank * n, (rank + 1) * n)`` of this rank's share, with ``n = global_n // world``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, world size {world})")
    if global_n % world != 0:
        raise ValueError(
            f"batch {global_n} not divisible by world size {world}; set {name} to a multiple of {world}"
        )
    n = global_n // world
    return slice(rank * n, (rank + 1) * n)


def rank_and_world(accelerator: Any | None) -> tuple[int, int]:
    """(process index, number of processes); (0, 1) without an accelerator."""
    if accelerator is None:
        return 0, 1
    return int(accelerator.process_index), int(accelerator.num_processes)


def is_main_process(accelerator: Any | None) -> bool:
    """True on the process that does all I/O (always True without an accelerator)."""
    return accelerator is None or bool(accelerator.is_main_process)


@contextlib.contextmanager
def main_process_first(accelerator: Any | None) -> Iterator[None]:
    """Run the block on the main process first, then on the others (e.g. dataset preparation)."""
    if accelerator is None:
        yield
        return
    with accelerator.main_process_first():
        yield


def wait_for_everyone(accelerator: Any | None) -> None:
    """Barrier across all processes; a no-op without an accelerator."""
    if accelerator is not None:
        accelerator.wait_for_everyone()


def shutdown(accelerator: Any | None) -> None:
    """Barrier, then destroy the process group; call once at the end of a distributed script.

    Exiting with a live gloo group can abort rank 0 with "terminate called without an active exception".
    """
    if accelerator is not None:
        accelerator.wait_for_everyone()
        accelerator.end_training()


def gather_tensor(accelerator: Any | None, t: Tensor) -> Tensor:
    """Concatenate ``t`` (B_local, ...) of all ranks along dim 0 -> (world * B_local, ...), in rank order.

    Every rank must pass the same shape; use :func:`gather_objects` for ragged data.
    """
    if accelerator is None or accelerator.num_processes == 1:
        return t
    if t.ndim == 0:
        t = t.reshape(1)
    return accelerator.gather(t.contiguous())


def gather_objects(accelerator: Any | None, objects: list) -> list:
    """Concatenate picklable lists (e.g. prompts) of all ranks, in rank order."""
    if accelerator is None or accelerator.num_processes == 1:
        return list(objects)
    from accelerate.utils import gather_object  # lazy: keeps this module importable cheaply

    return list(gather_object(list(objects)))


def all_reduce_mean(accelerator: Any | None, t: Tensor) -> Tensor:
    """Element-wise mean of ``t`` over ranks (same shape on every rank)."""
    if accelerator is None or accelerator.num_processes == 1:
        return t
    return accelerator.reduce(t.clone(), reduction="mean")


def all_reduce_max(accelerator: Any | None, t: Tensor) -> Tensor:
    """Element-wise max of ``t`` over ranks (same shape on every rank), e.g. the worst rank's deviation."""
    if accelerator is None or accelerator.num_processes == 1:
        return t
    return accelerator.reduce(t.clone(), reduction="max")


def any_rank(accelerator: Any | None, flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank: one scalar all-reduce, so every rank must call it."""
    if accelerator is None or accelerator.num_processes == 1:
        return bool(flag)
    return bool(all_reduce_max(accelerator, torch.tensor([float(flag)], device=accelerator.device)).item())


def check_on_all_ranks(accelerator: Any | None, check: Callable[[], None]) -> None:
    """Run ``check`` on this rank; if it raises ValueError on any rank, raise the first one's on every rank.

    Every rank must call it at the same point (one scalar all-reduce; a gather of the messages on failure), so
    one rank's failed check stops all ranks together instead of leaving the others waiting in a collective.
    """
    try:
        check()
        message = None
    except ValueError as err:
        message = str(err)
    if any_rank(accelerator, message is not None):
        raise ValueError(next(m for m in gather_objects(accelerator, [message]) if m is not None))


def backend(accelerator: Any | None) -> str:
    """accelerate's distributed type as a plain name ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP", ...)."""
    return str(getattr(accelerator, "distributed_type", "NO")).rsplit(".", 1)[-1]


def shards_weights(accelerator: Any | None) -> bool:
    """True where no single rank holds the full weights (FSDP, DeepSpeed ZeRO-3), so gathering them is collective."""
    name = backend(accelerator)
    if name == "DEEPSPEED":
        ds_config = getattr(accelerator, "deepspeed_config", None) or {}
        return int(ds_config.get("zero_optimization", {}).get("stage", 0)) == 3
    return name == "FSDP"


def model_state_on_main(accelerator: Any | None, model: torch.nn.Module,
                        names: Collection[str]) -> dict[str, Tensor] | None:
    """A CPU copy of the entries ``names`` of ``model``'s state dict on the main process; None on the others.

    One process, DDP, DeepSpeed ZeRO-1/2: every rank holds the same weights, so only the main process copies
    them. FSDP / ZeRO-3: ``accelerator.get_state_dict`` gathers the shards, a collective that every rank joins
    (only the main process keeps the result). ``model`` is the module as returned by ``accelerator.prepare``.
    """
    wanted = set(names)
    if accelerator is not None and shards_weights(accelerator):
        full = accelerator.get_state_dict(model)  # every rank: collective
        if not is_main_process(accelerator):
            return None
        return {k: v.detach().cpu() for k, v in full.items() if k in wanted}
    if not is_main_process(accelerator):
        return None
    module = accelerator.unwrap_model(model) if accelerator is not None else model
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items() if k in wanted}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for ``accelerate launch --main_process_port``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
