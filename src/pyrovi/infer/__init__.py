"""Inference: the SVI fit loop, NUTS reference runs, EM and variational EM."""

from pyrovi.infer.nuts import ReferenceQualityWarning, nuts
from pyrovi.infer.persist import load_fit
from pyrovi.infer.svi import (
    ELBO_FAMILIES,
    ConvergenceWarning,
    NonFiniteLossError,
    SVIFit,
    estimate_elbo,
    fit,
)

__all__ = [
    "ELBO_FAMILIES",
    "ConvergenceWarning",
    "NonFiniteLossError",
    "ReferenceQualityWarning",
    "SVIFit",
    "estimate_elbo",
    "fit",
    "load_fit",
    "nuts",
]
