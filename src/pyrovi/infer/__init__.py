"""Inference: the SVI fit loop, NUTS reference runs, EM and variational EM.

``util`` traces models, ``laplace`` finds the mode and the Laplace start, ``schedule``
decides step sizes and stopping, ``optim`` is the preconditioned Adam, ``batches`` the
minibatches, ``svi`` the loop (:func:`fit` and the step-level :class:`SVIRun`) and
``result`` the :class:`SVIFit` it returns and its persistence.
"""

from pyrovi.infer.nuts import ReferenceQualityWarning, nuts
from pyrovi.infer.objectives import OBJECTIVES, Objective, get_objective
from pyrovi.infer.result import SVIFit, estimate_elbo, load_fit
from pyrovi.infer.schedule import ConvergenceWarning
from pyrovi.infer.svi import ELBO_FAMILIES, NonFiniteLossError, SVIRun, fit

__all__ = [
    "ELBO_FAMILIES",
    "ConvergenceWarning",
    "NonFiniteLossError",
    "OBJECTIVES",
    "Objective",
    "ReferenceQualityWarning",
    "SVIFit",
    "SVIRun",
    "estimate_elbo",
    "fit",
    "get_objective",
    "load_fit",
    "nuts",
]
