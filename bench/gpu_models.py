"""PyTorch references of relaxflow's GPU-relevant models, timed eagerly and under `torch.compile`, for `make gpu-check`
(bench/gpu_check.py runs one case per process and reads the JSON line it prints).

The models are the ones relaxflow trains, written the way a PyTorch user would write them:
- `realnvp`: realnvp-moons (bench/realnvp_moons.py's RealNVP, 8 affine couplings, MLP 64-64), batch 512, Adam.
- `unet`: ddpm-mnist's training step: the DDPM U-Net of src/nets/unet.rs (ch 32, mults [1, 2, 2], GroupNorm 8, one
  ResBlock per level, stride-2 conv down, nearest + conv up, zero-initialised output conv; same parameter count),
  L_simple on MNIST (pixels gathered on the device, dequantized, y = pixel/127.5 - 1, T = 1000 linear), gradient
  clipping at 1, Adam 2e-4. `--dtype bf16` runs the forward under torch.autocast(bfloat16) (fp32 master weights).
- `diffflow`: diffflow-mnist's training step at N = 30: two U-Nets (drift f, score s), g = 1, t in [1e-3, 0.05] on
  the grid uniform in t^0.9, loss = the chain's negative ELBO (eq. 11 with its constants), full autograd, clipping at 1.
- `sample`: sampling throughput at batch `--batch`: DDPM ancestral (T = 1000), DDIM (50 steps, eta = 0), DiffFlow's
  backward SDE (N = 30, two U-Nets per step), all under torch.inference_mode.

Needs only torch (no numpy): MNIST is read from data/mnist/*.gz with gzip. Prints one JSON line.
"""
import argparse
import functools
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from realnvp_moons import RealNVP  # noqa: E402  (the CPU benchmark's reference model, reused)

ROOT = HERE.parent


# ----------------------------------------------------------------------------------------------------------------------
# Data

def moons(n, gen, device):
    """sklearn make_moons(noise=0.1), then *2 + (-1, -0.2) (FFJORD's toy_data), drawn with torch."""
    n_out = n // 2
    t_out = torch.rand(n_out, generator=gen) * math.pi
    t_in = torch.rand(n - n_out, generator=gen) * math.pi
    outer = torch.stack([t_out.cos(), t_out.sin()], 1)
    inner = torch.stack([1 - t_in.cos(), 1 - t_in.sin() - 0.5], 1)
    x = torch.cat([outer, inner]) + 0.1 * torch.randn(n, 2, generator=gen)
    x = x * 2 + torch.tensor([-1.0, -0.2])
    return x[torch.randperm(n, generator=gen)].to(device)


@functools.lru_cache(maxsize=2)
def mnist_pixels(device, data_dir=None):
    """The 60k MNIST training images as float pixel values 0..255, [N, 1, 28, 28], on `device` (as relaxflow keeps
    them); random pixels when the files are absent (the timing does not depend on the values)."""
    path = Path(data_dir or ROOT / "data" / "mnist") / "train-images-idx3-ubyte.gz"
    if path.exists():
        raw = gzip.decompress(path.read_bytes())
        pixels = torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).view(-1, 1, 28, 28)
    else:
        print(f"warning: {path} not found; timing on random pixels", file=sys.stderr)
        pixels = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8)
    return pixels.to(device=device, dtype=torch.float32)


def dequantized_batch(pixels, batch):
    """relaxflow's training batch: random rows, (pixel + u)/256."""
    idx = torch.randint(pixels.shape[0], (batch,), device=pixels.device)
    x = pixels[idx]
    return ((x + torch.rand_like(x)) / 256.0).clamp_max(1 - 2**-24)


# ----------------------------------------------------------------------------------------------------------------------
# The U-Net of src/nets/unet.rs

def sinusoidal(t, dim, max_freq=1000.0):
    """relaxflow's nets::time::sinusoidal: [sin(t w_k), cos(t w_k)], w_k = max_freq^(k/(half-1))."""
    half = max(dim // 2, 1)
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(k * (math.log(max_freq) / max(half - 1, 1)))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


class ResBlock(nn.Module):
    """src/nets/unet.rs's ResBlock: GN-SiLU-conv, + Linear(SiLU(temb)), GN-SiLU-conv, plus the skip."""
    def __init__(self, c_in, c_out, temb_dim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x, temb_act):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb_act)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class UNet(nn.Module):
    """src/nets/unet.rs's UNet (same layout and parameter count)."""
    def __init__(self, in_ch=1, ch=32, mults=(1, 2, 2), groups=8):
        super().__init__()
        widths = [ch * m for m in mults]
        temb = 4 * ch
        self.ch = ch
        self.lin1, self.lin2 = nn.Linear(ch, temb), nn.Linear(temb, temb)
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        cur, last = ch, len(widths) - 1
        for i, w in enumerate(widths):
            self.down.append(ResBlock(cur, w, temb, groups))
            if i < last:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
            cur = w
        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, groups), ResBlock(cur, cur, temb, groups)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):
            below = widths[i + 1] if i < last else widths[last]
            self.up.append(ResBlock(below + w, w, temb, groups))
            if i > 0:
                self.upsample.append(nn.Conv2d(w, w, 3, padding=1))
        self.norm_out = nn.GroupNorm(groups, widths[0])
        self.conv_out = nn.Conv2d(widths[0], in_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, t):
        temb = F.silu(self.lin2(F.silu(self.lin1(sinusoidal(t, self.ch).to(x.dtype)))))
        h = self.conv_in(x)
        skips = []
        for i, res in enumerate(self.down):
            h = res(h, temb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for res in self.mid:
            h = res(h, temb)
        for i in reversed(range(len(self.up))):
            h = self.up[i](torch.cat([h, skips.pop()], 1), temb)
            if i > 0:
                h = self.upsample[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def linear_betas(steps=1000):
    """relaxflow's linear schedule: 1e-4 to 0.02, scaled by 1000/T, clipped at 0.999."""
    scale = 1000.0 / steps
    return torch.linspace(1e-4 * scale, 0.02 * scale, steps, dtype=torch.float64).clamp_max(0.999)


def diffflow_grid(n=30, t0=1e-3, t1=0.05, beta=0.9):
    """DiffFlow's fixed grid, uniform in t^beta (src/diffflow/grid.rs)."""
    a, b = t0**beta, t1**beta
    return [(a + (b - a) * i / n) ** (1 / beta) for i in range(n + 1)]


# ----------------------------------------------------------------------------------------------------------------------
# Timing

def sync(device):
    """Waits for the device's queued work (timing boundaries)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device, warmup, max_steps, max_seconds):
    """Runs `warmup` untimed calls (compilation happens there), then calls until `max_steps` or `max_seconds`;
    returns (calls per second, calls timed, warm-up seconds, the last call's output's mean)."""
    start = time.perf_counter()
    out = None
    for _ in range(warmup):
        out = step()
    sync(device)
    warm_s = time.perf_counter() - start
    start, done = time.perf_counter(), 0
    while done < max_steps:
        out = step()
        done += 1
        if done % 5 == 0 or done == max_steps:
            sync(device)
            if time.perf_counter() - start > max_seconds:
                break
    sync(device)
    elapsed = time.perf_counter() - start
    last = float(out.float().mean()) if torch.is_tensor(out) else None
    return done / elapsed, done, warm_s, last


def maybe_compile(model, mode):
    """`model` as is (eager), compiled, or compiled with mode reduce-overhead (CUDA graphs)."""
    if mode == "eager":
        return model
    if mode == "compile":
        return torch.compile(model)
    if mode == "compile-ro":
        return torch.compile(model, mode="reduce-overhead")
    raise ValueError(mode)


def n_params(*models):
    """Trainable scalars of the given modules."""
    return sum(p.numel() for m in models for p in m.parameters())


def adam(params, lr, kind):
    """torch.optim.Adam, default (foreach on CUDA) or fused."""
    return torch.optim.Adam(params, lr=lr, **({"fused": True} if kind == "fused" else {}))


def autocast(device, dtype):
    """A bf16 autocast context for `dtype` bf16, else a disabled one."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


# ----------------------------------------------------------------------------------------------------------------------
# Cases

def case_realnvp(a, device):
    """realnvp-moons' training step; returns (step function, parameter count)."""
    gen = torch.Generator().manual_seed(0)
    data = moons(100_000, gen, device)
    model = RealNVP().to(device)
    fwd = maybe_compile(model.log_prob, a.mode)
    opt = adam(model.parameters(), 2e-3, a.adam)

    def step():
        x = data[torch.randint(data.shape[0], (a.batch,), device=device)]
        loss = -fwd(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step, n_params(model)


def case_unet(a, device):
    """ddpm-mnist's U-Net training step (L_simple); returns (step function, parameter count)."""
    pixels = mnist_pixels(device, a.data)
    net = UNet().to(device)
    fwd = maybe_compile(net, a.mode)
    abar = torch.cumprod(1 - linear_betas(), 0).float().to(device)
    opt = adam(net.parameters(), 2e-4, a.adam)

    def step():
        x = dequantized_batch(pixels, a.batch)
        y0 = (x * 256).floor().clamp(0, 255) / 127.5 - 1
        t = torch.randint(1000, (a.batch,), device=device)
        eps = torch.randn_like(y0)
        ab = abar[t][:, None, None, None]
        y_t = ab.sqrt() * y0 + (1 - ab).sqrt() * eps
        with autocast(device, a.dtype):
            pred = fwd(y_t, t.float() / 1000)
        loss = (pred.float() - eps).square().flatten(1).sum(1).mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return loss.detach()

    return step, n_params(net)


def case_diffflow(a, device):
    """diffflow-mnist's training step at N = a.steps; returns (step function, parameter count)."""
    pixels = mnist_pixels(device, a.data)
    drift_net, score_net = UNet().to(device), UNet().to(device)
    drift, score = maybe_compile(drift_net, a.mode), maybe_compile(score_net, a.mode)
    params = list(drift_net.parameters()) + list(score_net.parameters())
    opt = adam(params, 2e-4, a.adam)
    grid, t_end, g, dim = diffflow_grid(a.steps), 0.05, 1.0, 784

    def at(net, x, t):
        with autocast(device, a.dtype):
            return net(x, torch.full((x.shape[0],), t / t_end, device=device)).float()

    def step():
        x = dequantized_batch(pixels, a.batch) * 2 - 1
        f_x = at(drift, x, grid[0])
        total = torch.zeros(a.batch, device=device)
        for i in range(len(grid) - 1):
            t, t_next = grid[i], grid[i + 1]
            dt = t_next - t
            eps = torch.randn_like(x)
            x_next = x + f_x * dt + eps * (g * math.sqrt(dt))
            f_next = at(drift, x_next, t_next)
            back = f_next - at(score, x_next, t_next) * g * g
            delta_b = (x - x_next + back * dt) / (g * math.sqrt(dt))
            total = total + 0.5 * delta_b.square().flatten(1).sum(1) - 0.5 * eps.square().flatten(1).sum(1)
            x, f_x = x_next, f_next
        loss = (total + 0.5 * x.square().flatten(1).sum(1) + 0.5 * dim * math.log(2 * math.pi)).mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()

    return step, n_params(drift_net, score_net)


def case_sample(a, device):
    """One call draws `batch` samples with sampler `a.sampler`."""
    nets = [UNet().to(device).eval() for _ in range(2 if a.sampler == "diffflow" else 1)]
    for net in nets:  # the zero-initialised output layer would make the network trivially cheap to reason about
        with torch.no_grad():
            net.conv_out.weight.normal_(0, 1e-3)
    fns = [maybe_compile(net, a.mode) for net in nets]
    betas = linear_betas(a.timesteps)
    abar_t = torch.cumprod(1 - betas, 0)
    # Per-step constants as Python floats, computed once (no host work per step beyond the loop itself).
    mean_coef = [float(b / (1 - ab).sqrt()) for b, ab in zip(betas, abar_t)]
    inv_sqrt_alpha = [float(1 / (1 - b).sqrt()) for b in betas]
    sigma = [float(b.sqrt()) for b in betas]
    abar = [float(ab) for ab in abar_t]
    shape = (a.batch, 1, 28, 28)

    def eps_at(y, t):
        with autocast(device, a.dtype):
            return fns[0](y, torch.full((a.batch,), t / a.timesteps, device=device)).float()

    def ddpm():
        y = torch.randn(shape, device=device)
        for t in reversed(range(a.timesteps)):
            e = eps_at(y, t)
            mean = (y - e * mean_coef[t]) * inv_sqrt_alpha[t]
            y = mean + torch.randn_like(y) * sigma[t] if t > 0 else mean
        return y

    def ddim(k=50):
        k = min(k, a.timesteps)
        taus = [(i * (a.timesteps - 1)) // max(k - 1, 1) for i in range(k)]
        y = torch.randn(shape, device=device)
        for i in reversed(range(k)):
            t = taus[i]
            e = eps_at(y, t)
            ab = abar[t]
            x0 = ((y - e * math.sqrt(1 - ab)) / math.sqrt(ab)).clamp(-1, 1)
            ab_prev = abar[taus[i - 1]] if i > 0 else 1.0
            y = x0 * math.sqrt(ab_prev) + e * math.sqrt(1 - ab_prev)
        return y

    def diffflow(n=30, g=1.0, t_end=0.05):
        grid = diffflow_grid(n)
        x = torch.randn(shape, device=device)
        for i in reversed(range(n)):
            dt, tau = grid[i + 1] - grid[i], grid[i + 1] / t_end
            tt = torch.full((a.batch,), tau, device=device)
            with autocast(device, a.dtype):
                back = fns[0](x, tt).float() - fns[1](x, tt).float() * g * g
            mean = x - back * dt
            x = mean if i == 0 else mean + torch.randn_like(x) * (g * math.sqrt(dt))
        return x

    sampler = {"ddpm": ddpm, "ddim": ddim, "diffflow": diffflow}[a.sampler]

    def step():
        with torch.inference_mode():
            return sampler()

    return step, n_params(*nets)


CASES = {"realnvp": case_realnvp, "unet": case_unet, "diffflow": case_diffflow, "sample": case_sample}


def parse_spec(base, text):
    """`key=value,key=value` overrides of the command line's settings for one measurement, e.g.
    `mode=compile,dtype=bf16,batch=1024`."""
    a = argparse.Namespace(**vars(base))
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not hasattr(a, key):
            raise SystemExit(f"--spec {text}: unknown setting `{key}`")
        old = getattr(a, key)
        setattr(a, key, type(old)(value) if old is not None else value)
    return a


def measure(a, device):
    """One measurement: builds the case, times it, returns the JSON record."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step, params = CASES[a.case](a, device)
    rate, done, warm_s, last = timed(step, device, a.warmup, a.max_steps, a.max_seconds)
    out = {
        "case": a.case, "mode": a.mode, "dtype": a.dtype, "adam": a.adam, "batch": a.batch, "device": str(device),
        "per_s": rate, "timed_calls": done, "warmup_s": warm_s, "last_value": last, "params": params,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if a.case == "sample":
        out.update(sampler=a.sampler, timesteps=a.timesteps, ms_per_1000=1000.0 * 1000.0 / (rate * a.batch))
    if a.case == "diffflow":
        out["n_steps"] = a.steps
    if device.type == "cuda":
        out["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def main():
    """Runs one measurement per --spec and prints each as a JSON line as soon as it is done."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--mode", choices=["eager", "compile", "compile-ro"], default="eager")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--adam", choices=["default", "fused"], default="default")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="DiffFlow's N (diffflow case)")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "diffflow"], default="ddpm")
    p.add_argument("--timesteps", type=int, default=1000, help="DDPM's T (sample case)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--data", default="", help="MNIST folder (default data/mnist)")
    p.add_argument("--spec", action="append", default=[],
                   help="one measurement's settings, e.g. mode=compile,dtype=bf16,batch=1024 (repeat for several, "
                        "each printed as its own JSON line as soon as it is measured)")
    base = p.parse_args()
    if base.threads > 0:
        torch.set_num_threads(base.threads)
    device = torch.device(base.device)
    for text in base.spec or [""]:
        a = parse_spec(base, text)
        try:
            out = measure(a, device)
        except Exception as e:  # one failing setting (e.g. a compiler error) must not hide the others
            out = {"case": a.case, "mode": a.mode, "dtype": a.dtype, "adam": a.adam, "batch": a.batch,
                   "error": f"{type(e).__name__}: {e}"[:2000]}
        out["spec"] = text
        print(json.dumps(out), flush=True)
        torch._dynamo.reset() if hasattr(torch, "_dynamo") else None


if __name__ == "__main__":
    main()
