"""Constraints and the policy-gradient pieces the constrained trainers share (L3M, MM, CPO).

A config constraint (a bound or a band on a reward) becomes one or two ``Constraint`` objects
whose per-sample values g are <= 0 when the sample satisfies them; their batch means are the
estimates C_i. The REINFORCE surrogate of grad C_i, its baselines and the constraint EMA live here
(their exact expectations are checked by enumeration in tests/test_estimators.py), and so does
the projected dual ascent of the Lagrangian baselines (MM's lambda, CPO's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Constraint:
    """r (reward ``reward``) must satisfy ``r >= bound`` (direction ">=") or ``r <= bound`` ("<=") on average.

    ``scale`` divides the constraint value so that one mu schedule means the same for every
    constraint (|bound| by default, l3m-method.md section 3)."""

    name: str
    reward: str
    bound: float
    direction: str
    scale: float = 1.0

    def value(self, r: torch.Tensor) -> torch.Tensor:
        """Per-sample constraint value g: <= 0 when the sample satisfies the constraint."""
        g = (self.bound - r) if self.direction == ">=" else (r - self.bound)
        return g / self.scale


def expand_constraints(specs: list[dict], normalize: bool = True, scales: dict | None = None) -> list[Constraint]:
    """Config constraints -> Constraint objects; a band [lo, hi] becomes r >= lo and r <= hi.

    Normalised, a constraint is divided by |bound| unless ``scales`` gives its reward a fixed scale
    (rewards already in reference-std units, whose bounds may be 0)."""
    out = []
    for spec in specs:
        pieces = ([(spec["band"][0], ">="), (spec["band"][1], "<=")] if "band" in spec
                  else [(spec["bound"], spec.get("direction", ">="))])
        for bound, direction in pieces:
            fixed = (scales or {}).get(spec["reward"])
            scale = (fixed if fixed is not None else abs(bound) if bound != 0 else 1.0) if normalize else 1.0
            name = f"{spec['reward']}{direction}{bound:g}"
            out.append(Constraint(name, spec["reward"], float(bound), direction, float(scale)))
    return out


def constraint_scales(cfg: dict) -> dict:
    """Per reward, what its constraints are divided by when normalised: None = |bound| (rules such
    as length), 1.0 for rewards already in reference-std units (normalised reward models)."""
    return {n: (1.0 if r["type"] != "length" and r.get("normalize", True) else None) for n, r in cfg["rewards"].items()}


def ema_update(prev: torch.Tensor | None, batch: torch.Tensor, ema: float) -> torch.Tensor:
    """Exponential moving average of the constraint estimates; the first batch initialises it."""
    return batch.clone() if prev is None or ema == 0 else ema * prev + (1 - ema) * batch


def loo_baseline(values: torch.Tensor, group: int) -> torch.Tensor:
    """Leave-one-out mean over the other samples of the same prompt (``group`` samples each).

    values: (k, n) with n = prompts * group, samples of one prompt adjacent. With group 1 the
    leave-one-out mean runs over the whole batch instead."""
    k, n = values.shape
    if group > 1:
        v = values.view(k, n // group, group)
        return ((v.sum(-1, keepdim=True) - v) / (group - 1)).view(k, n)
    if n == 1:
        return torch.zeros_like(values)
    return (values.sum(-1, keepdim=True) - values) / (n - 1)


def pg_baseline(values: torch.Tensor, kind: str, group: int, previous: torch.Tensor | None) -> torch.Tensor:
    """The baseline subtracted from ``values`` (k, n) in the policy-gradient estimate; each entry is
    independent of the sample it is subtracted from, so the estimate's expectation is unchanged:
    ``loo`` the leave-one-out mean, ``ema`` ``previous`` (k,) (the estimate of earlier steps, 0 at
    the first step), ``none`` 0."""
    if kind == "loo":
        return loo_baseline(values, group)
    if kind == "ema" and previous is not None:
        return previous.to(values).unsqueeze(-1).expand_as(values)
    if kind in ("ema", "none"):
        return torch.zeros_like(values)
    raise ValueError(f"onpolicy.baseline: {kind!r} is not one of loo, ema, none")


def pg_surrogate(logp: torch.Tensor, values: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """(k,) surrogates whose gradients are the REINFORCE estimates of grad C_i:
    mean_j (g_ij - b_ij) * grad log pi(y_j | x_j)."""
    adv = (values - baseline).detach()
    return (adv * logp.unsqueeze(0)).mean(-1)


def dual_ascent(lam: torch.Tensor, c: torch.Tensor, lr: float) -> torch.Tensor:
    """Projected dual ascent: lambda <- max(0, lambda + lr * C) (C > 0: violated, lambda grows)."""
    return (lam + lr * c).clamp(min=0.0)
