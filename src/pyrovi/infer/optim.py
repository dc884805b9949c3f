"""Adam with a per-element step scale, for guides that learn in preconditioned coordinates.

``torch.optim.Adam`` moves every element by about ``lr`` per step. Multiplying the step
of element ``i`` by ``scale_i`` is the same as running Adam in coordinates stretched by
``scale_i`` (Adam's update does not depend on the gradient's units), which is how
:class:`pyrovi.guides.MeanFieldNormal` measures steps in posterior standard deviations.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class ScaledAdam:
    """Adam (Kingma and Ba 2015) whose step is multiplied elementwise by ``scales``.

    Parameters
    ----------
    params : mapping of str to torch.Tensor
        Leaf tensors by name.
    lr : float
        Step size.
    betas : tuple of float
        Decay rates of the first and second moment estimates.
    eps : float
        Added to the root of the second moment.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = dict(params)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.scales: dict[str, torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the moment estimates (after the coordinates changed)."""
        self.t = 0
        self.m = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in self.params.items()}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step from the parameters' ``.grad`` (missing gradients count as zero);
        the arithmetic runs over all parameters at once (``torch._foreach_*``)."""
        self.t += 1
        b1, b2 = self.betas
        correction1 = 1 - b1**self.t
        correction2 = 1 - b2**self.t
        names = list(self.params)
        params = [self.params[n] for n in names]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        m = [self.m[n] for n in names]
        v = [self.v[n] for n in names]
        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, grads, alpha=1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        denom = torch._foreach_div(v, correction2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        updates = list(torch._foreach_div(m, denom))
        torch._foreach_mul_(updates, self.lr / correction1)
        for i, name in enumerate(names):
            if name in self.scales:
                updates[i] = updates[i] * self.scales[name]
        torch._foreach_sub_(params, updates)

    def state_dict(self) -> dict[str, object]:
        return {"t": self.t, "lr": self.lr, "m": {k: v.clone() for k, v in self.m.items()},
                "v": {k: v.clone() for k, v in self.v.items()},
                "scales": {k: v.clone() for k, v in self.scales.items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.t = int(state["t"])  # type: ignore[arg-type]
        self.lr = float(state["lr"])  # type: ignore[arg-type]
        for target, key in ((self.m, "m"), (self.v, "v")):
            for name, value in state[key].items():  # type: ignore[attr-defined]
                target[name] = value.clone().to(self.params[name])
        self.scales = {k: v.clone() for k, v in state["scales"].items()}  # type: ignore[attr-defined]


def finite_grads(params: Mapping[str, torch.Tensor]) -> bool:
    """Whether every gradient present is finite (one synchronisation, not one per tensor)."""
    checks = [torch.isfinite(p.grad).all() for p in params.values() if p.grad is not None]
    return not checks or bool(torch.stack(checks).all())


