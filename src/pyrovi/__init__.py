"""pyrovi: variational inference you can check, on top of Pyro.

The public API (see ``shared/DESIGN.md``): the model registry (:func:`list_models`,
:func:`get_model`), the SVI fit (:func:`fit`, with the guide ladder ``guide="auto"``; the
step-level :class:`SVIRun`, :class:`SVIFit`, :func:`load_fit`), the NUTS
reference (:func:`nuts`, :func:`load_reference`) and the comparison (:func:`compare`,
:class:`Comparison`).
"""

from pyrovi import quiet  # noqa: F401  first: silences ArviZ's refactor notice before arviz loads
from pyrovi.compare import Comparison, compare
from pyrovi.guides import GUIDE_FAMILIES, make_guide
from pyrovi.infer import ConvergenceWarning, NonFiniteLossError, SVIFit, SVIRun, load_fit
from pyrovi.infer.nuts import ReferenceQualityWarning, nuts
from pyrovi.ladder import NoTrustworthyGuideWarning, fit
from pyrovi.models import ModelSpec, get_model, list_models
from pyrovi.references import ReferenceFormatError, load_reference

__version__ = "0.5.0"

__all__ = [
    "GUIDE_FAMILIES",
    "Comparison",
    "ConvergenceWarning",
    "ModelSpec",
    "NoTrustworthyGuideWarning",
    "NonFiniteLossError",
    "ReferenceFormatError",
    "ReferenceQualityWarning",
    "SVIFit",
    "SVIRun",
    "compare",
    "fit",
    "get_model",
    "list_models",
    "load_fit",
    "load_reference",
    "make_guide",
    "nuts",
]
