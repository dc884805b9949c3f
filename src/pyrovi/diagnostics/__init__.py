"""Diagnostics: pure functions comparing variational draws with reference draws.

No file I/O and no plots here; :mod:`pyrovi.report` renders what these compute.

======================  ===============================================================
module                  computes
======================  ===============================================================
``draws``               named scalar parameters ``site[i,j]`` from InferenceData
``moments``             the marginal table (mean error, sd ratio, W1 per parameter)
``wasserstein``         joint and sliced 1-Wasserstein distances
``psis``                guide importance weights and the PSIS k-hat
``evidence``            importance weighted bounds on ``log p(x)`` and the KL gap
``health``              convergence of the reference (R-hat, ESS, divergences)
``correlation``         posterior correlations the guide misses
``relabel``             undo label switching in mixtures; chains in different modes
``verdict``             "trust" / "caution" / "reject" with reasons in words
======================  ===============================================================
"""

from pyrovi.diagnostics.correlation import missed_correlations, strongest_pair
from pyrovi.diagnostics.draws import scalar_draws, stack_draws
from pyrovi.diagnostics.evidence import iwae_bound, kl_gap
from pyrovi.diagnostics.health import ESS_MIN, RHAT_MAX, reference_health
from pyrovi.diagnostics.moments import TABLE_COLUMNS, marginal_table
from pyrovi.diagnostics.psis import (
    CONSTANT_SPREAD,
    KHAT_BAD,
    KHAT_GOOD,
    guide_log_weights,
    khat_label,
    psis_khat,
)
from pyrovi.diagnostics.relabel import (
    MODE_SEPARATION,
    RelabelInfo,
    chains_disagree,
    relabel,
    relabel_pair,
)
from pyrovi.diagnostics.verdict import (
    CAUTION_MEAN_ERROR_Z,
    CAUTION_SD_RATIO,
    DIAGONAL_GUIDES,
    TRUST_KHAT,
    TRUST_MEAN_ERROR_Z,
    TRUST_SD_RATIO,
    verdict,
)
from pyrovi.diagnostics.wasserstein import sliced_w1, w1_joint

__all__ = [
    "CAUTION_MEAN_ERROR_Z",
    "CAUTION_SD_RATIO",
    "CONSTANT_SPREAD",
    "DIAGONAL_GUIDES",
    "ESS_MIN",
    "KHAT_BAD",
    "KHAT_GOOD",
    "MODE_SEPARATION",
    "RHAT_MAX",
    "RelabelInfo",
    "TABLE_COLUMNS",
    "TRUST_KHAT",
    "TRUST_MEAN_ERROR_Z",
    "TRUST_SD_RATIO",
    "chains_disagree",
    "guide_log_weights",
    "iwae_bound",
    "khat_label",
    "kl_gap",
    "marginal_table",
    "missed_correlations",
    "psis_khat",
    "reference_health",
    "relabel",
    "relabel_pair",
    "scalar_draws",
    "sliced_w1",
    "stack_draws",
    "strongest_pair",
    "verdict",
    "w1_joint",
]
