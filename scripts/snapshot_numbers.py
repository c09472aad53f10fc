#!/usr/bin/env python3
"""Numbers of every shipped experiment after a few CPU steps, for checking that a change leaves them bit-identical.

    python3 scripts/snapshot_numbers.py BIN OUT.tsv [--steps 3] [--only NAMES_FILE] [--set KEY=VALUE ...]

Runs `BIN train NAME --steps N --device cpu` for every experiments/*.toml (or the names listed in NAMES_FILE) with
the small settings of tests/experiments.rs and the smoke settings the registry declares per model kind, and writes
one row per experiment: the test NLL, its kind, bits/dim and the last three logged losses, printed with every digit
(repr), so two binaries' files differ exactly where a number moved. Compare two files with `diff`. CPU reductions
run on several threads, so run both binaries with the same OMP_NUM_THREADS (this script sets 1). `--set` settings go to every run, after the
script's own (e.g. `--set train.ema_decay=0` to compare experiments that gained a weight average with their raw
weights). CIFAR-10 experiments are skipped unless data/cifar10 holds the data set.
"""
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.n_train=512", "data.n_test=256", "eval.n_samples=256", "eval.grid=16", "eval.diag_samples=2000",
         "eval.diag_repeats=2", "eval.every=2", "train.log_every=1", "train.sample_every=2"]
IMAGE = ["train.batch_size=4", "eval.n_final=2", "eval.n_eval=2", "eval.batch_size=2", "eval.n_samples=2",
         "eval.quality_samples=8"]
SBI = ["eval.sbi_observations=1", "eval.sbi_samples=200", "eval.c2st_folds=2"]
# The registry's `smoke` / `smoke_image` settings (src/experiment/registry.rs).
SMOKE = {
    "survae": ["model.eval_k=5"],
    "vae": ["model.eval_k=10", "model.hidden=[16]"],
    "ddpm": ["model.timesteps=20"],
    "score": ["model.sample_steps=5", "model.ode.rtol=1e-2"],
    "ncsn": ["model.sample_steps=5", "model.ode.rtol=1e-2"],
    "diffflow": ["model.steps=3", "model.steps_schedule=[[0, 2], [2, 3]]", "model.ode.rtol=1e-2", "train.batch_size=64"],
    "cnf": ["model.train_rtol=1e-2", "model.ode.rtol=1e-2", "train.batch_size=64"],
    "classifier": ["model.channels=[4]", "model.feature_dim=8"],
}
SMOKE_IMAGE = {
    "realnvp": ["model.hidden_channels=4", "model.steps=1"],
    "glow": ["model.hidden_channels=4", "model.steps=1"],
    "maf": ["model.hidden=[16]", "model.n_layers=2"],
    "ddpm": ["model.net.unet_ch=8", "model.net.unet_groups=4"],
    "score": ["model.net.unet_ch=8", "model.net.unet_groups=4"],
    "ncsn": ["model.net.unet_ch=8", "model.net.unet_groups=4"],
    "diffflow": ["model.net.unet_ch=8", "model.net.unet_groups=4"],
    "cnf": ["model.net.unet_ch=8", "model.net.unet_groups=4", "model.net.unet_mults=[1]"],
}


def settings(exp: dict) -> list[str]:
    kind = exp.get("model", {}).get("kind", "")
    image = exp.get("data", {}).get("name") in ("mnist", "fashion-mnist", "cifar10")
    out = SMALL + SMOKE.get(kind, [])
    if image:
        out += IMAGE + SMOKE_IMAGE.get(kind, [])
    if exp.get("data", {}).get("name") in ("gaussian_linear", "two_moons", "slcp"):
        out += SBI
    return out


def row(name: str, run: Path) -> str:
    s = json.loads((run / "summary.json").read_text())
    losses = [json.loads(l).get("loss") for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    keys = ["test_nll_nats", "nll_kind", "bits_per_dim", "test_accuracy"]
    return "\t".join([name] + [repr(s.get(k)) for k in keys] + [repr(losses[-3:])])


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    binary, out = Path(args[0]).resolve(), Path(args[1])
    steps = args[args.index("--steps") + 1] if "--steps" in args else "3"
    names = sorted(p.stem for p in (ROOT / "experiments").glob("*.toml"))
    if not (ROOT / "data" / "cifar10").exists():
        def on_cifar10(n):
            with open(ROOT / "experiments" / f"{n}.toml", "rb") as f:
                return tomllib.load(f).get("data", {}).get("name") == "cifar10"
        names = [n for n in names if not on_cifar10(n)]
    extra = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    if "--only" in args:
        names = [n for n in Path(args[args.index("--only") + 1]).read_text().split() if n]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            exp = tomllib.loads((ROOT / "experiments" / f"{name}.toml").read_text())
            run = Path(tmp) / name
            cmd = [str(binary), "train", name, "--steps", steps, "--device", "cpu", "--out", str(run)]
            for s in settings(exp) + extra:
                cmd += ["--set", s]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append(f"{name}\tFAILED\t{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
            else:
                rows.append(row(name, run))
            print(rows[-1], flush=True)
    out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
