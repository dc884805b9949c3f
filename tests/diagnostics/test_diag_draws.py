"""Tests of pyrovi.diagnostics.draws: naming and flattening of scalar parameters."""

import arviz as az
import numpy as np
import pytest

from pyrovi.diagnostics import scalar_draws, stack_draws


@pytest.fixture
def idata():
    rng = np.random.default_rng(0)
    return az.from_dict(
        posterior={
            "sigma": rng.normal(size=(2, 5)),
            "mu": rng.normal(size=(2, 5, 3)),
            "L": rng.normal(size=(2, 5, 2, 2)),
        }
    )


def test_names_order_and_values(idata):
    draws = scalar_draws(idata)
    assert list(draws) == [
        "sigma",
        "mu[0]",
        "mu[1]",
        "mu[2]",
        "L[0,0]",
        "L[0,1]",
        "L[1,0]",
        "L[1,1]",
    ]
    post = idata.posterior
    np.testing.assert_array_equal(draws["sigma"], post["sigma"].values)
    np.testing.assert_array_equal(draws["mu[2]"], post["mu"].values[:, :, 2])
    np.testing.assert_array_equal(draws["L[1,0]"], post["L"].values[:, :, 1, 0])
    assert all(v.shape == (2, 5) for v in draws.values())


def test_var_names_and_missing(idata):
    assert list(scalar_draws(idata, var_names=["mu"])) == ["mu[0]", "mu[1]", "mu[2]"]
    with pytest.raises(KeyError, match="nope"):
        scalar_draws(idata, var_names=["nope"])
    with pytest.raises(KeyError, match="prior"):
        scalar_draws(idata, group="prior")


def test_stack_draws(idata):
    draws = scalar_draws(idata)
    matrix = stack_draws(draws, ["mu[1]", "sigma"])
    assert matrix.shape == (10, 2)
    # rows in C order of (chain, draw): chain 1 draw 0 is row 5
    assert matrix[5, 0] == idata.posterior["mu"].values[1, 0, 1]
    assert matrix[5, 1] == idata.posterior["sigma"].values[1, 0]
    with pytest.raises(ValueError):
        stack_draws(draws, [])
