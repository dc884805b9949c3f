"""A minibatched fit run by the distributed tests, alone or under ``torchrun``.

Fits one-factor probabilistic PCA as a linear VAE (tests/infer/test_infer_modules.py) in
minibatches and writes, from rank 0, a JSON line with the fit's training ELBO, its
held-out ELBO and the exact maximum log-likelihood of the training data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from test_infer_modules import LinearVAE, ppca_max_log_likelihood  # noqa: E402

import pyrovi  # noqa: E402
from pyrovi.infer import distributed  # noqa: E402


def simulate(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=gen)
    w = torch.tensor([[2.0, -1.0, 0.5]])
    return z @ w + torch.tensor([1.0, 0.0, -2.0]) + 0.3 * torch.randn(n, 3, generator=gen)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--num-epochs", type=int, default=None)
    args = parser.parse_args()
    train, held_out = simulate(1000, 1), simulate(500, 2)
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    resumed = checkpoint is not None and checkpoint.exists()
    torch.manual_seed(0)
    vae = LinearVAE()
    fit = pyrovi.fit(vae.model, {"x": train}, guide=vae.guide, seed=0, lr=args.lr,
                     batch_size=args.batch_size, num_epochs=args.num_epochs,
                     checkpoint=checkpoint, checkpoint_every=100)
    rank, size = distributed.rank_and_size()
    held = float(fit.log_weights(num_samples=200, seed=1, data={"x": held_out}).mean())
    if rank == 0:
        Path(args.out).write_text(json.dumps({
            "world_size": size, "elbo": fit.elbo, "elbo_se": fit.elbo_se,
            "held_out_elbo": held, "num_steps": len(fit.losses), "resumed": resumed,
            "exact": ppca_max_log_likelihood(train.double().numpy())}))


if __name__ == "__main__":
    main()
