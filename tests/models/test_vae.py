"""The variational autoencoder: likelihoods against direct computations, sites, plain Pyro
SVI, the bundled digits and their split, IDX/NPZ readers, the registered guide family."""

from __future__ import annotations

import gzip
import io
import math
import struct
from importlib import resources

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from torch.nn import functional as F

import pyrovi
from pyrovi.guides import FAMILIES
from pyrovi.models import vae
from pyrovi.models.vae import VAE

LIKELIHOODS = ("bernoulli", "categorical", "gaussian")


def _data(likelihood: str, n: int, d: int, levels: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if likelihood == "categorical":
        return torch.randint(0, levels, (n, d), generator=g).float()
    if likelihood == "bernoulli":
        return torch.randint(0, 2, (n, d), generator=g).float()
    return torch.randn(n, d, generator=g)


def _digits(n: int) -> torch.Tensor:
    return vae.load_digits("train")["x"][:n]


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_shapes_broadcast_over_particles(likelihood: str) -> None:
    model = VAE(5, latent_dim=3, hidden=(7, 4), likelihood=likelihood, num_levels=6)
    assert [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)
            ] == [7, 4, 3, 3]
    assert [m.out_features for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)
            ] == [4, 7, 5 * (6 if likelihood == "categorical" else 1)]
    loc, scale = model.encode(_data(likelihood, 6, 5, 6))
    assert loc.shape == scale.shape == (6, 3) and (scale > 0).all()
    p = model.likelihood_dist(torch.randn(2, 6, 3))  # 2 particles x 6 points
    assert p.batch_shape == (2, 6) and p.event_shape == (5,)
    assert p.log_prob(model.observed(_data(likelihood, 6, 5, 6))).shape == (2, 6)


def test_categorical_log_likelihood_is_the_picked_log_softmax() -> None:
    model = VAE(4, latent_dim=2, hidden=(8,), likelihood="categorical", num_levels=5)
    x, z = _data("categorical", 3, 4), torch.randn(3, 2)
    logits = model.decoder(z)  # (3, 4, 5)
    picked = F.log_softmax(logits, -1).gather(-1, x.long()[..., None])[..., 0].sum(-1)
    got = model.likelihood_dist(z).log_prob(model.observed(x))
    torch.testing.assert_close(got, picked)
    # a proper distribution over the 5 levels of each pixel: it sums to one
    levels = torch.arange(5).reshape(5, 1, 1).expand(5, 3, 4)
    per_pixel = dist.Categorical(logits=logits).log_prob(levels)
    torch.testing.assert_close(per_pixel.logsumexp(0), torch.zeros(3, 4))


def test_bernoulli_on_grey_levels_would_not_normalise() -> None:
    """The module docstring's claim: p^x (1-p)^(1-x) over x = 0, 1/16, ..., 1 does not sum
    to one (17/2 at p = 1/2), whatever p is."""
    x = torch.arange(17) / 16
    for p in (0.5, 0.1, 0.9):
        total = float((p**x * (1 - p) ** (1 - x)).sum())
        assert abs(total - 1) > 1
    assert float((0.5**x * 0.5 ** (1 - x)).sum()) == pytest.approx(17 / 2)


def test_bernoulli_and_gaussian_log_likelihoods_by_hand() -> None:
    z = torch.randn(3, 2)
    bern = VAE(4, latent_dim=2, hidden=(8,), likelihood="bernoulli")
    x = _data("bernoulli", 3, 4)
    logits = bern.decoder(z)
    expected = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)
    torch.testing.assert_close(bern.likelihood_dist(z).log_prob(x), expected)

    gauss = VAE(4, latent_dim=2, hidden=(8,), likelihood="gaussian")
    y = _data("gaussian", 3, 4)
    mean, sd = gauss.decoder(z)
    torch.testing.assert_close(sd, torch.full((4,), vae.model.INIT_NOISE_SD))
    expected = (-0.5 * ((y - mean) / sd) ** 2 - sd.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(gauss.likelihood_dist(z).log_prob(y), expected)


def test_sites_plates_and_minibatch_scale() -> None:
    model = VAE(64, latent_dim=2, hidden=(16,))
    x = _digits(10)
    trace = pyro.poutine.trace(model.model).get_trace(x)
    guide = pyro.poutine.trace(model.guide).get_trace(x)
    for tr in (trace, guide):
        z = tr.nodes["z"]
        assert z["fn"].event_shape == (2,) and z["fn"].batch_shape == (10,)
        assert z["value"].shape == (10, 2)
        assert [f.name for f in z["cond_indep_stack"]] == ["data"]
    prior = trace.nodes["z"]["fn"].base_dist
    torch.testing.assert_close(prior.loc, torch.zeros(10, 2))
    torch.testing.assert_close(prior.scale, torch.ones(10, 2))
    obs = trace.nodes["x"]
    assert obs["is_observed"] and obs["fn"].event_shape == (64,)
    assert obs["value"].dtype == torch.long and torch.equal(obs["value"], x.long())
    params = set(pyro.get_param_store().keys())
    assert {"decoder$$$out.weight", "encoder$$$loc.weight"} <= params

    small = pyro.poutine.trace(model.model).get_trace(x, batch_size=4)
    assert small.nodes["z"]["value"].shape == (4, 2)
    assert small.nodes["x"]["scale"] == pytest.approx(10 / 4)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="choose one of bernoulli, categorical, gaussian"):
        VAE(4, likelihood="poisson")
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        VAE(4, latent_dim=0)
    with pytest.raises(ValueError, match="num_levels"):
        VAE(4, num_levels=1)
    model = VAE(4, hidden=(3,))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        model.model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="floating point"):
        model.model(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"vae.to\(torch.float64\)"):
        model.guide(torch.zeros(2, 4, dtype=torch.float64))


def test_reset_parameters_redraws_from_torch_seed() -> None:
    model = VAE(6, latent_dim=2, hidden=(5,), likelihood="gaussian")
    torch.manual_seed(3)
    model.reset_parameters()
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.manual_seed(3)
    model.reset_parameters()
    for k, v in model.state_dict().items():
        assert torch.equal(v, first[k]), k
    torch.testing.assert_close(model.decoder.noise_sd, torch.full((6,), 1.0))


# --------------------------------------------------------------------------- plain Pyro SVI


def test_plain_pyro_svi_improves_the_elbo() -> None:
    x = _digits(100)
    model = VAE(64, latent_dim=2, hidden=(32,))
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    losses = np.array([svi.step(x) for _ in range(200)]) / len(x)  # nats per digit
    # a uniform guess over 17 levels scores 64 log 17 = 181.3 nats per digit
    assert losses[:10].mean() > 150
    assert losses[-20:].mean() < losses[:20].mean() - 30
    assert losses[-20:].mean() < 120


def test_mean_field_elbo_and_vectorised_particles_run() -> None:
    x = _digits(40)
    model = VAE(64, latent_dim=2, hidden=(16,))
    before = model.encoder.loc.weight.detach().clone()
    for elbo in (TraceMeanField_ELBO(),
                 Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)):
        svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
        losses = [svi.step(x, batch_size=16) for _ in range(5)]
        assert np.isfinite(losses).all()
    assert not torch.equal(before, model.encoder.loc.weight)
    # the vectorised estimate with many particles agrees with the average of single ones
    pyro.set_rng_seed(1)
    many = Trace_ELBO(num_particles=500, vectorize_particles=True, max_plate_nesting=1)
    one = Trace_ELBO()
    with torch.no_grad():
        vectorised = many.loss(model.model, model.guide, x)
        single = np.array([one.loss(model.model, model.guide, x) for _ in range(100)])
    # tolerance: 5 Monte Carlo standard errors of the difference (500 and 100 particles)
    se = single.std() * math.sqrt(1 / 500 + 1 / 100)
    assert vectorised == pytest.approx(single.mean(), abs=5 * se)


def test_gaussian_noise_sd_is_learned() -> None:
    data, _ = vae.simulate(seed=2, num_data=60, data_dim=5, hidden=(8,), likelihood="gaussian")
    model = VAE(5, latent_dim=2, hidden=(8,), likelihood="gaussian")
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 3e-2}), Trace_ELBO())
    for _ in range(60):
        svi.step(data["x"])
    assert "decoder$$$raw_noise_sd" in pyro.get_param_store()
    sd = model.decoder.noise_sd.detach()
    assert (sd - 1.0).abs().max() > 0.2  # moved from its initial value of 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_works_in_either_dtype(dtype: torch.dtype) -> None:
    model = VAE(64, latent_dim=2, hidden=(8,)).to(dtype)
    x = _digits(20).to(dtype)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    assert np.isfinite(svi.step(x))
    trace = pyro.poutine.trace(model.guide).get_trace(x)
    assert trace.nodes["z"]["value"].dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_the_data() -> None:
    model = VAE(64, latent_dim=2, hidden=(8,)).to("cuda")
    x = _digits(20).to("cuda")
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    assert np.isfinite(svi.step(x, batch_size=8))
    assert pyro.poutine.trace(model.guide).get_trace(x).nodes["z"]["value"].is_cuda


# --------------------------------------------------------------------------- simulation


def test_simulated_codes_are_calibrated_under_the_true_decoder() -> None:
    """Against truth: the exact posterior of each z_i on a grid, under the generating
    decoder, covers the simulated z_i at the nominal rate (90% central intervals; 1,000
    coordinates, binomial sd 0.01, tolerance 0.04)."""
    data, truth = vae.simulate(seed=0)
    assert data["x"].shape == (500, 64) and truth["z"].shape == (500, 2)
    generator = vae.random_vae(0)
    axis = torch.linspace(-4.5, 4.5, 91)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_probs = F.log_softmax(generator.decoder(grid), -1).reshape(len(grid), -1)
        onehot = F.one_hot(data["x"].long(), 17).reshape(500, -1).float()
        log_post = onehot @ log_probs.T - 0.5 * (grid**2).sum(-1)
        w = torch.softmax(log_post, -1)
    cdf = torch.stack([(w * (grid[:, d] <= truth["z"][:, d:d + 1])).sum(-1) for d in (0, 1)])
    coverage = float(((cdf > 0.05) & (cdf < 0.95)).float().mean())
    assert coverage == pytest.approx(0.90, abs=0.04)
    sd = (w @ grid**2 - (w @ grid) ** 2).sqrt()
    assert float(sd.median()) < 0.6  # the data say much more than the prior (sd 1)


def test_simulate_is_seeded_and_leaves_the_global_generator_alone() -> None:
    state = torch.random.get_rng_state()
    a, ta = vae.simulate(seed=4, num_data=30)
    b, tb = vae.simulate(seed=4, num_data=30)
    c, _ = vae.simulate(seed=5, num_data=30)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a["x"], b["x"]) and torch.equal(ta["z"], tb["z"])
    assert not torch.equal(a["x"], c["x"])
    assert a["x"].min() >= 0 and a["x"].max() <= 16 and torch.equal(a["x"], a["x"].round())
    binary, _ = vae.simulate(num_data=30, likelihood="bernoulli")
    assert set(binary["x"].unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------- registry


def test_registered_spec_and_guide_family() -> None:
    spec = pyrovi.get_model("vae")
    assert spec is vae.SPEC and spec.site_roles == {"z": "local"}
    assert spec.datasets == ("digits", "digits_validation", "digits_test")
    assert spec.model.__self__ is vae.DIGITS_VAE
    data = spec.load_data()
    assert set(data) == {"x"} and data["x"].shape == (1197, 64)
    assert spec.load_data("digits_validation")["x"].shape == (300, 64)
    assert torch.equal(spec.load_data("digits_test")["x"], vae.load_digits("test")["x"])
    trace = pyro.poutine.trace(spec.model).get_trace(**data)
    latent = {n for n, s in trace.nodes.items() if s["type"] == "sample"
              and not s["is_observed"] and not site_is_subsample(s)}
    assert latent == {"z"} and trace.log_prob_sum().isfinite()
    with pytest.raises(ValueError, match="choose one of digits"):
        spec.load_data("mnist")

    family = FAMILIES["vae_encoder"]
    assert family is vae.VAE_ENCODER and spec.guides["vae_encoder"] == family.build
    assert family.amortized and not family.represents_correlations
    assert family.start is None and not family.preconditioned


def test_the_family_builds_reproducibly() -> None:
    model = VAE(64, latent_dim=2, hidden=(16,))
    torch.manual_seed(7)
    guide = vae.VAE_ENCODER.build(model.model)
    assert guide == model.guide
    first = {k: v.clone() for k, v in model.state_dict().items()}
    svi = SVI(model.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(_digits(20))
    assert not all(torch.equal(v, first[k]) for k, v in model.state_dict().items())
    torch.manual_seed(7)
    vae.VAE_ENCODER.build(model.model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, first[k]), k
    torch.manual_seed(8)
    vae.VAE_ENCODER.build(model.model)
    assert not torch.equal(model.encoder.loc.weight, first["encoder.loc.weight"])
    with pytest.raises(ValueError, match=r"needs the model method of a VAE \(vae.model\)"):
        vae.VAE_ENCODER.build(model.guide)
    with pytest.raises(ValueError, match="vae_encoder"):
        vae.VAE_ENCODER.build(lambda x: None)


# --------------------------------------------------------------------------- bundled digits


def _digits_file() -> pd.DataFrame:
    raw = resources.files("pyrovi.data").joinpath("digits.csv.gz").read_bytes()
    return pd.read_csv(io.BytesIO(raw), compression="gzip")


def test_digits_split_sizes_disjoint_and_complete() -> None:
    frame = _digits_file()
    assert frame.shape == (1797, 66)
    assert frame["split"].value_counts().to_dict() == {"train": 1197, "validation": 300,
                                                       "test": 300}
    parts = [vae.load_digits(split)["x"] for split in vae.SPLITS]
    assert [len(p) for p in parts] == [1197, 300, 300]
    # every image in exactly one split: the splits together are the file, row for row
    together = torch.cat(parts).numpy()
    rows = np.concatenate([np.flatnonzero(frame["split"] == s) for s in vae.SPLITS])
    assert sorted(rows.tolist()) == list(range(1797))
    np.testing.assert_array_equal(together, frame.iloc[rows, :64].to_numpy())
    labels = np.concatenate([vae.digit_labels(s) for s in vae.SPLITS])
    np.testing.assert_array_equal(labels, frame["label"].to_numpy()[rows])
    assert set(labels.tolist()) == set(range(10))


def test_digits_grey_levels_and_binarisation() -> None:
    x = vae.load_digits("validation")["x"]
    assert x.dtype == torch.float32 and x.shape == (300, 64)
    assert x.min() == 0 and x.max() == 16 and torch.equal(x, x.round())
    binary = vae.load_digits("validation", binarize=True)
    assert set(binary) == {"x"}
    assert torch.equal(binary["x"], (x > 8).float())
    with pytest.raises(ValueError, match="choose one of train, validation, test"):
        vae.load_digits("dev")
    with pytest.raises(ValueError, match="unknown digits split"):
        vae.digit_labels("all")


def test_digits_are_scikit_learns() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    reference = datasets.load_digits()
    frame = _digits_file()
    np.testing.assert_array_equal(frame.iloc[:, :64].to_numpy(), reference.data)
    np.testing.assert_array_equal(frame["label"].to_numpy(), reference.target)


# --------------------------------------------------------------------------- IDX and NPZ


def _idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, type_byte, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(vae.data.IDX_TYPES[type_byte]).tobytes()


def test_idx_round_trip_plain_and_gzip(tmp_path) -> None:
    images = np.arange(48, dtype=np.uint8).reshape(3, 4, 4) * 5
    plain, packed = tmp_path / "images-idx3-ubyte", tmp_path / "images-idx3-ubyte.gz"
    plain.write_bytes(_idx_bytes(images))
    packed.write_bytes(gzip.compress(_idx_bytes(images)))
    for path in (plain, packed):
        got = vae.load_idx(path)
        assert got.dtype == np.uint8 and got.shape == (3, 4, 4)
        np.testing.assert_array_equal(got, images)
    floats = np.linspace(-1, 1, 6).reshape(2, 3)
    (tmp_path / "f.idx").write_bytes(_idx_bytes(floats, 0x0E))
    np.testing.assert_array_equal(vae.load_idx(tmp_path / "f.idx"), floats)
    labels = np.array([3, 1, 4], dtype=np.int16)
    (tmp_path / "l.idx").write_bytes(_idx_bytes(labels, 0x0B))
    assert vae.load_idx(tmp_path / "l.idx").tolist() == [3, 1, 4]

    data = vae.mnist_data(packed)
    assert data["x"].shape == (3, 16) and data["x"].dtype == torch.float32
    assert torch.equal(data["x"], torch.tensor(images.reshape(3, 16) > 127).float())
    grey = vae.mnist_data(packed, levels=17)["x"]
    levels = images.reshape(3, 16).astype(np.int64) * 17 // 256
    assert torch.equal(grey, torch.tensor(levels).float())
    unit = vae.mnist_data(plain, binarize=False)["x"]
    torch.testing.assert_close(unit, torch.tensor(images.reshape(3, 16) / 255).float())


def test_bad_idx_files_are_named(tmp_path) -> None:
    images = np.zeros((3, 4, 4), dtype=np.uint8)
    good = _idx_bytes(images)
    cases = {
        "magic.idx": (b"\x08\x03" + good[2:], "bad IDX magic number"),
        "type.idx": (good[:2] + b"\x07" + good[3:], "bad IDX magic number"),
        "short.idx": (good[:-5], "truncated"),
        "header.idx": (good[:9], "truncated IDX header"),
        "tiny.idx": (b"\x00", "truncated IDX file"),
        "long.idx": (good + b"\x00", "trailing bytes"),
        "gzip.idx.gz": (gzip.compress(good)[:-12], "broken gzip"),
    }
    for name, (content, problem) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=problem) as info:
            vae.load_idx(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    labels = tmp_path / "labels.idx"
    labels.write_bytes(_idx_bytes(np.array([1, 2], dtype=np.uint8)))
    with pytest.raises(ValueError, match="expected uint8 images"):
        vae.mnist_data(labels)
    images_path = tmp_path / "images.idx"
    images_path.write_bytes(good)
    with pytest.raises(ValueError, match="levels must lie between 2 and 256"):
        vae.mnist_data(images_path, levels=1)
    with pytest.raises(FileNotFoundError):
        vae.load_idx(tmp_path / "absent.idx")


def test_npz_round_trip_and_errors(tmp_path) -> None:
    x = np.arange(12.0).reshape(3, 4)
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=np.array([0, 1, 0]))
    np.testing.assert_array_equal(vae.load_npz(path), x)
    np.testing.assert_array_equal(vae.load_npz(path, key="y"), [0, 1, 0])
    with pytest.raises(ValueError, match=r"has no array 'images'; its keys: x, y"):
        vae.load_npz(path, key="images")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an archive at all")
    with pytest.raises(ValueError, match="bad.npz"):
        vae.load_npz(bad)
    single = tmp_path / "single.npy"
    np.save(single, x)
    with pytest.raises(ValueError, match="not an NPZ archive"):
        vae.load_npz(single)
