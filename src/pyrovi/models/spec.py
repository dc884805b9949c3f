"""The :class:`ModelSpec` record: everything pyrovi knows about one model family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Data = dict[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"normal_normal"``.
    model : callable
        Pyro model, called as ``model(**data)``.
    guides : dict
        Guide name -> factory ``factory(model) -> guide``. Holds the autoguide
        families of :mod:`pyrovi.guides` plus any hand-written guides of the family.
    load_data : callable
        ``load_data(name=None) -> dict``: a bundled data set (the default one when
        ``name`` is None), ready to be passed as ``model(**data)``.
    simulate : callable
        ``simulate(seed=0, **sizes) -> (data, truth)``: simulated data and the true
        latent values that generated it.
    description : str
        One line shown by ``pyrovi list``.
    datasets : tuple of str
        Names accepted by ``load_data``; the first is the default.
    exact_posterior : callable or None
        ``exact_posterior(data) -> dict[str, torch.distributions.Distribution]`` in
        closed form, one distribution per latent site, where it exists.
    log_evidence : callable or None
        ``log_evidence(data) -> float``: exact ``log p(x)``, where it exists.
    mixture_sites : tuple of str
        For mixtures: the sites whose first axis indexes components (``weights``,
        ``locs``, ...). Their draws are relabelled to a common component order before
        VI and reference are compared (label switching).
    """

    name: str
    model: Callable[..., Any]
    guides: dict[str, Callable[[Callable[..., Any]], Any]]
    load_data: Callable[..., Data]
    simulate: Callable[..., tuple[Data, dict[str, Any]]]
    description: str = ""
    datasets: tuple[str, ...] = field(default_factory=tuple)
    exact_posterior: Callable[[Data], dict[str, Any]] | None = None
    log_evidence: Callable[[Data], float] | None = None
    mixture_sites: tuple[str, ...] = ()
