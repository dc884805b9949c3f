"""The variational autoencoder (Kingma and Welling 2014; Rezende, Mohamed and Wierstra 2014).

Each data point ``x_i`` (a vector of ``data_dim`` numbers, e.g. the 64 pixels of an 8x8
digit) has its own latent code ``z_i``::

    z_i ~ Normal(0, I)                   (site "z", shape (N, latent_dim), local)
    x_i ~ p(x | decoder(z_i))            (site "x", one event of data_dim values)

and the variational posterior of ``z_i`` is a diagonal Gaussian computed from ``x_i`` by
a second network, the encoder (an *amortized* guide: one set of weights for all data
points instead of two numbers per point and dimension)::

    q(z_i | x_i) = Normal(loc(x_i), scale(x_i))      (per dimension)

The decoder's weights are parameters of the model, the encoder's of the guide; SVI
trains both at once by maximising the ELBO, a lower bound of ``log p(x)``::

    log p(x) = ELBO(q) + KL(q(z | x) || p(z | x))

The two gaps between ``log p(x)`` and the ELBO (the best Gaussian per point falls short of
the posterior; the encoder falls short of the best Gaussian per point, the *amortization
gap* of Cremer, Li and Duvenaud 2018) are what a VAE user wants measured. Samples of
``q`` are drawn by ``rsample`` (``loc + scale * eps``, the reparameterization trick), so
the gradient of the ELBO flows through ``z`` into the encoder.

**Networks.** Encoder and decoder are multilayer perceptrons with softplus activations
(smooth, as in NumPyro's ``examples/vae.py``): the encoder ``data_dim -> hidden[0] ->
... -> hidden[-1]`` then two linear heads, ``loc`` and ``scale = softplus(.) +``
:data:`MIN_SCALE`; the decoder ``latent_dim -> hidden[-1] -> ... -> hidden[0]`` then a
linear layer to the likelihood's parameters. Both broadcast over leading dimensions, so
``z`` of shape ``(P, B, latent_dim)`` (``P`` vectorised particles) decodes to parameters of
shape ``(P, B, data_dim, ...)``. The categorical encoder divides its input by
``num_levels - 1`` so that grey levels enter on the scale [0, 1]. Weights start at
PyTorch's default initialisation, drawn from torch's random number generator
(:meth:`VAE.reset_parameters` draws them again; the caller seeds it).

**Likelihoods** (``likelihood=``):

===========  ============================  ==========================================
name         data                          p(x_i | z_i), per dimension
===========  ============================  ==========================================
bernoulli    binarised pixels in {0, 1}    ``Bernoulli(logits=decoder(z))``
categorical  grey levels 0 ... L - 1       ``Categorical(logits=decoder(z))`` over the
             (``L = num_levels``, as        ``L`` levels; logits of shape
             floats)                       ``(..., data_dim, L)``
gaussian     continuous values             ``Normal(decoder(z), sd)``, ``sd`` a learned
                                           per-dimension parameter (softplus, floor
                                           :data:`MIN_NOISE_SD`)
===========  ============================  ==========================================

**Why not a Bernoulli on grey levels.** A common shortcut feeds grey levels rescaled to
``[0, 1]`` (here ``x / 16``) into a Bernoulli "log-likelihood" ``x log p + (1 - x)
log(1 - p)``. For ``x`` other than 0 and 1 this is not the log of a probability: summed
over the 17 values a pixel can take, ``p^x (1 - p)^(1 - x)`` does not add up to one (for
``p = 1/2`` it is ``17 / 2``), and the missing normaliser depends on ``p``. Its "ELBO" is
therefore not a bound on the log probability of the data, cannot be compared with another
model's, and pulls ``p`` away from the fitted probabilities (the continuous Bernoulli of
Loaiza-Ganem and Cunningham 2019 is the correction). Its samples are binary besides,
never a grey image. The categorical likelihood over the 17 levels is a proper
distribution over exactly the values the pixels take: its log-likelihood is in nats of
the data as stored (a uniform guess scores ``-64 log 17 = -181.3`` nats per digit), so
ELBOs and log evidences of different models compare, and its samples are digits.

**Data.** ``x`` arrives as floating point, shape ``(N, data_dim)``; the categorical model
observes ``x.round().long()``. The model, its weights and the data must share one dtype
and device: ``vae.to(torch.float64)``, ``vae.to("cuda")`` move the weights; nothing here
assumes the CPU.

**In a plain Pyro loop**::

    vae = VAE(64, latent_dim=2, likelihood="categorical")
    pyro.clear_param_store()
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.Trace_ELBO())
    for step in range(1000):
        svi.step(x, batch_size=128)

``batch_size`` subsamples the plate ``"data"`` (Pyro rescales the minibatch's terms by
``N / batch_size``); ``None`` uses every point. The networks enter Pyro's param store as
``decoder$$$...`` and ``encoder$$$...`` (``pyro.module``): clear the store before
training a second VAE in the same process, or Pyro's optimiser follows the first one's
tensors of those names and the second VAE never moves. (pyrovi's fit engine trains the
module's own parameters; the registration tells Pyro's ELBO that the traces have
parameters to differentiate.)

**In pyrovi.** :data:`DIGITS_VAE` (64 grey-level pixels, ``latent_dim=2``, one hidden
layer of 256) is the registered model ``vae``; its guide family ``vae_encoder``
(:data:`VAE_ENCODER`) re-initialises the VAE's weights from torch's random number
generator (so a fit started from the engine's seed is reproducible) and returns
``vae.guide``. The registered data set is ``digits`` (the training split of the bundled
8x8 digits, grey levels; :mod:`pyrovi.models.vae.data`). The binarised digits
(``load_digits(binarize=True)``) are for a VAE built by the user with
``likelihood="bernoulli"``: a categorical model would fit them too, but it would spend 15
of its 17 levels on values that never occur, so they are not a data set of the
registered model. Its only guide is the encoder: Pyro's autoguides (``mean_field`` ...)
are modules that keep their parameters to themselves in pyrovi's engine, and a model
with global ``pyro.module`` parameters inside them is an error in Pyro; the
non-amortized per-image Gaussian of the amortization gap is fitted with the decoder
fixed (:func:`pyrovi.models.vae.fixed_decoder_model`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyrovi.guides import GuideFamily, register_family
from pyrovi.models._data import pick_dataset
from pyrovi.models.spec import ModelSpec
from pyrovi.models.vae.data import NUM_LEVELS, NUM_PIXELS, load_digits

LIKELIHOODS = ("bernoulli", "categorical", "gaussian")
"""The likelihoods :class:`VAE` offers (module docstring)."""
MIN_SCALE = 1e-4
"""Floor of the encoder's sd of ``q(z_i | x_i)``."""
MIN_NOISE_SD = 1e-3
"""Floor of the Gaussian likelihood's noise sd."""
INIT_NOISE_SD = 1.0
"""The Gaussian likelihood's noise sd at initialisation."""
DATASETS = ("digits", "digits_validation", "digits_test")
"""The data sets of the registered model ``vae``: the bundled digits' three fixed splits
(train, validation, test; module docstring)."""


def _mlp(in_features: int, widths: Sequence[int]) -> tuple[nn.Sequential, int]:
    """Linear + softplus layers of the given widths; returns the stack and its output width
    (``in_features`` for no layers)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.Softplus()]
        in_features = width
    return nn.Sequential(*layers), in_features


def _reset_linear(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


_RAW_INIT_NOISE_SD = _inverse_softplus(INIT_NOISE_SD - MIN_NOISE_SD)


class VAEEncoder(nn.Module):
    """``x (..., data_dim) -> (loc, scale)``, each ``(..., latent_dim)``, ``scale > 0``.

    Parameters
    ----------
    data_dim, latent_dim : int
        Input and latent sizes.
    hidden : sequence of int
        Widths of the hidden layers (softplus activations).
    input_scale : float
        The input is divided by this first (``num_levels - 1`` for grey levels).
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int],
                 input_scale: float = 1.0) -> None:
        super().__init__()
        self.input_scale = float(input_scale)
        self.body, width = _mlp(data_dim, hidden)
        self.loc = nn.Linear(width, latent_dim)
        self.raw_scale = nn.Linear(width, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x / self.input_scale)
        return self.loc(h), F.softplus(self.raw_scale(h)) + MIN_SCALE

    def reset_parameters(self) -> None:
        """Draw every layer's weights again from torch's random number generator."""
        _reset_linear(self)


class VAEDecoder(nn.Module):
    """``z (..., latent_dim) ->`` the likelihood's parameters.

    ``bernoulli``: logits ``(..., data_dim)``; ``categorical``: logits
    ``(..., data_dim, num_levels)``; ``gaussian``: ``(mean, sd)``, the mean
    ``(..., data_dim)`` and the noise sd ``(data_dim,)`` (:attr:`noise_sd`).

    Parameters
    ----------
    latent_dim, data_dim : int
        Latent and output sizes.
    hidden : sequence of int
        Widths of the hidden layers, in the decoder's order (softplus activations).
    likelihood : str
        One of :data:`LIKELIHOODS`.
    num_levels : int
        Levels of the categorical likelihood.
    """

    def __init__(self, latent_dim: int, data_dim: int, hidden: Sequence[int],
                 likelihood: str, num_levels: int) -> None:
        super().__init__()
        self.data_dim, self.likelihood, self.num_levels = data_dim, likelihood, num_levels
        self.body, width = _mlp(latent_dim, hidden)
        per_dim = num_levels if likelihood == "categorical" else 1
        self.out = nn.Linear(width, data_dim * per_dim)
        if likelihood == "gaussian":
            self.raw_noise_sd = nn.Parameter(torch.full((data_dim,), _RAW_INIT_NOISE_SD))

    @property
    def noise_sd(self) -> torch.Tensor:
        """The Gaussian likelihood's noise sd per dimension, ``(data_dim,)``."""
        return F.softplus(self.raw_noise_sd) + MIN_NOISE_SD

    def forward(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.out(self.body(z))
        if self.likelihood == "categorical":
            return out.reshape(*out.shape[:-1], self.data_dim, self.num_levels)
        if self.likelihood == "gaussian":
            return out, self.noise_sd
        return out

    def reset_parameters(self) -> None:
        """Draw every layer's weights again; the noise sd goes back to
        :data:`INIT_NOISE_SD`."""
        _reset_linear(self)
        if self.likelihood == "gaussian":
            with torch.no_grad():
                self.raw_noise_sd.fill_(_RAW_INIT_NOISE_SD)


class VAE(nn.Module):
    """A variational autoencoder: the model and its amortized guide in one module.

    Parameters
    ----------
    data_dim : int
        Numbers per data point (64 for the 8x8 digits).
    latent_dim : int
        Size of each point's latent code ``z_i``.
    hidden : sequence of int
        Widths of the encoder's hidden layers; the decoder uses them reversed. ``()``
        makes both linear.
    likelihood : {"categorical", "bernoulli", "gaussian"}
        ``p(x | z)`` (module docstring).
    num_levels : int
        Values of a categorical dimension: ``x`` holds ``0 ... num_levels - 1``. Only the
        categorical likelihood uses it.

    Attributes
    ----------
    encoder : VAEEncoder
        ``x -> (loc, scale)`` of ``q(z | x)``.
    decoder : VAEDecoder
        ``z ->`` the likelihood's parameters.

    Raises
    ------
    ValueError
        If a size is not a positive integer, ``likelihood`` is not one of
        :data:`LIKELIHOODS`, or ``num_levels`` is below 2.

    Examples
    --------
    >>> vae = VAE(64, latent_dim=2, likelihood="categorical", num_levels=17)
    >>> svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
    ...                      pyro.infer.Trace_ELBO())
    """

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: Sequence[int] = (256,),
                 likelihood: str = "categorical", num_levels: int = 17) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of "
                             f"{', '.join(LIKELIHOODS)}")
        hidden = tuple(hidden)
        for label, size in [("data_dim", data_dim), ("latent_dim", latent_dim),
                            *((f"hidden[{i}]", h) for i, h in enumerate(hidden))]:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{label} must be a positive integer, got {size!r}")
        if likelihood == "categorical" and (not isinstance(num_levels, int) or num_levels < 2):
            raise ValueError(f"num_levels must be an integer of at least 2, got {num_levels!r}")
        self.data_dim, self.latent_dim, self.hidden = data_dim, latent_dim, hidden
        self.likelihood, self.num_levels = likelihood, num_levels
        scale = num_levels - 1 if likelihood == "categorical" else 1.0
        self.encoder = VAEEncoder(data_dim, latent_dim, hidden, input_scale=scale)
        self.decoder = VAEDecoder(latent_dim, data_dim, hidden[::-1], likelihood, num_levels)

    def extra_repr(self) -> str:
        return (f"data_dim={self.data_dim}, latent_dim={self.latent_dim}, "
                f"hidden={self.hidden}, likelihood={self.likelihood!r}"
                + (f", num_levels={self.num_levels}" if self.likelihood == "categorical"
                   else ""))

    # ------------------------------------------------------------------ densities

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of ``q(z | x) = Normal(loc, scale)`` per dimension, each
        ``(..., latent_dim)``."""
        return self.encoder(x)

    def likelihood_dist(self, z: torch.Tensor) -> torch.distributions.Distribution:
        """``p(x | z)``: batch shape ``z.shape[:-1]``, event shape ``(data_dim,)``.

        A categorical distribution takes integer values ``0 ... num_levels - 1`` (long);
        its samples are long too.
        """
        params = self.decoder(z)
        if self.likelihood == "categorical":
            return dist.Categorical(logits=params).to_event(1)
        if self.likelihood == "gaussian":
            mean, sd = params
            return dist.Normal(mean, sd).to_event(1)
        return dist.Bernoulli(logits=params).to_event(1)

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the likelihood observes it: ``x.round().long()`` for the categorical
        likelihood, ``x`` itself otherwise."""
        return x.round().long() if self.likelihood == "categorical" else x

    def _check(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x must be a tensor of shape (N, {self.data_dim}), got "
                             f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")
        weight = self.decoder.out.weight
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point (the engine's float32/float64), got "
                             f"{x.dtype}")
        if x.dtype != weight.dtype or x.device != weight.device:
            raise ValueError(f"x is {x.dtype} on {x.device} but the VAE's weights are "
                             f"{weight.dtype} on {weight.device}: move the VAE with "
                             f"vae.to({x.dtype}) / vae.to({str(x.device)!r})")
        return x

    # ------------------------------------------------------------------ Pyro

    def model(self, x: torch.Tensor, batch_size: int | None = None) -> None:
        """``z_i ~ Normal(0, I)``, ``x_i ~ p(x | z_i)`` (module docstring).

        Parameters
        ----------
        x : Tensor, floating point, shape (N, data_dim)
            The data; grey levels for the categorical likelihood, 0/1 for the Bernoulli.
        batch_size : int, optional
            Subsample plate ``"data"`` in minibatches of this size (None: every point).

        Notes
        -----
        Registers the decoder as ``pyro.module("decoder", ...)``. Latent site ``z`` of
        shape ``(batch, latent_dim)`` (event dim 1) in plate ``"data"``; observed site
        ``x``. Batch safe with ``max_plate_nesting=1`` (vectorised particles).

        Raises
        ------
        ValueError
            If ``x`` is not ``(N, data_dim)`` floating point on the VAE's dtype and device.
        """
        x = self._check(x)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size,
                        device=x.device) as idx:
            batch = x[idx]
            zeros = batch.new_zeros(batch.shape[:-1] + (self.latent_dim,))
            z = pyro.sample("z", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            pyro.sample("x", self.likelihood_dist(z), obs=self.observed(batch))

    def guide(self, x: torch.Tensor, batch_size: int | None = None) -> None:
        """``q(z_i | x_i) = Normal(encode(x_i))`` in plate ``"data"``; arguments as
        :meth:`model`. Registers the encoder as ``pyro.module("encoder", ...)``."""
        x = self._check(x)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size,
                        device=x.device) as idx:
            loc, scale = self.encode(x[idx])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def reset_parameters(self) -> None:
        """Draw every layer's weights again from torch's random number generator (the
        caller seeds it); the Gaussian noise sd goes back to :data:`INIT_NOISE_SD`."""
        self.encoder.reset_parameters()
        self.decoder.reset_parameters()


# --------------------------------------------------------------------------- simulation


def random_vae(seed: int = 0, data_dim: int = NUM_PIXELS, latent_dim: int = 2,
               hidden: Sequence[int] = (256,), likelihood: str = "categorical",
               num_levels: int = NUM_LEVELS, signal: float = 3.0) -> VAE:
    """A VAE with seeded random weights, the generator of :func:`simulate`.

    The weights are PyTorch's default initialisation drawn under
    ``torch.manual_seed(seed)`` (torch's global generator is left as it was), then the
    decoder's output layer is multiplied by ``signal``: at the default initialisation the
    likelihood barely depends on ``z`` and simulated data would say little about it.

    Raises
    ------
    ValueError
        As :class:`VAE`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VAE(data_dim, latent_dim=latent_dim, hidden=hidden, likelihood=likelihood,
                  num_levels=num_levels)
    with torch.no_grad():
        vae.decoder.out.weight.mul_(signal)
        vae.decoder.out.bias.mul_(signal)
    return vae


def simulate(seed: int = 0, num_data: int = 500, latent_dim: int = 2,
             data_dim: int = NUM_PIXELS, hidden: Sequence[int] = (256,),
             likelihood: str = "categorical", num_levels: int = NUM_LEVELS,
             signal: float = 3.0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Simulate data from a VAE with seeded random weights (:func:`random_vae`).

    ``z_i ~ Normal(0, I)``, ``x_i ~ p(x | z_i)``; with the defaults the data have the
    shape and grey levels of the bundled digits, so the registered model takes them.

    Returns
    -------
    (dict, dict)
        ``{"x": Tensor float32 (num_data, data_dim)}`` and ``{"z": Tensor float32
        (num_data, latent_dim)}``. ``random_vae(seed, ...)`` rebuilds the generator.

    Raises
    ------
    ValueError
        If ``num_data`` is not positive, or as :class:`VAE`.
    """
    if num_data < 1:
        raise ValueError(f"num_data must be positive, got {num_data}")
    vae = random_vae(seed, data_dim=data_dim, latent_dim=latent_dim, hidden=hidden,
                     likelihood=likelihood, num_levels=num_levels, signal=signal)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(num_data, latent_dim, generator=generator)
        params = vae.decoder(z)
        if likelihood == "categorical":
            probs = torch.softmax(params, dim=-1).reshape(-1, num_levels)
            x = torch.multinomial(probs, 1, generator=generator).reshape(num_data, data_dim)
        elif likelihood == "gaussian":
            mean, sd = params
            x = mean + sd * torch.randn(mean.shape, generator=generator)
        else:
            x = torch.bernoulli(torch.sigmoid(params), generator=generator)
    return {"x": x.to(torch.float32)}, {"z": z}


# --------------------------------------------------------------------------- registry


def load_data(name: str | None = None) -> dict[str, torch.Tensor]:
    """A registered data set: ``digits`` (default), the training split of the bundled
    8x8 digits as grey levels, ``{"x": Tensor (1197, 64)}``; ``digits_validation`` and
    ``digits_test``, the held-out splits (300 images each).

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`DATASETS`.
    """
    name = pick_dataset(name, DATASETS, "vae")
    return load_digits({"digits": "train", "digits_validation": "validation",
                        "digits_test": "test"}[name])


def _build_encoder_guide(model: Callable[..., Any]) -> Callable[..., None]:
    """``vae.model -> vae.guide``, after drawing the VAE's weights again."""
    owner = getattr(model, "__self__", None)
    if not isinstance(owner, VAE) or getattr(model, "__name__", None) != "model":
        raise ValueError(f"guide 'vae_encoder' needs the model method of a VAE (vae.model), "
                         f"got {model!r}")
    owner.reset_parameters()
    return owner.guide


VAE_ENCODER = register_family(GuideFamily(
    "vae_encoder", _build_encoder_guide, represents_correlations=False, amortized=True,
    preconditioned=False, start=None,
    description="the VAE's own encoder q(z_i | x_i); re-initialises the VAE's weights",
))
"""The VAE's amortized guide family: ``build(vae.model)`` calls ``vae.reset_parameters()``
(a fresh fit starts fresh, reproducibly from torch's seed) and returns ``vae.guide``."""


def _default_digits_vae() -> VAE:
    # fixed weights, and importing pyrovi leaves torch's global generator untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VAE(NUM_PIXELS, latent_dim=2, hidden=(256,), likelihood="categorical",
                   num_levels=NUM_LEVELS)


DIGITS_VAE = _default_digits_vae()
"""The registered model's VAE: 64 pixels of 17 grey levels, ``latent_dim=2``, one hidden
layer of 256 (weights drawn with torch seed 0 at import; ``vae_encoder`` redraws them)."""

SPEC = ModelSpec(
    name="vae",
    model=DIGITS_VAE.model,
    guides={VAE_ENCODER.name: VAE_ENCODER.build},
    load_data=load_data,
    simulate=simulate,
    description="variational autoencoder: z ~ N(0, I_2), 8x8 digit pixels ~ "
                "Categorical(17 grey levels | MLP(z))",
    datasets=DATASETS,
    site_roles={"z": "local"},
)

__all__ = [
    "DATASETS", "DIGITS_VAE", "INIT_NOISE_SD", "LIKELIHOODS", "MIN_NOISE_SD", "MIN_SCALE",
    "SPEC", "VAE", "VAE_ENCODER", "VAEDecoder", "VAEEncoder", "load_data", "random_vae",
    "simulate",
]
