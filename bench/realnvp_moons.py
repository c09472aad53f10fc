"""PyTorch reference of relaxflow's `realnvp-moons` model, for `make bench`.

The same model as experiments/realnvp-moons.toml: 8 affine couplings on 2D data whose halves alternate, each
conditioner an MLP 1 -> 64 -> 64 -> 2 with ReLU (last layer zero-initialised), log s = tanh(h), z_b = x_b e^{log s} + t,
standard normal base, maximum likelihood with Adam, batch 512. Written the way a PyTorch user would write it.
"""
import argparse
import json
import math
import time

import torch
from torch import nn


def moons(n, rng):
    """sklearn make_moons(noise=0.1), then *2 + (-1, -0.2) (FFJORD's toy_data)."""
    import numpy as np  # here, so that importing the model (bench/gpu_models.py) needs only torch

    n_out = n // 2
    t_out, t_in = rng.uniform(0, math.pi, n_out), rng.uniform(0, math.pi, n - n_out)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], 1)
    inner = np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], 1)
    x = np.concatenate([outer, inner]) + rng.normal(scale=0.1, size=(n, 2))
    return (x * 2 + np.array([-1.0, -0.2]))[rng.permutation(n)].astype(np.float32)


class Coupling(nn.Module):
    def __init__(self, parity, hidden=64):
        super().__init__()
        self.parity = parity
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x):
        x_a, x_b = (x[:, 1:], x[:, :1]) if self.parity else (x[:, :1], x[:, 1:])
        h = self.net(x_a)
        log_s, t = torch.tanh(h[:, :1]), h[:, 1:]
        z_b = x_b * torch.exp(log_s) + t
        z = torch.cat([z_b, x_a], 1) if self.parity else torch.cat([x_a, z_b], 1)
        return z, log_s.sum(1)


class RealNVP(nn.Module):
    def __init__(self, n_layers=8):
        super().__init__()
        self.layers = nn.ModuleList(Coupling(i % 2 == 1) for i in range(n_layers))

    def log_prob(self, x):
        ldj = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, v = layer(x)
            ldj = ldj + v
        return -0.5 * (x**2).sum(1) - math.log(2 * math.pi) + ldj


def steps_per_second(steps, batch, lr, adam, seed=0):
    torch.manual_seed(seed)
    import numpy as np

    data = torch.from_numpy(moons(100_000, np.random.default_rng(seed)))
    model = RealNVP()
    kwargs = {"fused": True} if adam == "fused" else {"foreach": True} if adam == "foreach" else {}
    opt = torch.optim.Adam(model.parameters(), lr=lr, **kwargs)

    def step():
        x = data[torch.randint(data.shape[0], (batch,))]
        loss = -model.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    elapsed = time.perf_counter() - start
    return steps / elapsed, loss.item()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--adam", choices=["default", "foreach", "fused"], default="default")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sps, loss = steps_per_second(a.steps, a.batch, a.lr, a.adam)
    print(json.dumps({"steps_per_s": sps, "final_loss": loss, "adam": a.adam, "threads": torch.get_num_threads()}))
