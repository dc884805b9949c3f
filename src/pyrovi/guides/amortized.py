"""Amortized guides: an encoder network maps each data point to its local latents' q.

A latent-factor model has global parameters (loadings, intercepts) and one latent value
per person (``theta[i]``, a factor score). A per-person guide (``mean_field``) learns two
numbers per person and latent: the variational parameters grow with N, and a new person
needs a new fit. An amortized guide learns instead a function of the person's data::

    q(z_i | x_i) = Normal(loc(h_i), scale(h_i)),    h_i = features(data)[i]

with ``loc`` and ``scale`` the outputs of one small network (the encoder), shared by all
people (Gershman and Goodman 2014; Kingma and Welling 2014). Its parameters do not grow
with N, minibatches of people train it, and scoring a new person is one forward pass.
The price is the *amortization gap* (Cremer, Li and Duvenaud 2018): the encoder's q for
person i is never better than the best Gaussian for that person alone, so the amortized
ELBO is at most the per-person one (``pyrovi.fit(..., guide="mean_field")``).

The global sites keep an engine family (mean-field by default) on the model with the
local sites hidden. ``features`` is written by the model's module: the person's
observations with missing entries zeroed, followed by the mask, so the encoder sees which
values are missing. The features are standardised with the fitting data's means and sds
(buffers saved with the guide), so counts, scores and 0/1 answers enter on one scale.

Steps: the globals move in units of their current sd (the mean-field step scales), the
encoder's weights ``ENCODER_STEP_FRACTION`` times the step size, the usual step size of
Adam on a network when the trial's step sizes are 0.3 to 0.03.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import biject_to, constraints

from pyrovi.guides.family import GuideFamily
from pyrovi.guides.gaussian import MeanFieldNormal

Features = Callable[[dict[str, Any]], torch.Tensor]

ENCODER_STEP_FRACTION = 0.03
"""The encoder's weights move this fraction of the trial's step size."""
INIT_SCALE = 0.1
"""The encoder's initial sd of q(z_i | x_i), as the mean-field guide's ``init_scale``."""
MIN_SCALE = 1e-4


class Encoder(nn.Module):
    """A multilayer perceptron from features to ``(loc, scale)`` of a diagonal Gaussian.

    Parameters
    ----------
    in_features : int
        Width of the input (features per person).
    out_features : int
        Latent values per person.
    hidden : sequence of int
        Widths of the hidden layers (ELU activations).
    """

    def __init__(self, in_features: int, out_features: int,
                 hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ELU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.loc = nn.Linear(width, out_features)
        self.raw_scale = nn.Linear(width, out_features)
        with torch.no_grad():  # q starts at loc 0 and sd INIT_SCALE for everyone
            self.loc.weight.mul_(0.01)
            self.loc.bias.zero_()
            self.raw_scale.weight.mul_(0.01)
            self.raw_scale.bias.fill_(math.log(math.expm1(INIT_SCALE)))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)``, each of shape ``(batch, out_features)``."""
        hidden = self.body(h)
        return self.loc(hidden), nn.functional.softplus(self.raw_scale(hidden)) + MIN_SCALE


class _LocalSite:
    """What the guide needs to know about one local site of the model."""

    def __init__(self, name: str, site: dict[str, Any], plate: str) -> None:
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        person = [f for f in frames if f.name == plate]
        if not person:
            raise ValueError(f"local site {name!r} is not inside the plate {plate!r}")
        value = site["value"]
        self.event_dim = site["fn"].event_dim
        if person[0].dim != -(value.dim() - self.event_dim):
            raise ValueError(f"local site {name!r}: the plate {plate!r} must be the leftmost "
                             "dimension of its value")
        self.name = name
        self.plate_dim = person[0].dim
        self.other_plates = tuple((f.name, f.size, f.dim) for f in frames if f.name != plate)
        self.shape = tuple(value.shape[1:])
        support = site["fn"].support
        self.transform = None if support is constraints.real else biject_to(support)
        if self.transform is not None and \
                tuple(self.transform.inverse_shape(value.shape)) != tuple(value.shape):
            raise ValueError(f"local site {name!r}: its support {support} changes shape "
                             "when unconstrained")
        self.size = math.prod(self.shape)

    def distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        """q of this site for a batch of people: ``loc`` and ``scale`` of shape (B, size)."""
        batch = loc.shape[0]
        base = dist.Normal(loc.reshape(batch, *self.shape),
                           scale.reshape(batch, *self.shape)).to_event(self.event_dim)
        if self.transform is None:
            return base
        return dist.TransformedDistribution(base, [self.transform.with_cache()])


class AmortizedGuide(PyroModule):
    """Globals from an engine family, local sites from an encoder of each person's data.

    Parameters
    ----------
    model : callable
        The Pyro model. Each local site must sit inside the plate ``plate`` with the plate
        as the leftmost dimension of its value (shape ``(N,)`` or ``(N, K)``).
    local_sites : sequence of str
        The per-person sites the encoder covers.
    features : callable
        ``features(data) -> Tensor (N, F)``: the encoder's input per person, from the
        model's keyword arguments.
    plate : str
        Name of the model's person plate (subsampled with ``data["batch_size"]`` when the
        model is fitted in minibatches).
    hidden : sequence of int
        Hidden layer widths of the encoder.
    globals_guide : callable
        ``globals_guide(model) -> guide`` for the model with the local sites hidden; by
        default Pyro's ``AutoNormal`` with pyrovi's step scales
        (:class:`pyrovi.guides.MeanFieldNormal`).
    batch_key : str
        The data entry holding the minibatch size.
    """

    def __init__(self, model: Callable[..., Any], local_sites: Sequence[str],
                 features: Features, plate: str = "data", hidden: Sequence[int] = (64, 64),
                 globals_guide: Callable[[Callable[..., Any]], Any] | None = None,
                 batch_key: str = "batch_size") -> None:
        super().__init__(name="amortized")
        if not local_sites:
            raise ValueError("an amortized guide needs at least one local site")
        self.model = model
        self.local_names = tuple(local_sites)
        self.features = features
        self.plate = plate
        self.hidden = tuple(hidden)
        self.batch_key = batch_key
        hidden_model = poutine.block(model, hide=list(self.local_names))
        self.globals = (globals_guide or MeanFieldNormal)(hidden_model)
        self.locals: list[_LocalSite] | None = None
        self.encoder: Encoder | None = None
        self._cache: tuple[tuple[Any, ...], list[torch.Tensor], torch.Tensor] | None = None

    def _setup(self, data: dict[str, Any]) -> None:
        with poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
            trace = poutine.trace(self.model).get_trace(**data)
        missing = [n for n in self.local_names if n not in trace.nodes]
        if missing:
            raise ValueError(f"the model has no sample site(s) {missing}")
        self.locals = [_LocalSite(n, trace.nodes[n], self.plate) for n in self.local_names]
        if len({(s.plate_dim, s.other_plates) for s in self.locals}) > 1:
            raise ValueError(f"the local sites {self.local_names} sit in different plates")
        h = self.features(data)
        with torch.no_grad():
            self.register_buffer("feature_mean", h.mean(0))
            self.register_buffer("feature_sd", h.std(0).clamp_min(1e-6)
                                 if h.shape[0] > 1 else torch.ones_like(h[0]))
        self.encoder = Encoder(h.shape[-1], sum(s.size for s in self.locals), self.hidden).to(
            dtype=h.dtype, device=h.device)

    def encode(self, data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of q(z_i | x_i) for every person of ``data``, shape ``(N, D)``.

        The columns are the local sites in ``local_sites`` order, each flattened, in the
        sites' unconstrained space. ``data`` may hold people the guide was not fitted on.
        """
        if self.encoder is None:
            self._setup(data)
        return self.encoder(self._standardized(data))

    def _standardized(self, data: dict[str, Any]) -> torch.Tensor:
        """The standardised features of every person, computed once per data set (not once
        per step: the features of 20,000 people would be rebuilt for each minibatch)."""
        tensors = [(name, value) for name, value in sorted(data.items())
                   if isinstance(value, torch.Tensor)]
        key = tuple((name, id(value), value._version) for name, value in tensors)
        key += (self.feature_mean._version, self.feature_sd._version)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                h = (self.features(data) - self.feature_mean) / self.feature_sd
            # the cache holds the data tensors, so their ids cannot be reused meanwhile
            self._cache = (key, [value for _, value in tensors], h)
        return self._cache[2]

    def forward(self, **data: Any) -> dict[str, torch.Tensor]:
        if self.encoder is None:
            self._setup(data)
        values = dict(self.globals(**data))
        h = self._standardized(data)
        first = self.locals[0]
        with contextlib.ExitStack() as stack:
            for name, size, dim in first.other_plates:
                stack.enter_context(pyro.plate(name, size, dim=dim))
            idx = stack.enter_context(pyro.plate(
                self.plate, h.shape[0], subsample_size=data.get(self.batch_key),
                dim=first.plate_dim))
            loc, scale = self.encoder(h[idx])
            start = 0
            for site in self.locals:
                stop = start + site.size
                values[site.name] = pyro.sample(
                    site.name, site.distribution(loc[:, start:stop], scale[:, start:stop]))
                start = stop
        return values

    def step_scales(self) -> dict[str, torch.Tensor]:
        """Per-parameter step multipliers: the globals' own, ``ENCODER_STEP_FRACTION`` for
        the encoder's weights."""
        scales = getattr(self.globals, "step_scales", None)
        out = {f"globals.{k}": v for k, v in (scales() if scales else {}).items()}
        if self.encoder is not None:
            for name, p in self.encoder.named_parameters():
                out[f"encoder.{name}"] = torch.full_like(p, ENCODER_STEP_FRACTION)
        return out



def amortized_family(name: str, local_sites: Sequence[str], features: Features,
                     plate: str = "data", hidden: Sequence[int] = (64, 64),
                     description: str = "") -> GuideFamily:
    """A guide family record for an :class:`AmortizedGuide` of one model.

    Parameters
    ----------
    name : str
        The name users pass as ``guide=`` (register it with
        :func:`pyrovi.guides.register_family`).
    local_sites, features, plate, hidden
        As for :class:`AmortizedGuide`.
    description : str
        One line for listings.

    Returns
    -------
    GuideFamily
        ``amortized=True``; it does not represent correlations (mean-field globals,
        a diagonal Gaussian per person).
    """
    sites = tuple(local_sites)
    return GuideFamily(
        name, lambda model: AmortizedGuide(model, sites, features, plate, hidden),
        represents_correlations=False, amortized=True, preconditioned=True,
        description=description or f"mean-field globals, encoder q({', '.join(sites)} | x)")
