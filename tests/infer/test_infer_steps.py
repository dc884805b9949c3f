"""Data-set-sized models: minibatches (an unbiased ELBO, epochs, held-out ELBO, early
stopping), the step-level API, and checkpoints that resume exactly."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta

import pyrovi
from pyrovi.infer import SVIRun
from pyrovi.infer.batches import EpochBatches
from pyrovi.infer.svi import EARLY_STOP_MIN_STEPS
from pyrovi.models import normal_normal

N, B = 120, 20


def logistic(x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y), subsample_size=batch_size) as idx:
        logits = w[..., :1] + w[..., 1:] * x[idx]
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y[idx])


def logistic_data(seed: int = 0, n: int = N) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen)
    y = (torch.rand(n, generator=gen) < torch.sigmoid(0.5 + 1.5 * x)).double()
    return {"x": x.double(), "y": y}


def test_minibatch_elbo_is_unbiased_for_the_full_elbo() -> None:
    """Over one epoch the minibatch losses of a fixed point average to the full loss
    exactly (each batch's likelihood is scaled by N / B)."""
    data = logistic_data()
    with pyrovi.infer.util.default_dtype(torch.float64):
        guide = AutoDelta(logistic)
        guide(**data)
        full = Trace_ELBO().loss(logistic, guide, **data)
        batches = EpochBatches({"data": (N, B)})
        batched = dict(data, batch_size=B)
        losses = [Trace_ELBO().loss(batches.wrap(logistic, idx), batches.wrap(guide, idx),
                                    **batched) for idx in batches.one_pass()]
    assert len(losses) == N // B
    assert np.mean(losses) == pytest.approx(full, rel=1e-10)
    assert np.std(losses) > 0  # the batches do differ


def test_fit_hands_its_batch_size_to_a_model_that_takes_one() -> None:
    fit = pyrovi.fit(logistic, logistic_data(), guide="mean_field", batch_size=B, num_epochs=2)
    assert fit.data["batch_size"] == B
    assert len(fit.losses) == fit.history["start_steps"] + 2 * (N // B)
    # draws and weights see every data point, not one minibatch
    assert np.isfinite(fit.log_weights(10)).all()


@pytest.mark.slow
def test_minibatch_fit_matches_the_full_data_fit() -> None:
    data = logistic_data()
    full = pyrovi.fit(logistic, data, guide="full_rank")
    mini = pyrovi.fit(logistic, dict(data, batch_size=B), guide="full_rank", batch_size=B,
                      num_epochs=150)
    assert len(mini.losses) == mini.history["start_steps"] + 150 * (N // B)
    a, b = full.sample(4000, seed=0)["w"], mini.sample(4000, seed=0)["w"]
    sd = a.std(0)
    assert torch.all((a.mean(0) - b.mean(0)).abs() < 0.25 * sd)
    assert torch.all((b.std(0) / sd - 1).abs() < 0.3)
    assert abs(mini.elbo - full.elbo) < 1.0


def test_validation_elbo_per_epoch_and_early_stopping() -> None:
    train, held_out = logistic_data(0), logistic_data(1, n=60)
    fit = pyrovi.fit(logistic, dict(train, batch_size=B), guide="mean_field", batch_size=B,
                     num_epochs=400, validation_data=held_out, patience=3)
    validation = fit.history["validation_elbo"]
    assert 3 < len(validation) < 400  # stopped early
    # after three epochs without gain, and EARLY_STOP_MIN_STEPS steps since the best
    stale = max(3, math.ceil(EARLY_STOP_MIN_STEPS / (N // B)))
    assert np.argmax(validation) == len(validation) - 1 - stale
    assert fit.converged
    assert all(np.isfinite(validation))


def test_batch_size_must_match_the_models_plate() -> None:
    data = logistic_data()
    with pytest.raises(ValueError, match="subsamples"):
        pyrovi.fit(logistic, dict(data, batch_size=B), guide="mean_field", batch_size=30)
    with pytest.raises(ValueError, match="subsampled"):
        pyrovi.fit(normal_normal.model, normal_normal.load_data(), batch_size=4)


def test_step_api_gives_the_same_losses_as_fit() -> None:
    data = normal_normal.load_data()
    run = SVIRun(normal_normal.model, data, guide="full_rank", seed=2, second_stage=False)
    start = run.num_steps
    early = None
    for i in range(250):
        run.step()
        if i == 120:
            early = run.result()  # at any time, without disturbing the run
    fit = pyrovi.fit(normal_normal.model, data, guide="full_rank", seed=2, num_steps=250)
    assert np.array_equal(np.asarray(run.losses), fit.losses)
    assert len(early.losses) == start + 121
    assert run.result(converged=True).elbo == pytest.approx(fit.elbo)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    import pyrovi
    from pyrovi.models import normal_normal
    fit = pyrovi.fit(normal_normal.model, normal_normal.load_data(), guide="full_rank",
                     num_steps=int(sys.argv[2]), checkpoint=sys.argv[1],
                     checkpoint_every=100, seed=5)
    np.save(sys.argv[3], fit.losses)
""")


@pytest.mark.slow
def test_a_killed_fit_resumes_with_exactly_the_losses_of_an_uninterrupted_one(
        tmp_path: Path) -> None:
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    ckpt, steps = tmp_path / "fit.ckpt", 3000
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), str(steps),
                             str(tmp_path / "killed.npy")], env=env)
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more windows, possibly another checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (tmp_path / "killed.npy").exists()  # killed mid-run
    resumed = subprocess.run([sys.executable, str(script), str(ckpt), str(steps),
                              str(tmp_path / "resumed.npy")], env=env, timeout=600)
    assert resumed.returncode == 0 and not ckpt.exists()  # removed at the end
    whole = subprocess.run([sys.executable, str(script), str(tmp_path / "other.ckpt"),
                            str(steps), str(tmp_path / "whole.npy")], env=env, timeout=600)
    assert whole.returncode == 0
    a, b = np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "whole.npy")
    assert len(a) == len(b) and np.array_equal(a, b)


def test_checkpoint_of_other_arguments_is_refused(tmp_path: Path) -> None:
    data = normal_normal.load_data()
    run = SVIRun(normal_normal.model, data, guide="full_rank", seed=1, lr=0.1, init="laplace")
    for _ in range(10):
        run.step()
    run.save(tmp_path / "a.ckpt")
    expected = [run.step() for _ in range(3)]  # the RNG is global: run these first
    with pytest.raises(ValueError, match="other arguments"):
        SVIRun(normal_normal.model, data, guide="full_rank", seed=2, lr=0.1, init="laplace",
               resume=tmp_path / "a.ckpt")
    resumed = SVIRun(normal_normal.model, data, guide="full_rank", seed=1, lr=0.1,
                     init="laplace", resume=tmp_path / "a.ckpt")
    assert resumed.losses == run.losses[:10]
    assert [resumed.step() for _ in range(3)] == expected


def test_device_cpu_and_missing_cuda() -> None:
    data = normal_normal.load_data()
    fit = pyrovi.fit(normal_normal.model, data, guide="mean_field", num_steps=50,
                     device="cpu")
    assert fit.data["x"].device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pyrovi.fit(normal_normal.model, data, device="cuda")


def test_jit_elbos_refuse_minibatches() -> None:
    # the JIT would compile the first batch's indices into the loss: one batch forever
    with pytest.raises(ValueError, match="first minibatch's indices"):
        pyrovi.fit(logistic, logistic_data(), guide="mean_field", elbo="jit", batch_size=B)


def test_a_start_whose_draws_the_model_cannot_score_loses_the_trial(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate of the trial whose draws the model scores as NaN (a float32 HMM
    forward pass far in the tail; Pyro's validation raises) scores -inf and loses,
    instead of ending the fit with a ValueError."""
    run = SVIRun(normal_normal.model, normal_normal.load_data(), guide="low_rank", seed=0)

    def invalid(*args: object, **kwargs: object) -> tuple[float, float]:
        raise ValueError("Expected parameter log_factor ... but found invalid values")

    monkeypatch.setattr(run, "_estimate", invalid)
    assert run._trial_score() == -math.inf
    monkeypatch.setattr(run, "_estimate", lambda *a, **k: (math.nan, math.nan))
    assert run._trial_score() == -math.inf
