"""Variational guide families, as records in one table.

Every built-in family builds a Pyro autoguide, so a guide made here works in any Pyro
project::

    from pyrovi.guides import make_guide
    guide = make_guide("full_rank", model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())

=============  ======================  ===========================  ============
family         guide                   correlations                 richer
=============  ======================  ===========================  ============
mean_field     MeanFieldNormal         no                           low_rank
low_rank       AutoWhitenedNormal      leading directions           full_rank
full_rank      AutoWhitenedNormal      yes                          flow
flow           AutoNormalizingFlow     yes, and non-Gaussian shape  -
map            AutoDelta               no (a point)                 -
laplace        AutoMultivariateNormal  yes (at the mode)            -
=============  ======================  ===========================  ============

Latent-factor models register *amortized* families (:func:`amortized_family`): globals as
``mean_field``, each person's latents from an encoder of that person's data
(:class:`AmortizedGuide`, ``pyrovi.guides.amortized``).

A guide may offer two methods the fit loop uses when present: ``rewhiten()`` (re-centre
its coordinates on the current q) and ``step_scales()`` (per-parameter step multipliers).
"""

from pyrovi.guides.amortized import AmortizedGuide, Encoder, amortized_family
from pyrovi.guides.family import (
    FAMILIES,
    GUIDE_FAMILIES,
    GuideFactory,
    GuideFamily,
    get_family,
    make_guide,
    register_family,
)
from pyrovi.guides.flow import FixedAffine, flow
from pyrovi.guides.gaussian import (
    AutoWhitenedNormal,
    GaussianStart,
    MeanFieldNormal,
    init_to_median_or_feasible,
    initial_start,
)

__all__ = [
    "AmortizedGuide",
    "Encoder",
    "amortized_family",
    "FAMILIES",
    "GUIDE_FAMILIES",
    "AutoWhitenedNormal",
    "FixedAffine",
    "GaussianStart",
    "GuideFactory",
    "GuideFamily",
    "MeanFieldNormal",
    "flow",
    "get_family",
    "init_to_median_or_feasible",
    "initial_start",
    "make_guide",
    "register_family",
]
