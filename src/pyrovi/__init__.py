"""pyrovi: variational inference you can check, on top of Pyro."""

from pyrovi.guides import GUIDE_FAMILIES, make_guide
from pyrovi.infer import ConvergenceWarning, NonFiniteLossError, SVIFit, fit, load_fit
from pyrovi.models import ModelSpec, get_model, list_models

__version__ = "0.1.0"

__all__ = [
    "GUIDE_FAMILIES",
    "ConvergenceWarning",
    "ModelSpec",
    "NonFiniteLossError",
    "SVIFit",
    "fit",
    "get_model",
    "list_models",
    "load_fit",
    "make_guide",
]
