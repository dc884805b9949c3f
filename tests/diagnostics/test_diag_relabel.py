"""Tests of relabel / relabel_pair / chains_disagree on synthetic label-switched draws.

Draws come from a 3-component posterior with known component means (sd 0.5, components
at least 4 apart, so a draw is misassigned with negligible probability); each draw's
components are randomly permuted. Weights and scales are deterministic functions of
the locs, so they must stay attached to their component through the relabelling.
"""

from __future__ import annotations

import itertools

import arviz as az
import numpy as np
import pytest

from pyrovi.diagnostics import (
    MODE_SEPARATION,
    RelabelInfo,
    chains_disagree,
    relabel,
    relabel_pair,
)
from pyrovi.diagnostics.relabel import _best_permutations

TRUTH = np.array([[-4.0, 1.0], [0.0, -2.0], [4.0, 2.0]])  # (K, D), sorted by locs[:, 0]
SD = 0.5
SITES = ("weights", "locs", "scales")


def _attached(locs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights and scales as deterministic functions of each component's loc."""
    raw = 1.0 / (1.0 + np.exp(-locs[..., 0]))
    weights = raw / raw.sum(axis=-1, keepdims=True)
    scales = np.exp(0.1 * locs) + 0.01
    return weights, scales


def _draws(
    seed: int,
    chains: int = 2,
    draws: int = 500,
    truth: np.ndarray = TRUTH,
    permute: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    locs = truth + SD * rng.standard_normal((chains, draws, *truth.shape))
    perm = np.argsort(rng.random((chains, draws, truth.shape[0])), axis=-1)
    if permute:
        locs = np.take_along_axis(locs, perm.reshape(*perm.shape, *[1] * (truth.ndim - 1)), 2)
    weights, scales = _attached(locs if truth.ndim == 2 else locs[..., None])
    if truth.ndim == 1:
        scales = scales[..., 0]
    return {"weights": weights, "locs": locs, "scales": scales}, perm


def _idata(posterior: dict[str, np.ndarray]) -> az.InferenceData:
    num = posterior["locs"].shape[:2]
    return az.from_dict(
        posterior=posterior,
        sample_stats={"diverging": np.zeros(num, dtype=bool)},
    )


def _match_truth(means: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Means reordered to the truth's component order (labels are arbitrary)."""
    best = min(
        itertools.permutations(range(len(truth))),
        key=lambda p: np.sum((means[list(p)] - truth) ** 2),
    )
    return means[list(best)]


def test_recovers_components_and_keeps_sites_attached():
    posterior, _ = _draws(seed=0)
    raw_means = posterior["locs"].mean(axis=(0, 1))
    assert np.all(np.abs(raw_means[:, 0]) < 1.0)  # switched draws average the components
    new, info = relabel(_idata(posterior), SITES)

    assert isinstance(info, RelabelInfo)
    assert info.chain_modes_agree and info.disagreements == ()
    assert info.key_site == "locs" and info.pivot.shape == (3, 2)
    assert 0.75 < info.fraction_permuted < 0.9  # 5/6 of random permutations move something
    assert "Hungarian matching on locs" in info.method and "% of 1000 draws" in info.message

    locs = new.posterior["locs"].values
    # 1000 draws with sd 0.5: MCSE of a mean ~0.016; tolerance 0.1 (6 MCSE).
    np.testing.assert_allclose(_match_truth(locs.mean(axis=(0, 1)), TRUTH), TRUTH, atol=0.1)
    # no switching left: each relabelled component has the within-component spread
    np.testing.assert_allclose(locs.std(axis=(0, 1)), SD, rtol=0.1)

    weights, scales = _attached(locs)
    np.testing.assert_allclose(new.posterior["weights"].values, weights)
    np.testing.assert_allclose(new.posterior["scales"].values, scales)
    # other groups copied unchanged
    assert new.sample_stats["diverging"].shape == (2, 500)

    # the returned pivot reproduces the relabelling
    again, again_info = relabel(_idata(posterior), SITES, pivot=info.pivot)
    np.testing.assert_array_equal(again.posterior["locs"].values, locs)
    assert "given pivot" in again_info.method


def test_ordered_draws_are_left_alone():
    posterior, _ = _draws(seed=1, permute=False)
    new, info = relabel(_idata(posterior), SITES)
    assert info.fraction_permuted < 0.002
    np.testing.assert_allclose(new.posterior["locs"].values.mean(axis=(0, 1)), TRUTH, atol=0.1)


def test_input_not_mutated():
    posterior, _ = _draws(seed=2)
    idata = _idata(posterior)
    before = {name: idata.posterior[name].values.copy() for name in SITES}
    new, _ = relabel(idata, SITES)
    for name in SITES:
        np.testing.assert_array_equal(idata.posterior[name].values, before[name])
    assert not np.array_equal(new.posterior["locs"].values, before["locs"])


def test_one_dimensional_locs():
    truth = np.array([-3.0, 0.5, 4.0])
    posterior, _ = _draws(seed=3, truth=truth)
    new, info = relabel(_idata(posterior), SITES)
    locs = new.posterior["locs"].values
    assert locs.shape == (2, 500, 3) and info.pivot.shape == (3, 1)
    np.testing.assert_allclose(_match_truth(locs.mean(axis=(0, 1)), truth), truth, atol=0.1)
    weights, scales = _attached(locs[..., None])
    np.testing.assert_allclose(new.posterior["weights"].values, weights)
    np.testing.assert_allclose(new.posterior["scales"].values, scales[..., 0])
    # a pivot may be given in the site's own shape (K,)
    _, given = relabel(_idata(posterior), SITES, pivot=truth)
    assert given.fraction_permuted > 0.75


def test_relabel_pair_aligns_vi_with_a_fixed_different_labelling():
    ref_post, _ = _draws(seed=4)
    # VI: one chain, unswitched, but its labels are the fixed permutation (2, 0, 1)
    vi_post, _ = _draws(seed=5, chains=1, draws=400, truth=TRUTH[[2, 0, 1]], permute=False)
    vi, ref, info = relabel_pair(_idata(vi_post), _idata(ref_post), SITES)
    ref_means = ref.posterior["locs"].values.mean(axis=(0, 1))
    vi_means = vi.posterior["locs"].values.mean(axis=(0, 1))
    # same component under the same label on both sides (tolerance: 6 MCSE of the VI)
    np.testing.assert_allclose(vi_means, ref_means, atol=0.15)
    assert info.other_fraction_permuted is not None and info.other_fraction_permuted > 0.99
    assert info.chain_modes_agree and "variational draws" in info.message
    weights, _ = _attached(vi.posterior["locs"].values)
    np.testing.assert_allclose(vi.posterior["weights"].values, weights)


def test_chains_in_different_modes_are_reported():
    posterior, _ = _draws(seed=6)
    other, _ = _draws(seed=7, truth=np.array([[-4.0, 1.0], [0.0, -2.0], [4.0, 8.0]]))
    for name in SITES:
        posterior[name][1] = other[name][1]  # chain 1: third component elsewhere
    new, info = relabel(_idata(posterior), SITES)
    assert not info.chain_modes_agree
    assert info.message.startswith("chains 0 and 1 sit in different modes (locs[")
    assert "sd)" in info.message and "rerun NUTS" in info.message
    assert info.disagreements == tuple(chains_disagree(new, "locs"))


def test_rhat_flags_chains_that_are_close_but_apart():
    # chain 1 shifted by 2 sd in locs[0,1]: below MODE_SEPARATION, split R-hat ~1.4
    rng = np.random.default_rng(8)
    locs = TRUTH + SD * rng.standard_normal((2, 500, 3, 2))
    locs[1, :, 0, 1] += 2.0 * SD
    idata = az.from_dict(posterior={"locs": locs})
    problems = chains_disagree(idata, "locs")
    assert 2.0 < MODE_SEPARATION
    assert len(problems) == 1 and problems[0].startswith("split R-hat of locs[0,1]")
    assert chains_disagree(az.from_dict(posterior={"locs": locs[:1]}), "locs") == []


@pytest.mark.parametrize("num_components", [3, 7])
def test_matching_is_an_optimal_assignment(num_components):
    # vectorised path (enumeration for K <= 5, linear_sum_assignment above) vs brute force
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(num_components)
    feats = rng.standard_normal((300, num_components, 2))
    pivot = rng.standard_normal((num_components, 2))
    perms = _best_permutations(feats, pivot)
    scale = pivot.std(axis=0)
    for n in range(feats.shape[0]):
        cost = (((pivot[:, None, :] - feats[n][None, :, :]) / scale) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        assert np.isclose(cost[rows, perms[n]].sum(), cost[rows, cols].sum())
        assert sorted(perms[n]) == list(range(num_components))


def test_bad_arguments_raise():
    posterior, _ = _draws(seed=9, draws=20)
    idata = _idata(posterior)
    with pytest.raises(ValueError, match=r"unknown site\(s\) 'mus'.*'locs'"):
        relabel(idata, ["locs", "mus"])
    with pytest.raises(ValueError, match="non-empty"):
        relabel(idata, [])
    with pytest.raises(ValueError, match="key_site"):
        relabel(idata, ["locs"], key_site="weights")
    with pytest.raises(ValueError, match="pivot has shape"):
        relabel(idata, SITES, pivot=np.zeros((2, 2)))
    mixed = az.from_dict(posterior={"locs": posterior["locs"], "w": np.ones((2, 20, 4))})
    with pytest.raises(ValueError, match="number of components"):
        relabel(mixed, ["locs", "w"])
