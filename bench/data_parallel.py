"""`make bench`, data parallelism: training steps/s of realnvp-moons and realnvp-mnist on 1 process and on 2 Gloo
ranks (same global batch, so 2 ranks do half the work each per step), and the allreduce latency of 2 ranks for
flat-gradient sizes of the models we ship (`relaxflow dist-selftest --bench`).

On this 2-core machine the fair comparisons are 1 process x 1 thread vs 2 ranks x 1 thread (scaling efficiency =
speed-up / 2) and 1 process x 2 threads vs 2 ranks x 1 thread (is data parallelism worth it against intra-op threads
on the same cores). Each setting runs `--reps` times, interleaved, and the median is reported. Results go to
bench/out/data_parallel.{md,json}.
"""
import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "relaxflow"
LAUNCH = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS", "RELAXFLOW_DIST_FILE"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(threads):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def train_cmd(exp, steps, batch, run):
    sets = [
        "train.lr_schedule=constant", "train.warmup=0", "eval.every=0", "train.sample_every=0", f"train.log_every={steps}",
        f"train.batch_size={batch}", f"train.checkpoint_every={steps}", "eval.n_final=64", "eval.n_samples=64", "eval.sampler_settings=[]",
    ]
    cmd = [str(BIN), "train", exp, "--steps", str(steps), "--device", "cpu", "--out", str(run)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def steps_per_s(exp, steps, batch, ranks, threads):
    """Training steps/s (summary.json: training time only) of `ranks` processes with `threads` threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = train_cmd(exp, steps, batch, run)
        if ranks == 1:
            subprocess.run(cmd, check=True, cwd=ROOT, env=clean_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            port = str(free_port())
            procs = []
            for r in range(ranks):
                env = clean_env(threads) | {"RANK": str(r), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            for p in procs:
                _, err = p.communicate()
                if p.returncode != 0:
                    raise SystemExit(f"{exp} on {ranks} ranks failed:\n{err.decode()}")
        s = json.loads((run / "summary.json").read_text())
        return s["steps_per_s"], s["params"]


def allreduce_ms(reps):
    port = str(free_port())
    procs = []
    for r in range(2):
        env = clean_env(1) | {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([str(BIN), "dist-selftest", "--bench", str(reps)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"dist-selftest failed:\n{err.decode()}")
    return json.loads(outs[0][0])["allreduce_ms_median"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="few steps, one repetition (a smoke test of this script)")
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    models = [("realnvp-moons", 30 if args.quick else 400, 512), ("realnvp-mnist", 3 if args.quick else 12, 64)]
    settings = [(1, 1), (1, 2), (2, 1)]
    results = {}
    for exp, steps, batch in models:
        runs = {s: [] for s in settings}
        params = None
        for _ in range(reps):
            for ranks, threads in settings:
                sps, params = steps_per_s(exp, steps, batch, ranks, threads)
                runs[(ranks, threads)].append(sps)
        med = {f"{r}x{t}": statistics.median(v) for (r, t), v in runs.items()}
        results[exp] = {
            "batch": batch, "steps": steps, "params": params, "steps_per_s": med,
            "scaling_efficiency_1to2_ranks": med["2x1"] / med["1x1"] / 2,
            "two_ranks_vs_two_threads": med["2x1"] / med["1x2"],
        }
        print(exp, json.dumps(results[exp]), flush=True)
    latency = allreduce_ms(10 if args.quick else 50)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_parallel.json").write_text(json.dumps({"models": results, "allreduce_ms_median": latency}, indent=2))
    lines = [
        "# Data parallelism on this machine (2 CPU cores, Gloo over loopback)", "",
        "Same global batch on 1 and 2 ranks; steps/s over training steps only; median of "
        f"{reps} interleaved runs. Efficiency = (2 ranks x 1 thread) / (1 process x 1 thread) / 2.", "",
        "| model | params | batch | 1 proc x 1 thread | 1 proc x 2 threads | 2 ranks x 1 thread | scaling efficiency | 2 ranks / 2 threads | allreduce per step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sizes = sorted((int(k), v) for k, v in latency.items())
    for exp, r in results.items():
        # The allreduce of the measured buffer size closest (in ratio) to the model's parameter count.
        ms = min(sizes, key=lambda nv: abs(math.log(nv[0] / r["params"])))[1]
        s = r["steps_per_s"]
        lines.append(
            f"| {exp} | {r['params']:,} | {r['batch']} | {s['1x1']:.1f} | {s['1x2']:.1f} | {s['2x1']:.1f} | "
            f"{r['scaling_efficiency_1to2_ranks']:.0%} | {r['two_ranks_vs_two_threads']:.2f}x | {ms:.2f} ms |"
        )
    lines += ["", "Allreduce latency, 2 ranks, median: " + ", ".join(f"{n:,} floats {v:.2f} ms" for n, v in sizes)]
    (out / "data_parallel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
