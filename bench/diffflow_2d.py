"""PyTorch reference of relaxflow's `diffflow-checkerboard` training step, for `make bench`.

The same model as experiments/diffflow-checkerboard.toml: drift and score are Fourier-feature MLPs (width 128, 3 GELU
layers, time features sin/cos(w t + phi) with w linear on [0.1, 100] and learned phi, embedded by Linear-GELU-Linear
once per time step and broadcast over the batch, as relaxflow does), N = 30 steps on t_i = (t0^b + i/N (T^b - t0^b))^(1/b)
with t0 = 1e-3, T = 0.05, b = 0.9, g = 0.2; loss = mean of -log N(x_N) + sum_i 1/2 |delta_B_i|^2 (+ constants);
full autograd, gradient clipping at 1, Adam. Data: the checkerboard. Prints steps/s as JSON.
"""
import argparse
import json
import math
import time

import torch
from torch import nn
import torch.nn.functional as F


class FourierMLP(nn.Module):
    def __init__(self, d=2, width=128, depth=3):
        super().__init__()
        self.register_buffer("freqs", torch.linspace(0.1, 100.0, width)[None])
        self.phase = nn.Parameter(torch.randn(1, width))
        self.input = nn.Linear(d, width)
        self.time1, self.time2 = nn.Linear(2 * width, width), nn.Linear(width, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.out = nn.Linear(width, d)

    def forward(self, x, tau):
        arg = tau * self.freqs + self.phase
        emb = self.time2(F.gelu(self.time1(torch.cat([arg.sin(), arg.cos()], 1))))
        h = F.gelu(self.input(x) + emb)
        for layer in self.layers:
            h = F.gelu(layer(h))
        return self.out(h)


def checkerboard(n):
    x1 = torch.rand(n) * 4 - 2
    x2 = torch.rand(n) - torch.randint(0, 2, (n,)).float() * 2 + torch.remainder(x1.floor(), 2)
    return torch.stack([x1, x2], 1) * 2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    drift, score = FourierMLP(), FourierMLP()
    params = list(drift.parameters()) + list(score.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    n, t0, t_end, b, g = 30, 1e-3, 0.05, 0.9, 0.2
    grid = [(t0 ** b + i / n * (t_end ** b - t0 ** b)) ** (1 / b) for i in range(n + 1)]
    data = checkerboard(100_000)

    def step():
        x = data[torch.randint(0, data.shape[0], (a.batch,))]
        f_x = drift(x, torch.tensor([[grid[0] / t_end]]))
        total = torch.zeros(a.batch)
        for i in range(n):
            t, t_next = grid[i], grid[i + 1]
            dt = t_next - t
            eps = torch.randn_like(x)
            x_next = x + f_x * dt + eps * g * math.sqrt(dt)
            tau = torch.tensor([[t_next / t_end]])
            f_next = drift(x_next, tau)
            back = f_next - score(x_next, tau) * g * g
            delta_b = (x - x_next + back * dt) / (g * math.sqrt(dt))
            total = total + 0.5 * delta_b.square().sum(1) - 0.5 * eps.square().sum(1)
            x, f_x = x_next, f_next
        loss = (total + 0.5 * x.square().sum(1) + math.log(2 * math.pi)).mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    float(loss)
    print(json.dumps({"steps_per_s": a.steps / (time.perf_counter() - start), "final_loss": float(loss)}))


if __name__ == "__main__":
    main()
