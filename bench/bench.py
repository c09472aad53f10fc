"""`make bench`: training steps/s of realnvp-moons and diffflow-checkerboard in relaxflow against PyTorch references,
of a conditional NSF q(θ | x) against the same model in zuko, and of cnf-checkerboard against the same CNF in
PyTorch with torchdiffeq (backprop through dopri5 and the adjoint), same machine, same run (DiffFlow also reports peak
memory of full vs recomputed backprop). RealNVP is measured with
relaxflow's flat Adam and its fused Adam (`train.optimizer_impl = "fused"`, ATen's fused kernel through the C++ shim),
and with its couplings op by op instead of one fused autograd node each (RELAXFLOW_FUSED_COUPLING=0), against
torch.optim.Adam with its default (foreach) and fused implementations.

Both sides use 2 CPU threads, batch 512, Adam at a constant learning rate, and time only training steps (relaxflow's
own loop: per-step seeding, batch gather, loss, backward, flat Adam step, device-side NaN bookkeeping). Each side is
measured `--reps` times, interleaved, and the median is reported. Results go to bench/out/results.{md,json}.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "relaxflow"


def relaxflow_steps_per_s(steps, threads, batch, optimizer="flat", fused_coupling=True):
    """realnvp-moons' training steps/s with Adam's update run `optimizer` way (train.optimizer_impl: flat | fused),
    its couplings as one fused autograd node each (the default) or op by op (RELAXFLOW_FUSED_COUPLING=0)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        sets = [
            "train.lr_schedule=constant", "train.warmup=0", "eval.every=0", "train.sample_every=0",
            f"train.log_every={steps}", f"train.batch_size={batch}", f"train.checkpoint_every={steps}", "eval.n_samples=2000", "eval.grid=32",
            f'train.optimizer_impl="{optimizer}"',
        ]
        cmd = [str(BIN), "train", "realnvp-moons", "--steps", str(steps), "--device", "cpu", "--out", str(run)]
        for s in sets:
            cmd += ["--set", s]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), RELAXFLOW_FUSED_COUPLING="1" if fused_coupling else "0")
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads((run / "summary.json").read_text())["steps_per_s"]


def pytorch_steps_per_s(steps, threads, batch, adam):
    cmd = [sys.executable, str(ROOT / "bench" / "realnvp_moons.py"), "--steps", str(steps), "--threads", str(threads), "--adam", adam, "--batch", str(batch)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    return json.loads(out.stdout)["steps_per_s"]


def max_rss_run(cmd, env):
    """Runs cmd under /usr/bin/time; returns (stdout, peak resident memory in MiB)."""
    out = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    rss = [l for l in out.stderr.splitlines() if l.startswith("MAXRSS ")][-1].split()[1]
    return out.stdout, int(rss) / 1024


def relaxflow_diffflow(steps, threads, batch, backprop):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        sets = [
            "train.lr_schedule=constant", "train.warmup=0", "train.sample_every=0", f"train.log_every={steps}",
            f"train.batch_size={batch}", f"train.checkpoint_every={steps}", "eval.n_samples=100", "eval.n_final=100",
            "eval.grid=8", f"model.backprop={backprop}", "train.lr=1e-3",
        ]
        cmd = [str(BIN), "train", "diffflow-checkerboard", "--steps", str(steps), "--device", "cpu", "--out", str(run)]
        for s in sets:
            cmd += ["--set", s]
        _, rss = max_rss_run(cmd, dict(os.environ, OMP_NUM_THREADS=str(threads)))
        return json.loads((run / "summary.json").read_text())["steps_per_s"], rss


def pytorch_diffflow(steps, threads, batch):
    cmd = [sys.executable, str(ROOT / "bench" / "diffflow_2d.py"), "--steps", str(steps), "--threads", str(threads), "--batch", str(batch)]
    out, rss = max_rss_run(cmd, dict(os.environ, OMP_NUM_THREADS=str(threads)))
    return json.loads(out)["steps_per_s"], rss


def diffflow_section(a):
    batch, steps = 1000, a.diffflow_steps
    sides = {
        "relaxflow, full backprop": lambda: relaxflow_diffflow(steps, a.threads, batch, "full"),
        "relaxflow, recompute (O(1) activations in N)": lambda: relaxflow_diffflow(steps, a.threads, batch, "recompute"),
        "PyTorch, full backprop": lambda: pytorch_diffflow(steps, a.threads, batch),
    }
    results = {name: [] for name in sides}
    for rep in range(a.reps):
        for name, once in sides.items():
            results[name].append(once())
            print(f"diffflow rep {rep + 1}/{a.reps}  {name}: {results[name][-1][0]:.2f} steps/s, {results[name][-1][1]:.0f} MiB", file=sys.stderr)
    median = {name: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for name, v in results.items()}
    ours = median["relaxflow, full backprop"][0]
    lines = [
        f"diffflow-checkerboard training steps/s: two Fourier MLPs (2 x 99.7k parameters), N = 30, batch {batch}, "
        f"{a.threads} CPU threads, {steps} steps, median of {a.reps}; peak RSS of the whole process",
        "",
        "| implementation | steps/s | relaxflow full / this | peak RSS (MiB) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {v[0]:.2f} | {ours / v[0]:.2f}x | {v[1]:.0f} |" for name, v in median.items()]
    return "\n".join(lines) + "\n", {"median": median, "all": results}


def relaxflow_conditional_nsf(steps, threads, batch):
    """sbi-two-moons' conditional NSF with alternating halves and no ActNorm (zuko's NSF has neither LU mixing nor
    ActNorm): training steps/s and parameter count."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        sets = [
            "model.mixing=alternate", "model.actnorm=false", "train.lr_schedule=constant", "train.warmup=0",
            "eval.every=0", "train.sample_every=0", f"train.log_every={steps}", f"train.batch_size={batch}",
            f"train.checkpoint_every={steps}", "eval.n_samples=200", "eval.n_eval=200", "eval.sbi_observations=1",
            "eval.sbi_samples=200", "eval.c2st_folds=2",
        ]
        cmd = [str(BIN), "train", "sbi-two-moons", "--steps", str(steps), "--device", "cpu", "--out", str(run)]
        for s in sets:
            cmd += ["--set", s]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        summary = json.loads((run / "summary.json").read_text())
        return summary["steps_per_s"], summary["params"]


def zuko_conditional_nsf(steps, threads, batch):
    cmd = [sys.executable, str(ROOT / "bench" / "zuko_nsf.py"), "--steps", str(steps), "--threads", str(threads), "--batch", str(batch)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    r = json.loads(out.stdout)
    return r["steps_per_s"], r["params"]


def conditional_section(a):
    batch, steps = 200, a.conditional_steps
    sides = {
        "relaxflow (tch), conditional NSF": lambda: relaxflow_conditional_nsf(steps, a.threads, batch),
        "zuko 1.6 (PyTorch), zuko.flows.NSF(passes=2)": lambda: zuko_conditional_nsf(steps, a.threads, batch),
    }
    results = {name: [] for name in sides}
    for rep in range(a.reps):
        for name, once in sides.items():
            results[name].append(once())
            print(f"conditional NSF rep {rep + 1}/{a.reps}  {name}: {results[name][-1][0]:.1f} steps/s", file=sys.stderr)
    median = {name: (statistics.median(r[0] for r in v), v[0][1]) for name, v in results.items()}
    ours = median["relaxflow (tch), conditional NSF"][0]
    lines = [
        f"Conditional NSF q(θ | x) training steps/s: θ, x in R^2, 5 RQ-spline couplings (10 bins, bound 5) with alternating "
        f"halves, MLP [θ_a, x] -> 50 -> 50, standard normal base, Adam, batch {batch}, {a.threads} CPU threads, {steps} steps, "
        f"median of {a.reps}",
        "",
        "| implementation | steps/s | relaxflow / this | parameters |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {v[0]:.1f} | {ours / v[0]:.2f}x | {v[1]} |" for name, v in median.items()]
    return "\n".join(lines) + "\n", {"median": median, "all": results}


def relaxflow_cnf(steps, threads, batch, gradient):
    """cnf-checkerboard's training steps/s and function evaluations per step (forward, and the adjoint's backward),
    with the 64-wide velocity of the other 2D CNF experiments (bench/cnf_2d.py's)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        sets = [
            "train.lr_schedule=constant", "train.warmup=0", "eval.every=0", "train.sample_every=0", f"train.log_every={steps}",
            f"train.batch_size={batch}", f"train.checkpoint_every={steps}", "eval.n_samples=200", "eval.n_final=200",
            "eval.grid=8", f'model.gradient="{gradient}"', "train.tensorboard=false", "model.net.hidden=[64, 64, 64]",
        ]
        cmd = [str(BIN), "train", "cnf-checkerboard", "--steps", str(steps), "--device", "cpu", "--out", str(run)]
        for s in sets:
            cmd += ["--set", s]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        summary = json.loads((run / "summary.json").read_text())
        t = summary["estimator"]["training"]
        return summary["steps_per_s"], t["nfe_forward_per_step"], t["nfe_backward_per_step"]


def torchdiffeq_cnf(steps, threads, batch, gradient):
    cmd = [sys.executable, str(ROOT / "bench" / "cnf_2d.py"), "--steps", str(steps), "--threads", str(threads), "--batch", str(batch), "--gradient", gradient]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT / "bench", env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    r = json.loads(out.stdout)
    return r["steps_per_s"], r["nfe_forward_per_step"], r["nfe_backward_per_step"]


def cnf_section(a):
    """Both sides start from a fresh network, so the adaptive solver's evaluations per step differ a little: the
    table gives steps/s and the time per function evaluation, and the ratios of both."""
    batch, steps = 512, a.cnf_steps
    sides = {
        "relaxflow, backprop through RK45": lambda: relaxflow_cnf(steps, a.threads, batch, "backprop"),
        "PyTorch + torchdiffeq 0.2.5, odeint (backprop)": lambda: torchdiffeq_cnf(steps, a.threads, batch, "backprop"),
        "relaxflow, adjoint (seminorm)": lambda: relaxflow_cnf(steps, a.threads, batch, "adjoint"),
        "PyTorch + torchdiffeq 0.2.5, odeint_adjoint (seminorm)": lambda: torchdiffeq_cnf(steps, a.threads, batch, "adjoint"),
    }
    results = {name: [] for name in sides}
    for rep in range(a.reps):
        for name, once in sides.items():
            results[name].append(once())
            print(f"cnf rep {rep + 1}/{a.reps}  {name}: {results[name][-1][0]:.2f} steps/s, NFE {results[name][-1][1]:.1f}", file=sys.stderr)

    def summary(v):
        sps = statistics.median(r[0] for r in v)
        fwd = statistics.median(r[1] for r in v)
        bwd = statistics.median(r[2] for r in v) if v[0][2] is not None else None
        return {"steps_per_s": sps, "nfe_forward": fwd, "nfe_backward": bwd, "ms_per_eval": 1000.0 / (sps * (fwd + (bwd or 0.0)))}

    median = {name: summary(v) for name, v in results.items()}
    lines = [
        f"cnf-checkerboard training steps with an MLP 64-64-64 (tanh) velocity, exact divergence + RNODE kinetic and Jacobian terms, "
        f"RK45 / dopri5 at rtol = atol = 1e-4, batch {batch}, {a.threads} CPU threads, {steps} steps from initialisation, median of "
        f"{a.reps}; ms / evaluation = step time / (forward + backward-solve evaluations)",
        "",
        "| implementation | steps/s | NFE forward / step | NFE backward / step | ms / evaluation | torchdiffeq step time / relaxflow's | per evaluation |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in median.items():
        ref = median["relaxflow, backprop through RK45" if "backprop" in name else "relaxflow, adjoint (seminorm)"]
        ratio = f"{ref['steps_per_s'] / v['steps_per_s']:.2f}x" if name.startswith("PyTorch") else "1"
        per_eval = f"{v['ms_per_eval'] / ref['ms_per_eval']:.2f}x" if name.startswith("PyTorch") else "1"
        bwd = "-" if v["nfe_backward"] is None else f"{v['nfe_backward']:.1f}"
        lines.append(f"| {name} | {v['steps_per_s']:.2f} | {v['nfe_forward']:.1f} | {bwd} | {v['ms_per_eval']:.2f} | {ratio} | {per_eval} |")
    return "\n".join(lines) + "\n", {"median": median, "all": results}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="512,64", help="comma-separated batch sizes; 512 is the target's")
    p.add_argument("--diffflow-steps", type=int, default=50, help="0 skips the DiffFlow comparison")
    p.add_argument("--conditional-steps", type=int, default=1000, help="0 skips the conditional NSF comparison with zuko")
    p.add_argument("--cnf-steps", type=int, default=30, help="0 skips the CNF comparison with torchdiffeq")
    a = p.parse_args()
    text, record = "", {"args": vars(a)}
    for batch in [int(b) for b in a.batches.split(",") if b]:
        table, results = measure(a, batch)
        text += table + "\n"
        record[f"batch_{batch}"] = results
    if a.diffflow_steps > 0:
        table, results = diffflow_section(a)
        text += table + "\n"
        record["diffflow"] = results
    if a.conditional_steps > 0:
        table, results = conditional_section(a)
        text += table + "\n"
        record["conditional_nsf"] = results
    if a.cnf_steps > 0:
        table, results = cnf_section(a)
        text += table + "\n"
        record["cnf"] = results
    print(text)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(record, indent=2))


def measure(a, batch):
    sides = {
        "relaxflow (tch, flat Adam)": lambda: relaxflow_steps_per_s(a.steps, a.threads, batch),
        "relaxflow (tch, fused Adam: train.optimizer_impl = \"fused\")": lambda: relaxflow_steps_per_s(a.steps, a.threads, batch, "fused"),
        "relaxflow (tch, flat Adam, couplings op by op: RELAXFLOW_FUSED_COUPLING=0)": lambda: relaxflow_steps_per_s(a.steps, a.threads, batch, fused_coupling=False),
        "PyTorch, torch.optim.Adam default": lambda: pytorch_steps_per_s(a.steps, a.threads, batch, "default"),
        "PyTorch, torch.optim.Adam(fused=True)": lambda: pytorch_steps_per_s(a.steps, a.threads, batch, "fused"),
    }
    results = {name: [] for name in sides}
    for rep in range(a.reps):
        for name, measure_once in sides.items():
            results[name].append(measure_once())
            print(f"batch {batch} rep {rep + 1}/{a.reps}  {name}: {results[name][-1]:.1f} steps/s", file=sys.stderr)
    median = {name: statistics.median(v) for name, v in results.items()}
    ours = median["relaxflow (tch, flat Adam)"]
    fused = median["relaxflow (tch, fused Adam: train.optimizer_impl = \"fused\")"]
    lines = [
        f"realnvp-moons training steps/s: 8 affine couplings, MLP 64-64, batch {batch}, Adam, {a.threads} CPU threads, "
        f"{a.steps} steps, median of {a.reps}",
        "",
        "| implementation | steps/s | relaxflow flat / this | relaxflow fused / this |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {v:.1f} | {ours / v:.2f}x | {fused / v:.2f}x |" for name, v in median.items()]
    return "\n".join(lines) + "\n", {"median": median, "all": results}


if __name__ == "__main__":
    main()
