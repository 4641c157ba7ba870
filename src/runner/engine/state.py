"""The one protocol of per-member fit state: select the members still training, save, load."""

import numpy as np
import torch


class MemberState:
    """Per-member state whose tensors in `per_member` have the member on their first axis.

    `select` keeps the members where a bool mask is true (the others left the population);
    `state_dict` / `load_state_dict` save and restore everything `fields` names, for resume.
    """

    per_member: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # further state saved for resume (not indexed by member)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members where the bool mask `keep` [E] is true."""
        for name in self.per_member:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):  # a plain number is every member's
                setattr(self, name, value[keep])

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.per_member + self.fields}

    def load_state_dict(self, state: dict) -> None:
        """Restore saved state; a tensor goes to the device of the one it replaces (a state saved on a GPU and
        read on the CPU, or the other way)."""
        for name, value in state.items():
            current = getattr(self, name, None)
            if isinstance(value, torch.Tensor) and isinstance(current, torch.Tensor):
                value = value.to(current.device)
            setattr(self, name, value)


def rng_states(rngs: list[np.random.Generator]) -> list[dict]:
    """Each numpy generator's bit-generator state (plain dicts and ints: loadable with weights_only=True)."""
    return [rng.bit_generator.state for rng in rngs]


def rngs_from(states: list[dict]) -> list[np.random.Generator]:
    out = []
    for state in states:
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        out.append(rng)
    return out
