"""model=moe: a mixture of K experts per member, gated by a softmax of the input (dense, or sparse top-k)."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from runner.config.schema import ModelConfig, name_of
from runner.models.mlp import ACTIVATIONS
from runner.models.stacked import NO_STEP, Population, Step


class MoE(Population):
    """g = softmax(KeepTopK(x·W_g + b_g, k)); output = the gate-weighted mixture of the K experts' predictions.

    Each member holds its own gate and K experts (linear, or an MLP of `model.expert` widths); the expert axis
    lives inside the member, so a population of MoEs trains like any other. The mixture is taken in the task's
    output space: means for regression, probabilities for classification (returned as logits).
    """

    def __init__(self, cfg: ModelConfig, members: int, input_shape: tuple[int, ...], d_out: int):
        super().__init__(members)
        d, K = math.prod(input_shape), cfg.experts
        self.outputs, self.K = d_out, K
        self.top_k = cfg.top_k if cfg.top_k is not None and cfg.top_k < K else None
        self.activation = ACTIVATIONS[name_of(cfg.activation)]
        self.loss_name = "mse"  # set by build_model: how expert outputs mix (means, probabilities)
        self.add("gate.weight", (d, K), kernel=True, fan_in=d, fan_out=K, reads_inputs=True)
        self.add("gate.bias", (1, K), kernel=False, fan_in=d, fan_out=K, reads_inputs=True)
        widths = [d, *cfg.expert, d_out]
        self.depth = len(widths) - 1
        # Layer 0 of all K experts is one [d, K·width] matrix (one matmul); later layers are [K, a, b].
        self.add("expert0.weight", (d, K * widths[1]), kernel=True, fan_in=d, fan_out=widths[1], reads_inputs=True)
        self.add("expert0.bias", (1, K * widths[1]), kernel=False, fan_in=d, fan_out=widths[1], reads_inputs=True)
        for i, (a, b) in enumerate(zip(widths[1:-1], widths[2:]), start=1):
            self.add(f"expert{i}.weight", (K, a, b), kernel=True, fan_in=a, fan_out=b)
            self.add(f"expert{i}.bias", (K, 1, b), kernel=False, fan_in=a, fan_out=b)
        self.allocate()

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """[E, B, K] gate values in [0, 1] summing to 1 per row; with top_k, exactly k of them non-zero."""
        logits = torch.baddbmm(self.view("gate.bias"), x.flatten(2), self.view("gate.weight"))
        if self.top_k is not None:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def experts(self, x: torch.Tensor) -> torch.Tensor:
        """[E, B, K, d_out]: every expert's output (logits or regression values) for every row."""
        E, B = x.shape[:2]
        h = torch.baddbmm(self.view("expert0.bias"), x.flatten(2), self.view("expert0.weight"))
        h = h.view(E, B, self.K, -1)
        for i in range(1, self.depth):
            h = self.activation(h).permute(0, 2, 1, 3).reshape(E * self.K, B, -1)
            w = self.view(f"expert{i}.weight").reshape(E * self.K, *self.slots[f"expert{i}.weight"].shape[1:])
            b = self.view(f"expert{i}.bias").reshape(E * self.K, 1, -1)
            h = torch.baddbmm(b, h, w).view(E, self.K, B, -1).permute(0, 2, 1, 3)
        return h

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [E, B, ...] -> [E, B, d_out]: the mixture as logits (classification) or values (regression)."""
        return self.mix(self.gates(x), self.experts(x))

    def mix(self, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Σ_k g_k·expert_k in the task's space: values for mse, probabilities for ce/bce (as logits)."""
        if self.loss_name == "mse":
            return (g.unsqueeze(-1) * out).sum(2)
        log_g = torch.log(g).unsqueeze(-1)  # -inf where a sparse gate is 0: that expert drops out of the sum
        if self.loss_name == "ce":
            return torch.logsumexp(log_g + F.log_softmax(out, dim=-1), dim=2)
        log_p = torch.logsumexp(log_g + F.logsigmoid(out), dim=2)  # bce: one logit of the mixed probability
        log_q = torch.logsumexp(log_g + F.logsigmoid(-out), dim=2)
        return log_p - log_q

    def test_extras(self, outputs, rows: list[np.ndarray]) -> dict:
        """The gates on each member's test rows: each expert's mean gate (its share of the gate mass) and the mean
        gate entropy (nats; log K is an even spread), averaged over members; per member too."""
        gates = outputs(self.gates)
        usage = np.stack([g[: len(r)].mean(0) for g, r in zip(gates, rows)]).astype(float)  # [E, K]
        entropy = [float(-(g[: len(r)] * np.log(np.clip(g[: len(r)], 1e-12, 1))).sum(1).mean())
                   for g, r in zip(gates, rows)]
        return {"experts": {"usage": usage.mean(0).round(4).tolist(), "entropy": round(float(np.mean(entropy)), 4),
                            "usage_per_member": usage.round(4).tolist(), "max_share": round(float(usage.max()), 4)}}

    def extra_metrics(self) -> list[str]:
        return [f"val/expert{k}_share" for k in range(self.K)] + ["val/gate_entropy"]

    def extra_sums(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Each expert's gate mass and the gate's entropy, summed over the rows with weights w."""
        g = self.gates(x)
        shares = (g * w.unsqueeze(-1)).sum(1)
        entropy = (-(g * torch.log(g.clamp(min=1e-12))).sum(-1) * w).sum(1)
        return torch.cat([shares, entropy.unsqueeze(1)], dim=1)

    def per_row_loss(self, criterion, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                     step: Step = NO_STEP) -> torch.Tensor:
        """loss.moe=per_expert: Σ_k g_k·loss(expert k) (each expert answers for its own rows, the lecture's
        remedy for collapse); blended: loss of the mixture. Plus loss.balance × the load-balancing term."""
        g, out = self.gates(x), self.experts(x)
        E, B, K = g.shape
        if name_of(criterion.moe) == "blended":
            per_row = criterion(self.mix(g, out), y)
        else:
            targets = y.repeat_interleave(K, dim=1)  # [E, B·K] (soft targets [E, B·K, C])
            per_row = (criterion(out.reshape(E, B * K, -1), targets).view(E, B, K) * g).sum(-1)
        if criterion.balance:
            w = torch.ones(E, B, 1, device=x.device) if mask is None else mask.unsqueeze(-1)
            rows = w.sum(1).clamp(min=1)
            routed = (F.one_hot(g.argmax(-1), K) * w).sum(1) / rows  # share of real rows whose top gate is k
            mean_gate = (g * w).sum(1) / rows
            per_row = per_row + criterion.balance * K * (routed * mean_gate).sum(-1, keepdim=True)
        return per_row
