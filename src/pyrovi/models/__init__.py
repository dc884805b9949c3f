"""The model registry: one table from names to :class:`ModelSpec` records.

The CLI, the reports and the tests read this table and no other list.
"""

from __future__ import annotations

from pyrovi.models import (
    beta_bernoulli,
    eight_schools,
    gmm,
    gmm_full,
    health,
    intelligence,
    irt,
    linear_regression,
    normal_normal,
    vae,
)
from pyrovi.models.spec import ModelSpec

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (normal_normal.SPEC, beta_bernoulli.SPEC, linear_regression.SPEC, gmm.SPEC,
                 gmm.SPEC_LKJ, gmm_full.SPEC, irt.SPEC, irt.SPEC_RASCH, health.SPEC,
                 intelligence.SPEC, intelligence.SPEC_MARGINAL, vae.SPEC,
                 eight_schools.SPEC, eight_schools.SPEC_NONCENTERED)
}


def list_models() -> list[str]:
    """Return the names of the registered models, sorted."""
    return sorted(REGISTRY)


def get_model(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` registered under ``name``.

    Raises
    ------
    KeyError
        If no model has that name; the message lists the registered ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        ) from None


__all__ = ["ModelSpec", "REGISTRY", "get_model", "list_models"]
