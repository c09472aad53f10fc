"""PyTorch + torchdiffeq reference of relaxflow's `cnf-checkerboard` training step, for `make bench`.

The model of experiments/cnf-checkerboard.toml with the 64-wide velocity of the other 2D CNF experiments (the bench
sets model.net.hidden=[64, 64, 64] on relaxflow's side): v(z, t) = MLP([z, sinusoidal(t, 32, max_freq 8)]) with hidden
64-64-64 and tanh (relaxflow's TimeMlp: features sin/cos(t w_k), w_k = 8^(k/15), k = 0..15), data y = x / 2.3, T = 1,
the augmented state [z, Δlog p, K, J] with the exact divergence (one vector-Jacobian product per dimension) and one
Rademacher probe for RNODE's Jacobian term, loss = -mean log p_x + 0.01 mean K + 0.01 mean J, dopri5 at
rtol = atol = 1e-4 through torchdiffeq.odeint (backprop through the solver) or odeint_adjoint (seminorm, as
relaxflow's default `adjoint_norm`), Adam 2e-3. Data: the
checkerboard. Prints steps/s and forward (and adjoint) function evaluations per step as JSON.
"""
import argparse
import json
import math
import time

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from diffflow_2d import checkerboard


def sinusoidal(t, dim=32, max_freq=8.0):
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (math.log(max_freq) / (half - 1)))
    args = t[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


class Velocity(nn.Module):
    def __init__(self, d=2, hidden=(64, 64, 64), emb=32):
        super().__init__()
        sizes = [d + emb, *hidden]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], d))

    def forward(self, z, t):
        return self.net(torch.cat([z, sinusoidal(t.expand(z.shape[0]))], 1))


class Augmented(nn.Module):
    """d/dt [z, Δ, K, J] = [v, div v, |v|², |εᵀ ∂v/∂z|²], the probe ε fixed per batch."""

    def __init__(self, v):
        super().__init__()
        self.v = v
        self.nfe = 0
        self.eps = None

    def forward(self, t, state):
        z, _, _, _ = state
        self.nfe += 1
        with torch.enable_grad():
            z = z if z.requires_grad else z.detach().requires_grad_(True)
            v = self.v(z, t)
            div = sum(torch.autograd.grad(v[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(z.shape[1]))
            vjp = torch.autograd.grad((v * self.eps).sum(), z, create_graph=True)[0]
        return v, div, v.square().sum(1), vjp.square().sum(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient", choices=["backprop", "adjoint"], default="backprop")
    p.add_argument("--rtol", type=float, default=1e-4)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    f = Augmented(Velocity())
    opt = torch.optim.Adam(f.parameters(), lr=2e-3)
    data = checkerboard(100_000) / 2.3
    ts = torch.tensor([0.0, 1.0])
    # The adjoint with the seminorm (step control over [z, a] only), as relaxflow's default model.adjoint_norm.
    options = {} if a.gradient == "backprop" else {"adjoint_options": {"norm": "seminorm"}}
    solve = odeint if a.gradient == "backprop" else odeint_adjoint
    counts = {"forward": 0, "backward": 0}

    def step():
        y = data[torch.randint(0, data.shape[0], (a.batch,))]
        f.eps = torch.randint(0, 2, y.shape).float() * 2 - 1
        zeros = torch.zeros(a.batch)
        f.nfe = 0
        state = solve(f, (y, zeros, zeros, zeros), ts, rtol=a.rtol, atol=a.rtol, method="dopri5", **options)
        z, delta, kin, jac = (s[-1] for s in state)
        forward = f.nfe
        log_p = -0.5 * z.square().sum(1) - math.log(2 * math.pi) + delta - 2 * math.log(2.3)
        loss = -log_p.mean() + 0.01 * kin.mean() + 0.01 * jac.mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss, forward, f.nfe - forward

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss, fwd, bwd = step()
        counts["forward"] += fwd
        counts["backward"] += bwd
    loss.item()
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "steps_per_s": a.steps / elapsed,
        "nfe_forward_per_step": counts["forward"] / a.steps,
        "nfe_backward_per_step": counts["backward"] / a.steps if a.gradient == "adjoint" else None,
        "final_loss": loss.item(),
    }))


if __name__ == "__main__":
    main()
