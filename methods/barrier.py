"""The relaxed logarithmic barrier of L3M and its multiplier estimates (l3m-method.md, section 2).

    B_{mu,s}(z) = -mu*log(-z)              if z <= -s
                =  mu*z/s - mu*log(s) + mu  otherwise           (s = mu^2 by default)

    lambda_i = mu / (k * max(-C_i, s))   is B'(C_i)/k, the Lagrange-multiplier estimate.
"""
from __future__ import annotations

import math

import torch


def relaxed_log_barrier(z, mu: float, s: float | None = None):
    """B_{mu,s}(z), elementwise, for floats or tensors."""
    s = mu * mu if s is None else s
    if isinstance(z, torch.Tensor):
        inside = -mu * torch.log(torch.clamp(-z, min=s))
        linear = mu * z / s - mu * math.log(s) + mu
        return torch.where(z <= -s, inside, linear)
    return -mu * math.log(-z) if z <= -s else mu * z / s - mu * math.log(s) + mu


def barrier_slope(z, mu: float, s: float | None = None):
    """dB/dz = mu / max(-z, s)."""
    s = mu * mu if s is None else s
    if isinstance(z, torch.Tensor):
        return mu / torch.clamp(-z, min=s)
    return mu / max(-z, s)


def multipliers(constraint_values, mu: float, s: float | None = None):
    """lambda_i = mu / (k * max(-C_i, s)) for the k constraint estimates C_i."""
    c = torch.as_tensor(constraint_values, dtype=torch.float64)
    return barrier_slope(c, mu, s) / c.numel()
