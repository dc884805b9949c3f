"""The variational autoencoder family: model, amortized guide, data (registered as ``vae``).

:mod:`~pyrovi.models.vae.model` holds :class:`VAE` (model, encoder guide, likelihoods,
simulation, the registry record); :mod:`~pyrovi.models.vae.data` the bundled 8x8 digits
and readers for IDX and NPZ files. Their module docstrings explain the maths.
"""

from pyrovi.models.vae.data import (
    SPLITS,
    digit_labels,
    load_digits,
    load_idx,
    load_npz,
    mnist_data,
)
from pyrovi.models.vae.gaps import (
    InferenceGaps,
    elbo_estimators,
    encoder_vs_nuts,
    fixed_decoder_model,
    gradient_variance,
    inference_gaps,
    kl_to_standard_normal,
)
from pyrovi.models.vae.model import (
    DATASETS,
    DIGITS_VAE,
    LIKELIHOODS,
    SPEC,
    VAE,
    VAE_ENCODER,
    VAEDecoder,
    VAEEncoder,
    load_data,
    random_vae,
    simulate,
)

__all__ = [
    "DATASETS",
    "DIGITS_VAE",
    "InferenceGaps",
    "LIKELIHOODS",
    "SPEC",
    "SPLITS",
    "VAE",
    "VAE_ENCODER",
    "VAEDecoder",
    "VAEEncoder",
    "digit_labels",
    "elbo_estimators",
    "encoder_vs_nuts",
    "fixed_decoder_model",
    "gradient_variance",
    "inference_gaps",
    "kl_to_standard_normal",
    "load_data",
    "load_digits",
    "load_idx",
    "load_npz",
    "mnist_data",
    "random_vae",
    "simulate",
]
