"""The unit of every number a report shows: summary fields and table columns.

"reference sd" means the figure is divided by the reference posterior's standard
deviation of the parameter concerned; "nats" are natural-log units of probability.
"""

from __future__ import annotations

__all__ = ["SUMMARY_UNITS", "TABLE_UNITS", "UNITS"]

SUMMARY_UNITS: dict[str, str] = {
    "max_abs_mean_error_z": "reference sd",
    "worst_sd_ratio": "ratio (sd_vi / sd_ref)",
    "w1_joint": "reference sd (standardized)",
    "w1_joint_baseline": "reference sd (standardized)",
    "khat": "Pareto shape (dimensionless)",
    "khat_samples": "importance samples",
    "elbo": "nats",
    "elbo_se": "nats",
    "log_evidence": "nats",
    "log_evidence_se": "nats",
    "kl_gap": "nats",
    "kl_gap_low": "nats",
    "kl_gap_high": "nats",
    "num_parameters": "count",
}
"""Unit of each numeric field of :attr:`pyrovi.compare.Comparison.summary`."""

TABLE_UNITS: dict[str, str] = {
    "mean_vi": "parameter units",
    "mean_ref": "parameter units",
    "sd_vi": "parameter units",
    "sd_ref": "parameter units",
    "mean_error_z": "reference sd",
    "sd_ratio": "ratio (sd_vi / sd_ref)",
    "w1_std": "reference sd",
}
"""Unit of each column of :attr:`pyrovi.compare.Comparison.table`."""

UNITS: dict[str, str] = {**SUMMARY_UNITS, **TABLE_UNITS}
"""Both of the above; the names do not collide."""
