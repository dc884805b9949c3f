"""Diagnostics: pure functions comparing variational draws with reference draws.

No file I/O and no plots here; :mod:`pyrovi.report` renders what these compute.

======================  ===============================================================
module                  computes
======================  ===============================================================
``draws``               named scalar parameters ``site[i,j]`` from InferenceData
``moments``             the marginal table (mean error, sd ratio, W1 per parameter)
``wasserstein``         joint and sliced 1-Wasserstein distances
``psis``                the PSIS k-hat of importance weights and its bootstrap interval
``evidence``            importance weighted bounds on ``log p(x)`` and the KL gap
``bounds``              reference-free bounds on mean and sd errors (ELBO and CUBO)
``health``              convergence of the reference (R-hat, ESS, divergences)
``correlation``         posterior correlations the guide misses
``relabel``             undo label switching in mixtures; chains in different modes
``predictive``          posterior predictive p-values; mean, sd and interval of draws
``sites``               local (per-person) sites summarised per site, with calibration
``verdict``             "trust" / "caution" / "reject" with reasons in words
======================  ===============================================================
"""

from pyrovi.diagnostics.bounds import (
    BOUND_SE_MULTIPLIER,
    CUBO_KHAT_MAX,
    cubo,
    validated_bounds,
)
from pyrovi.diagnostics.correlation import missed_correlations, strongest_pair
from pyrovi.diagnostics.draws import scalar_draws, stack_draws
from pyrovi.diagnostics.evidence import iwae_bound, kl_gap
from pyrovi.diagnostics.health import ESS_MIN, RHAT_MAX, reference_health
from pyrovi.diagnostics.moments import TABLE_COLUMNS, marginal_table
from pyrovi.diagnostics.predictive import (
    INTERVAL_PROB,
    interval_summary,
    posterior_predictive_pvalue,
)
from pyrovi.diagnostics.psis import (
    CONSTANT_SPREAD,
    KHAT_BAD,
    KHAT_BOOTSTRAP,
    KHAT_GOOD,
    KHAT_LEVEL,
    khat_label,
    psis_khat,
    psis_khat_interval,
)
from pyrovi.diagnostics.relabel import (
    MODE_SEPARATION,
    RelabelInfo,
    chains_disagree,
    relabel,
    relabel_pair,
)
from pyrovi.diagnostics.sites import (
    LOCAL_SITE_COLUMNS,
    interval_coverage,
    local_site_table,
    site_of,
)
from pyrovi.diagnostics.verdict import (
    BASIS_BOUNDS,
    BASIS_KHAT,
    BASIS_REFERENCE,
    BASIS_UNHEALTHY,
    BOUND_TRUST_MEAN,
    BOUND_TRUST_SD,
    CAUTION_MEAN_ERROR_Z,
    CAUTION_SD_RATIO,
    TRUST_KHAT,
    TRUST_MEAN_ERROR_Z,
    TRUST_SD_RATIO,
    verdict,
    verdict_basis,
)
from pyrovi.diagnostics.wasserstein import sliced_w1, w1_joint

__all__ = [
    "BASIS_BOUNDS",
    "BASIS_KHAT",
    "BASIS_REFERENCE",
    "BASIS_UNHEALTHY",
    "BOUND_SE_MULTIPLIER",
    "BOUND_TRUST_MEAN",
    "BOUND_TRUST_SD",
    "CAUTION_MEAN_ERROR_Z",
    "CAUTION_SD_RATIO",
    "CONSTANT_SPREAD",
    "CUBO_KHAT_MAX",
    "ESS_MIN",
    "INTERVAL_PROB",
    "KHAT_BAD",
    "KHAT_BOOTSTRAP",
    "KHAT_GOOD",
    "KHAT_LEVEL",
    "LOCAL_SITE_COLUMNS",
    "MODE_SEPARATION",
    "RHAT_MAX",
    "RelabelInfo",
    "TABLE_COLUMNS",
    "TRUST_KHAT",
    "TRUST_MEAN_ERROR_Z",
    "TRUST_SD_RATIO",
    "chains_disagree",
    "cubo",
    "interval_coverage",
    "interval_summary",
    "iwae_bound",
    "khat_label",
    "local_site_table",
    "kl_gap",
    "marginal_table",
    "missed_correlations",
    "posterior_predictive_pvalue",
    "psis_khat",
    "psis_khat_interval",
    "reference_health",
    "relabel",
    "relabel_pair",
    "scalar_draws",
    "site_of",
    "sliced_w1",
    "stack_draws",
    "strongest_pair",
    "validated_bounds",
    "verdict",
    "verdict_basis",
    "w1_joint",
]
