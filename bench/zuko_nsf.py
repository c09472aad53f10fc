"""zuko reference of relaxflow's conditional NSF step, for `make bench`.

The model of `relaxflow train sbi-two-moons --set model.mixing=alternate --set model.actnorm=false`: q(θ | x) on
θ, x in R², 5 rational-quadratic spline couplings (10 bins on [-5, 5]) whose halves alternate, each conditioner an
MLP [θ_a, x] -> 50 -> 50 -> spline parameters with ReLU, a standard normal base; maximum likelihood with Adam at
lr 5e-4, batch 200. In zuko that is `zuko.flows.NSF(features=2, context=2, transforms=5, bins=10,
hidden_features=[50, 50], passes=2)`: `passes=2` makes zuko's masked autoregressive transform a coupling, and its
transforms alternate the order of the features. Written the way a zuko user would write it (the flow is called on
the context every step).

Timing does not depend on the data's law, so the pairs are θ ~ U(-1, 1)², x = θ + 0.05 ε (10,000 of them, batches
drawn with replacement, as relaxflow's loop does).
"""
import argparse
import json
import time

import torch
import zuko


def steps_per_second(steps, batch, lr, seed=0):
    torch.manual_seed(seed)
    theta = torch.rand(10_000, 2) * 2 - 1
    x = theta + 0.05 * torch.randn(10_000, 2)
    flow = zuko.flows.NSF(features=2, context=2, transforms=5, bins=10, hidden_features=[50, 50], passes=2)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)

    def step():
        idx = torch.randint(0, theta.shape[0], (batch,))
        loss = -flow(x[idx]).log_prob(theta[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(20):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    elapsed = time.perf_counter() - start
    assert torch.isfinite(loss), "zuko's NSF diverged"
    params = sum(p.numel() for p in flow.parameters())
    return steps / elapsed, params


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=200)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sps, params = steps_per_second(a.steps, a.batch, 5e-4)
    print(json.dumps({"steps_per_s": sps, "params": params, "zuko": zuko.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
