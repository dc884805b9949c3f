"""The :class:`ModelSpec` record: everything pyrovi knows about one model family.

Besides the model, its guides and its data, a spec says what each latent site is
(:attr:`ModelSpec.site_roles`), how draws of two posteriors are aligned before they are
compared (:meth:`ModelSpec.align`: mixture components relabelled to a common order by
default), and how draws are expressed in the data's own units when the bundled data are
standardised (:meth:`ModelSpec.to_data_units`).

==========  ==========================================================================
role        meaning
==========  ==========================================================================
global      one value for the whole data set (a regression coefficient, a noise sd)
local       one value per data point (a latent assignment or a per-unit effect)
component   indexed by a mixture component on its first axis; the posterior is
            invariant to permuting the components, so draws are relabelled first
==========  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import arviz as az
import numpy as np

from pyrovi import diagnostics as dg

Data = dict[str, Any]
Draws = TypeVar("Draws", az.InferenceData, Mapping[str, np.ndarray])

SITE_ROLES = ("global", "local", "component")
"""The roles a latent site may have (see the module docstring)."""

Aligner = Callable[[az.InferenceData, az.InferenceData, Mapping[str, str]],
                   tuple[az.InferenceData, az.InferenceData, Any]]
"""``aligner(vi, ref, site_roles) -> (vi, ref, info)``: the signature of an alignment."""


@dataclass(frozen=True)
class DataUnits:
    """How a model's draws read in the units of its data.

    Attributes
    ----------
    description : str
        One line for reports, e.g. ``"data units of old_faithful: eruptions (min),
        waiting (min)"``.
    convert : callable
        ``convert(site, values) -> values``: draws of ``site`` with trailing dimensions
        the site's shape (any leading ones, e.g. ``(chain, draw)``) mapped to data units,
        same shape. Sites without a unit (weights, correlations) come back unchanged.
    unit : callable
        ``unit(site, index) -> str``: the unit of element ``index`` of ``site`` after
        conversion (``"min"``, ``"probability"``, ``"1/min²"``).
    """

    description: str
    convert: Callable[[str, np.ndarray], np.ndarray]
    unit: Callable[[str, tuple[int, ...]], str]


def relabel_components(
    vi: az.InferenceData, ref: az.InferenceData, site_roles: Mapping[str, str]
) -> tuple[az.InferenceData, az.InferenceData, dg.RelabelInfo | None]:
    """The default alignment: relabel the ``"component"`` sites to a common order.

    Both posteriors are relabelled to the reference's pivot
    (:func:`pyrovi.diagnostics.relabel_pair`), using the component sites present in both.

    Returns
    -------
    (arviz.InferenceData, arviz.InferenceData, RelabelInfo or None)
        Aligned copies and how; the inputs and None when there is nothing to relabel.
    """
    sites = tuple(site for site, role in site_roles.items() if role == "component"
                  and site in ref.posterior.data_vars and site in vi.posterior.data_vars)
    if not sites:
        return vi, ref, None
    return dg.relabel_pair(vi, ref, sites)


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
    site_roles : dict of str to str
        Latent site -> ``"global"``, ``"local"`` or ``"component"`` (module docstring).
    aligner : callable or None
        ``aligner(vi, ref, site_roles) -> (vi, ref, info)``, the alignment
        :meth:`align` uses; None: :func:`relabel_components`.
    data_units : callable or None
        ``data_units(data) -> DataUnits or None``: how draws on ``data`` read in the
        data's own units, None where they already do (the data are not standardised, or
        are not a bundled set whose constants are known).

    Raises
    ------
    ValueError
        On construction, if a site role is not one of :data:`SITE_ROLES`.
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
    site_roles: dict[str, str] = field(default_factory=dict)
    aligner: Aligner | None = None
    data_units: Callable[[Data], DataUnits | None] | None = None

    def __post_init__(self) -> None:
        bad = {site: role for site, role in self.site_roles.items() if role not in SITE_ROLES}
        if bad:
            raise ValueError(f"model {self.name!r}: unknown site role(s) {bad}; "
                             f"a role is one of {', '.join(SITE_ROLES)}")

    def sites_with_role(self, role: str) -> tuple[str, ...]:
        """The latent sites with ``role``, in :attr:`site_roles` order."""
        return tuple(site for site, r in self.site_roles.items() if r == role)

    def align(
        self,
        vi: az.InferenceData,
        ref: az.InferenceData,
        site_roles: Mapping[str, str] | None = None,
    ) -> tuple[az.InferenceData, az.InferenceData, Any]:
        """Align variational and reference draws so that like is compared with like.

        Parameters
        ----------
        vi, ref : arviz.InferenceData
            Variational and reference draws.
        site_roles : mapping, optional
            Roles to use instead of :attr:`site_roles`.

        Returns
        -------
        (arviz.InferenceData, arviz.InferenceData, info)
            Aligned copies and a record of what was done (by default a
            :class:`pyrovi.diagnostics.RelabelInfo`, with ``method``, ``message`` and
            ``chain_modes_agree``), or None when nothing was.
        """
        roles = self.site_roles if site_roles is None else site_roles
        return (self.aligner or relabel_components)(vi, ref, roles)

    def units(self, data: Data | None) -> DataUnits | None:
        """How draws on ``data`` read in the data's own units (None: they already do)."""
        if data is None or self.data_units is None:
            return None
        return self.data_units(data)

    def to_data_units(self, draws: Draws, data: Data | None) -> Draws:
        """Draws of this model on ``data``, in the data's own units.

        Parameters
        ----------
        draws : arviz.InferenceData or mapping of str to numpy.ndarray
            Posterior draws (the ``posterior`` group is converted) or site -> array with
            the site's shape last.
        data : dict
            The data the draws were made on (as passed to the model).

        Returns
        -------
        The same kind as ``draws``: a converted copy, or ``draws`` itself when
        :meth:`units` is None.
        """
        units = self.units(data)
        return draws if units is None else convert_draws(draws, units)


def convert_draws(draws: Draws, units: DataUnits) -> Draws:
    """Apply ``units.convert`` to every site of ``draws`` (InferenceData or a mapping).

    Of an InferenceData only the ``posterior`` group is converted; the others (such as
    ``sample_stats``) are kept as they are.
    """
    if isinstance(draws, az.InferenceData):
        post = draws.posterior.copy()
        for site in post.data_vars:
            post[site] = (post[site].dims, units.convert(str(site), post[site].values))
        groups = {group: draws[group] for group in draws.groups()}
        return az.InferenceData(**{**groups, "posterior": post})
    return {site: units.convert(site, np.asarray(values)) for site, values in draws.items()}
