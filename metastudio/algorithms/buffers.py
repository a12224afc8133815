"""Named tensors held as the buffers of a module, for learners whose adapted state is a dict.

A :class:`~metastudio.algorithms.base.Learner` keeps what adaptation produced in its module tree
so that it moves, copies and exports with it. ``register_buffer`` takes no dots in a name, but
the tensors a learner keeps are often named like parameters (``fast.backbone.encoder.0.0.weight``,
``example.fc.bias``): :class:`BufferDict` holds them under their own names, as buffers ``t0``,
``t1``... of one submodule, in their given order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn


class BufferDict(nn.Module):
    """Tensors by name (any string), as the buffers of this module: ``store["fc.weight"]``,
    ``name in store``, ``store.items()``, ``store.as_dict()``. The tensors are registered as they
    are (no copy)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        super().__init__()
        self.names = list(tensors)
        for i, tensor in enumerate(tensors.values()):
            self.register_buffer(f"t{i}", tensor)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return getattr(self, f"t{self.names.index(name)}")
        except ValueError:
            raise KeyError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, getattr(self, f"t{i}")) for i, name in enumerate(self.names)]

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The tensors as a plain dict (the buffers themselves, not copies)."""
        return dict(self.items())

    def with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors whose names start with ``prefix``, by the rest of their names."""
        return {name[len(prefix):]: t for name, t in self.items() if name.startswith(prefix)}


__all__ = ["BufferDict"]
