"""`make gpu-check`: one prepared check of relaxflow on a GPU, in at most ~8 minutes, writing a markdown report as it
goes (each section is appended the moment it is measured, so a time limit still leaves a report).

Run it through scripts/gpu_check.sh, which finds a Python with torch and puts torch's libraries on LD_LIBRARY_PATH
for the prebuilt binary (the GPU machine has no Rust toolchain: `make gpu-prep` builds what it needs on the CPU
machine). `--device cpu` is a dry run of the same logic with tiny sizes.

Sections, in order (phase A runs while a ~5-minute glow-mnist training runs in the background; phase B has the GPU to
itself, because it times things):
  A. `relaxflow info`; the CUDA-gated tests (target/gpu-check/tests/*, when built); every family trained a few steps on
     the device and evaluated (small evaluation); the same weights evaluated on the CPU and on the device; torch.compile
     warm-ups (they fill Inductor's on-disk cache so phase B does not pay for compilation); glow-mnist's test bits/dim.
  B. Training steps/s side by side with PyTorch eager and torch.compile of the same models (bench/gpu_models.py): the 2D
     RealNVP step, ddpm-mnist's U-Net step at batch 128 and 1024, DiffFlow's MNIST step; sampling throughput (DDPM 1000
     steps, DDIM 50, DiffFlow N = 30); peak GPU memory of every process; the issue's goals against these numbers.

Every subprocess runs under its own time limit, cut to what is left of `--budget`; a step that would not fit is
recorded as skipped. Results also go to results.json beside the report.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "bench" / "gpu_models.py"

# Sizes per device. CUDA: the real check. CPU: a dry run of the same logic that finishes in minutes on 2 cores.
PLANS = {
    "cuda": {
        "budget": 480, "smoke_steps": 20, "classifier_steps": 300,
        "image_eval": ["eval.n_final=500", "eval.n_samples=64", "eval.quality_samples=256"],
        "toy_eval": ["eval.n_samples=5000", "eval.grid=64"],
        "smoke_extra": {"scoresde-mnist": ["eval.n_final=32"], "diffflow-mnist": ["eval.n_final=32"], "cnf-mnist": ["eval.n_final=32"],
                        "ddpm-mnist": ["eval.n_final=64"], "snf-doublewell": ["eval.diag_samples=20000", "eval.diag_repeats=4"]},
        "glow_seconds": 240, "glow_probe": (40, 10), "glow_extra": [], "glow_eval_margin": 75, "glow_contention": 0.8,
        "realnvp": {"batch": 512, "steps": 600, "log": 100},
        "unet": [{"batch": 128, "steps": 150, "log": 30}, {"batch": 1024, "steps": 45, "log": 9}],
        "diffflow": {"batch": 64, "n": 30, "steps": 18, "log": 6},
        "sample": {"n": 1000, "timesteps": 1000, "ddim": 50, "diffflow_n": 30},
        "torch_seconds": 4.0, "torch_warmup": 3, "torch_threads": 0, "compile": "all", "phase_b_reserve": 150,
        "limit_scale": 1.0,
    },
    "cpu": {
        "budget": 3600, "smoke_steps": 3, "classifier_steps": 5,
        "image_eval": ["eval.n_final=8", "eval.n_samples=8", "eval.quality_samples=8", "eval.batch_size=8"],
        "toy_eval": ["eval.n_samples=1000", "eval.grid=32"],
        "smoke_extra": {"scoresde-mnist": ["eval.n_final=2", "model.sample_steps=5"],
                        "diffflow-mnist": ["eval.n_final=2", "model.sample_steps=3"],
                        "cnf-mnist": ["eval.n_final=2", "model.net.unet_ch=8", "model.net.unet_groups=4", "model.train_rtol=1e-2",
                                      "model.ode.rtol=1e-2"],
                        "ddpm-mnist": ["eval.n_final=2", "model.timesteps=20"], "vae-mnist": ["model.eval_k=8"],
                        "snf-doublewell": ["eval.diag_samples=1000", "eval.diag_repeats=2"],
                        "glow-mnist": ["model.hidden_channels=16", "model.steps=2", "train.batch_size=16"],
                        "realnvp-mnist": ["model.hidden_channels=16", "train.batch_size=16"],
                        "survae-maxpool-mnist": ["model.hidden_channels=16", "model.steps=2", "train.batch_size=16"]},
        "glow_seconds": 15, "glow_probe": (4, 2), "glow_extra": ["model.hidden_channels=16", "model.steps=2",
                                                                  "train.batch_size=16", "eval.n_final=64"],
        "glow_eval_margin": 60, "glow_contention": 0.8,
        "realnvp": {"batch": 512, "steps": 60, "log": 20},
        "unet": [{"batch": 8, "steps": 6, "log": 2}, {"batch": 16, "steps": 6, "log": 2}],
        "diffflow": {"batch": 4, "n": 5, "steps": 4, "log": 2},
        "sample": {"n": 4, "timesteps": 20, "ddim": 5, "diffflow_n": 5},
        "torch_seconds": 1.0, "torch_warmup": 1, "torch_threads": 2, "compile": "realnvp", "phase_b_reserve": 0,
        "limit_scale": 4.0,  # a busy 2-core machine: each step's own limit 4x the GPU's
    },
}

# One experiment per family (the classifier first: image sample quality needs it). glow-mnist's smoke is its probe.
SMOKES = ["mnist-classifier", "realnvp-moons", "realnvp-mnist", "survae-maxpool-mnist", "survae-abs-corners",
          "vae-mnist", "ddpm-mnist", "scoresde-mnist", "snf-doublewell", "diffflow-mnist", "cnf-mnist"]
IMAGE_EXPERIMENTS = {"realnvp-mnist", "survae-maxpool-mnist", "vae-mnist", "ddpm-mnist", "scoresde-mnist", "diffflow-mnist", "cnf-mnist",
                     "glow-mnist"}
QUIET = ["eval.every=0", "train.sample_every=0"]


# ----------------------------------------------------------------------------------------------------------------------
# Plumbing: budget, report, subprocesses with limits and memory polling

class Budget:
    """Seconds left of the whole check."""

    def __init__(self, seconds):
        self.start = time.monotonic()
        self.end = self.start + seconds

    def left(self):
        return self.end - time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.start

    def limit(self, wanted, reserve=0.0):
        """The time limit for a step that wants `wanted` seconds, keeping `reserve` for what comes after it."""
        return max(0.0, min(wanted, self.left() - reserve))


class Report:
    """report.md, appended and flushed section by section, and results.json, rewritten atomically on every record."""

    def __init__(self, out):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.md = out / "report.md"
        self.md.write_text("")
        self.results = {}
        self.lock = threading.Lock()

    def add(self, text):
        """A section (or the end of one), followed by a blank line."""
        with self.lock, open(self.md, "a") as f:
            f.write(text.rstrip("\n") + "\n\n")
            f.flush()
            os.fsync(f.fileno())
        print(text.rstrip(), flush=True)

    def line(self, text):
        """One row of a table (no blank line after it)."""
        with self.lock, open(self.md, "a") as f:
            f.write(text.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(text.rstrip(), flush=True)

    def record(self, key, value):
        with self.lock:
            self.results[key] = value
            tmp = self.out / ".results.json.tmp"
            tmp.write_text(json.dumps(self.results, indent=1, default=str))
            tmp.replace(self.out / "results.json")


def gpu_memory_used():
    """MiB in use on GPU 0 (all processes), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--id=0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return float(out.splitlines()[0])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class MemPoller(threading.Thread):
    """Peak memory of one process: its GPU memory from nvidia-smi (what the driver charges it, context included) on
    CUDA, its resident set on the CPU. Where nvidia-smi does not list the process (a container's PID namespace), the
    GPU's total use above what it was when the process started (exact when nothing else runs, as in phase B)."""

    def __init__(self, pid, device):
        super().__init__(daemon=True)
        self.pid, self.device, self.peak, self.stop = pid, device, None, threading.Event()
        self.baseline = gpu_memory_used() if device == "cuda" and shutil.which("nvidia-smi") else None

    def sample(self):
        if self.device == "cuda":
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            for line in out.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                    return float(parts[1])
            if self.baseline is not None:
                used = gpu_memory_used()
                return None if used is None else max(0.0, used - self.baseline)
            return None
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def run(self):
        if self.device == "cuda" and shutil.which("nvidia-smi") is None:
            return
        while not self.stop.is_set():
            try:
                v = self.sample()
                if v is not None:
                    self.peak = max(self.peak or 0.0, v)
            except Exception:
                pass
            self.stop.wait(0.25)


def run(cmd, limit, device, env=None, mem=True):
    """Runs `cmd` from the repository root under a time limit (SIGINT at the limit, which makes relaxflow write a
    checkpoint; SIGKILL of the whole process group 20 s later). Returns rc, stdout, stderr, wall seconds, whether it
    timed out, and the process's peak memory in MiB."""
    if limit <= 0:
        return {"rc": None, "skipped": True, "out": "", "err": "skipped: no time left in the budget", "wall_s": 0.0,
                "timed_out": False, "peak_mib": None, "cmd": cmd}
    start = time.monotonic()
    p = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    poller = MemPoller(p.pid, device) if mem else None
    if poller:
        poller.start()
    timed_out = False
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGINT)
            out, err = p.communicate(timeout=20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
    if poller:
        poller.stop.set()
        poller.join(timeout=5)
    return {"rc": p.returncode, "skipped": False, "out": out, "err": err, "wall_s": time.monotonic() - start,
            "timed_out": timed_out, "peak_mib": poller.peak if poller else None, "cmd": [str(c) for c in cmd]}


def tail(text, n=6):
    """The last `n` non-empty lines of `text`."""
    lines = [l for l in (text or "").splitlines() if l.strip()]
    return "\n".join(lines[-n:])


def status_of(r):
    """ok, FAIL (exit N), time limit or skipped, for a run() record."""
    if r.get("skipped"):
        return "skipped (budget)"
    if r["timed_out"]:
        return f"time limit ({r['wall_s']:.0f} s)"
    return "ok" if r["rc"] == 0 else f"FAIL (exit {r['rc']})"


def cell(text):
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt(v, spec=".3g", unit=""):
    """`v` formatted with `spec`, or a dash when missing or NaN."""
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:{spec}}{unit}"


def mib(v):
    """MiB as a whole number, or a dash."""
    return fmt(v, ".0f")


# ----------------------------------------------------------------------------------------------------------------------
# relaxflow

class Relaxflow:
    """The relaxflow binary, run as subprocesses on one device, its run folders under `work`."""
    def __init__(self, binary, device, work):
        self.bin, self.device, self.work = binary, device, work

    def train(self, exp, out, sets, limit, steps=None, runs=None):
        """`relaxflow train` into `out`; returns run()'s record plus the run's summary, metrics lines and the training
        steps/s of the logged intervals after the first (warm-up excluded)."""
        cmd = [self.bin, "--runs", runs or self.work / "runs", "train", exp, "--device", self.device, "--out", out]
        if steps is not None:
            cmd += ["--steps", steps]
        for s in sets:
            cmd += ["--set", s]
        r = run(cmd, limit, self.device)
        r.update(read_run(out))
        return r

    def eval(self, run_dir, device, limit, sets=()):
        cmd = [self.bin, "eval", run_dir, "--device", device]
        for s in sets:
            cmd += ["--set", s]
        r = run(cmd, limit, device)
        try:
            r["json"] = json.loads(r["out"])
        except (json.JSONDecodeError, TypeError):
            r["json"] = None
        return r


def read_run(out):
    """summary.json, metrics.jsonl and the steady-state steps/s of a run folder (whatever exists)."""
    out = Path(out)
    rec = {"run": str(out), "summary": None, "metrics": []}
    try:
        rec["summary"] = json.loads((out / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    try:
        for line in (out / "metrics.jsonl").read_text().splitlines():
            try:
                rec["metrics"].append(json.loads(line))
            except json.JSONDecodeError:
                pass
    except OSError:
        pass
    rates = [m["steps_per_s"] for m in rec["metrics"] if m.get("steps_per_s")]
    rec["interval_rates"] = rates
    rec["rate"] = statistics.median(rates[1:]) if len(rates) > 1 else (rates[0] if rates else None)
    return rec


def keep_run(rec, out, label):
    """Copies a run's small files (summary, run.json, config, metrics) into the report folder."""
    src = Path(rec.get("run", ""))
    if not src.is_dir():
        return
    dst = out / "runs" / label
    dst.mkdir(parents=True, exist_ok=True)
    for name in ["summary.json", "run.json", "config.toml", "metrics.jsonl"]:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


# ----------------------------------------------------------------------------------------------------------------------
# PyTorch side

def torch_case(a, case, specs, limit, extra=()):
    """Runs bench/gpu_models.py CASE with one --spec per measurement; returns the JSON records (those printed before a
    time limit survive it) and the process record."""
    cmd = [a.python, MODELS, case, "--device", a.device, "--warmup", a.plan["torch_warmup"], "--max-seconds",
           a.plan["torch_seconds"], "--threads", a.plan["torch_threads"], *extra]
    for s in specs:
        cmd += ["--spec", s]
    r = run(cmd, limit, a.device)
    recs = []
    for line in (r["out"] or "").splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return recs, r


def compiled_allowed(a, case):
    """Whether torch.compile measurements of `case` are in this plan."""
    return a.plan["compile"] == "all" or case in a.plan["compile"].split(",")


# ----------------------------------------------------------------------------------------------------------------------
# Sections

def header(a, rep):
    """The report's title block: date, commit, GPU, torch and Python, binary, budget."""
    env_probe = run([a.python, "-c", "import json, sys, torch; print(json.dumps({'python': sys.version.split()[0], "
                     "'torch': torch.__version__, 'cuda': torch.cuda.is_available(), "
                     "'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "
                     "'cuda_version': torch.version.cuda}))"], 120, a.device, mem=False)
    try:
        env = json.loads(env_probe["out"].strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError, AttributeError):
        env = {"error": tail(env_probe["err"])}
    smi = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30, a.device,
              mem=False) if shutil.which("nvidia-smi") else {"out": ""}
    rep.record("environment", {"python_exe": a.python, **env, "nvidia_smi": smi["out"].strip(), "commit": a.commit,
                               "device": a.device, "budget_s": a.budget_s})
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rep.add(
        f"# relaxflow GPU check ({a.device})\n\n"
        f"- date: {now}; commit: `{a.commit}`; host: {platform.node()}\n"
        f"- GPU: {smi['out'].strip() or env.get('gpu') or 'none'}; torch {env.get('torch')} (CUDA {env.get('cuda_version')}), "
        f"Python {env.get('python')} at `{a.python}`\n"
        f"- binary: `{os.path.relpath(a.bin, ROOT)}`; budget {a.budget_s:.0f} s; "
        f"{'dry run on the CPU with tiny sizes: the numbers say nothing about speed' if a.device == 'cpu' else 'sizes as in bench/gpu_check.py PLANS[cuda]'}\n"
        f"- written section by section as measured; results.json beside this file has every number.\n"
    )


def info_section(a, rep, rf):
    """`relaxflow info`; False (and a note) when the binary does not see the device."""
    r = run([rf.bin, "info"], 60, a.device, mem=False)
    rep.record("info", {"rc": r["rc"], "out": r["out"], "err": tail(r["err"])})
    rep.add(f"## relaxflow info\n\n```text\n{(r['out'] or '').strip()}\n{tail(r['err'])}\n```\n")
    ok = r["rc"] == 0 and (a.device != "cuda" or "cuda available: true" in (r["out"] or ""))
    if not ok:
        rep.add(f"**relaxflow does not see the device `{a.device}`** (exit {r['rc']}); stopping here. Check "
                "LD_LIBRARY_PATH (scripts/gpu_check.sh sets it from the chosen Python's torch/lib) and the driver.\n")
    return ok


def tests_section(a, rep, budget):
    """Runs every CUDA-gated test binary in target/gpu-check/tests/ and tabulates the results."""
    tests = sorted(p for p in (ROOT / "target" / "gpu-check" / "tests").glob("*") if p.is_file() and os.access(p, os.X_OK))
    if not tests:
        rep.add("## CUDA-gated tests\n\nnone built (run `make gpu-prep` on the build machine to include tests/gpu.rs).\n")
        return
    rows = []
    for t in tests:
        # On the CPU dry run the CPU stands in for the GPU, so the tests' own logic runs too.
        env = dict(os.environ, RELAXFLOW_GPU_TESTS_ON_CPU="1") if a.device == "cpu" else None
        r = run([t, "--test-threads=1", "--nocapture"], budget.limit(120 * a.plan['limit_scale'], a.plan["phase_b_reserve"]), a.device, env=env, mem=False)
        summary = [l for l in (r["out"] or "").splitlines() if l.startswith("test result:")]
        failures = [l for l in (r["out"] or "").splitlines() if l.startswith("test ") and l.endswith("FAILED")]
        notes = [l for l in ((r["out"] or "") + (r["err"] or "")).splitlines() if " vs " in l or "skipped" in l]
        rows.append((t.name, status_of(r), cell(summary[-1] if summary else tail(r["err"], 2)) + "".join(f"<br>{cell(n)}" for n in notes), r["wall_s"]))
        rep.record(f"tests/{t.name}", {"status": status_of(r), "out": tail(r["out"], 40), "err": tail(r["err"], 20)})
        for f in failures:
            rows.append(("", "", cell(f), 0.0))
    text = "## CUDA-gated tests\n\n| binary | status | result | s |\n|---|---|---|---|\n"
    text += "".join(f"| {n} | {s} | {res} | {w:.0f} |\n" for n, s, res, w in rows)
    rep.add(text)


def smoke_sets(a, exp):
    """The --set overrides of an experiment's smoke run: no evaluation during training, a small final one."""
    p = a.plan
    sets = list(QUIET) + (p["image_eval"] if exp in IMAGE_EXPERIMENTS else [] if exp == "mnist-classifier" else p["toy_eval"])
    return sets + p["smoke_extra"].get(exp, [])


def smoke_row(exp, r):
    """One row of the per-family table from a smoke run's record."""
    s = r.get("summary") or {}
    if exp == "mnist-classifier":
        nll = f"acc {fmt(s.get('test_accuracy'), '.4f')}"
        kind = "classifier"
    else:
        nll, kind = fmt(s.get("test_nll_nats"), ".4g"), s.get("nll_kind", "–")
    iq = s.get("image_quality") or {}
    return (f"| {exp} | {s.get('family', '–')} | {status_of(r)} | {s.get('steps', '–')} | {fmt(s.get('steps_per_s'), '.1f')} | "
            f"{nll} | {kind} | {fmt(s.get('bits_per_dim'), '.3f')} | {fmt(s.get('sample_ms_per_1000'), '.0f')} | "
            f"{fmt(iq.get('frechet_distance'), '.1f')} | {r['wall_s']:.0f} | {mib(r['peak_mib'])} |")


def smokes_section(a, rep, rf, budget, glow_probe):
    """Every family trained a few steps and evaluated, one table row appended per run."""
    p = a.plan
    rep.add(f"## Every family on `{a.device}`: {p['smoke_steps']} steps, then the final evaluation (small)")
    rep.line("| experiment | family | status | steps | steps/s | test NLL (nats) | kind | bits/dim | sample ms/1000 | "
             "Fréchet (classifier) | wall s | peak MiB |")
    rep.line("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rep.line(smoke_row("glow-mnist", glow_probe) + " (the glow probe)")
    failures = []
    for exp in SMOKES:
        steps = p["classifier_steps"] if exp == "mnist-classifier" else p["smoke_steps"]
        out = rf.work / "runs" / exp / "gpu-check"
        r = rf.train(exp, out, smoke_sets(a, exp), budget.limit(180 * a.plan['limit_scale'], p["phase_b_reserve"]), steps=steps)
        rep.record(f"smoke/{exp}", {k: v for k, v in r.items() if k not in ("out",)} | {"err": tail(r["err"], 20)})
        keep_run(r, rep.out, f"smoke-{exp}")
        rep.line(smoke_row(exp, r))
        if status_of(r) != "ok":
            failures.append((exp, tail(r["err"], 8)))
    text = "\n"
    for exp, err in failures:
        text += f"**{exp}** failed:\n\n```text\n{err}\n```\n\n"
    rep.add(text)


def consistency_section(a, rep, rf, budget):
    """The same trained weights evaluated on the CPU and on the device: exact flows must agree."""
    run_dir = rf.work / "runs" / "realnvp-moons" / "gpu-check"
    if not (run_dir / "summary.json").exists():
        rep.add("## CPU vs device evaluation\n\nskipped: the realnvp-moons smoke run did not finish.\n")
        return
    sets = ["eval.n_samples=100"]
    here = rf.eval(run_dir, a.device, budget.limit(90 * a.plan['limit_scale'], a.plan["phase_b_reserve"]), sets)
    cpu = rf.eval(run_dir, "cpu", budget.limit(90 * a.plan['limit_scale'], a.plan["phase_b_reserve"]), sets)
    vals = [(r["json"] or {}).get("nll_nats") for r in (here, cpu)]
    rep.record("consistency", {"device_nll": vals[0], "cpu_nll": vals[1], "device_err": tail(here["err"]),
                               "cpu_err": tail(cpu["err"])})
    if None in vals:
        rep.add(f"## CPU vs device evaluation\n\nFAIL: eval did not report an NLL ({status_of(here)}, {status_of(cpu)}).\n\n"
                f"```text\n{tail(here['err'])}\n{tail(cpu['err'])}\n```\n")
        return
    diff = abs(vals[0] - vals[1])
    ok = diff <= 1e-3 * max(1.0, abs(vals[1]))
    rep.add(f"## CPU vs device evaluation (realnvp-moons smoke run, exact test NLL)\n\n"
            f"on `{a.device}`: {vals[0]:.6f} nats, on the CPU: {vals[1]:.6f} nats, |difference| {diff:.2e}: "
            f"{'ok' if ok else 'FAIL (more than 1e-3 relative)'}\n")


def parallel_section(a, rep, rf, budget):
    """Data parallelism on the device: two Gloo ranks train realnvp-moons on it (weights must stay bit-identical,
    summary.json must say 2 ranks), and, with the NCCL build (target/gpu-check/relaxflow-nccl), a group of one on the
    GPU runs dist-selftest's collectives and times its allreduce."""
    import socket

    def free_port():
        with socket.socket() as s_:
            s_.bind(("127.0.0.1", 0))
            return s_.getsockname()[1]

    limit = budget.limit(90 * a.plan["limit_scale"], a.plan["phase_b_reserve"])
    out = rf.work / "runs" / "dp-realnvp-moons"
    port = str(free_port())
    cmd = [str(rf.bin), "train", "realnvp-moons", "--device", a.device, "--out", str(out), "--steps", "50",
           "--set", "eval.n_final=500", "--set", "eval.n_samples=500", "--set", "eval.sampler_settings=[]"]
    procs, start = [], time.monotonic()
    for r in range(2):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   RELAXFLOW_DIST_TIMEOUT="60")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, limit - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        errs.append((p.returncode, err or ""))
    summary = read_run(out).get("summary") or {}
    identical = "bit-identical" in errs[0][1]
    ok = all(rc == 0 for rc, _ in errs) and identical and summary.get("world_size") == 2
    text = "## Data parallel on the device\n\n"
    text += (f"two Gloo ranks, realnvp-moons, 50 steps on `{a.device}`: {'ok' if ok else 'FAIL'} "
             f"(exit codes {[rc for rc, _ in errs]}, weights bit-identical: {identical}, world_size "
             f"{summary.get('world_size')}, test NLL {fmt(summary.get('test_nll_nats'), '.4f')}, "
             f"{fmt(summary.get('steps_per_s'), '.1f')} steps/s)\n")
    if not ok:
        text += f"\n```text\n{tail(errs[0][1])}\n{tail(errs[1][1])}\n```\n"
    rep.record("data_parallel_gloo", {"ok": ok, "summary": summary, "err": [tail(e) for _, e in errs]})
    nccl = ROOT / "target" / "gpu-check" / "relaxflow-nccl"
    if a.device != "cuda":
        text += "\nNCCL: skipped (not a CUDA run).\n"
    elif not nccl.exists():
        text += "\nNCCL: skipped (no target/gpu-check/relaxflow-nccl: `make gpu-prep` builds it when CUDA's headers are installed).\n"
    else:
        env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                   RELAXFLOW_DIST_BACKEND="nccl", RELAXFLOW_DIST_TIMEOUT="60")
        r = run([nccl, "dist-selftest", "--bench", "20"], budget.limit(60, a.plan["phase_b_reserve"]), a.device, env=env, mem=False)
        try:
            line = json.loads((r["out"] or "").splitlines()[0])
        except (IndexError, json.JSONDecodeError):
            line = {}
        good = r["rc"] == 0 and line.get("ok") is True and line.get("backend") == "nccl"
        ms = line.get("allreduce_ms_median") or {}
        text += (f"\nNCCL, a group of one on the GPU (dist-selftest): {'ok' if good else 'FAIL'}; allreduce median "
                 + ", ".join(f"{int(k):,} floats {v:.3f} ms" for k, v in sorted(ms.items(), key=lambda kv: int(kv[0]))) + "\n")
        if not good:
            text += f"\n```text\n{tail(r['err'])}\n```\n"
        rep.record("data_parallel_nccl", {"ok": good, "line": line, "err": tail(r["err"])})
    rep.add(text)


def compile_warmups(a):
    """The torch.compile measurements of phase B, each run once briefly so that Inductor's on-disk cache holds the
    compiled graphs when phase B times them."""
    jobs = []
    for case, specs, extra in phase_b_torch_jobs(a):
        compiled = [s for s in specs if "mode=compile" in s]
        if compiled and compiled_allowed(a, case):
            jobs.append((case, compiled, extra))
    return jobs


def run_warmups(a, rep, budget, jobs, results):
    """Runs each compile warm-up job in turn (called in a thread during phase A), recording its outcome."""
    for case, specs, extra in jobs:
        warm = [s + ",warmup=1,max_steps=1" for s in specs]
        recs, r = torch_case(a, case, warm, budget.limit(240 * a.plan['limit_scale'], a.plan["phase_b_reserve"]), extra)
        results.append({"case": case, "specs": specs, "status": status_of(r), "wall_s": r["wall_s"],
                        "errors": [x.get("error") for x in recs if x.get("error")], "err": tail(r["err"], 10)})


def glow_probe(a, rf, budget):
    """A short glow-mnist run that measures its steps/s (and is glow's row in the per-family table)."""
    steps, log = a.plan["glow_probe"]
    sets = QUIET + a.plan["image_eval"] + a.plan["glow_extra"] + [f"train.log_every={log}", "train.warmup=0"]
    out = rf.work / "runs" / "glow-mnist" / "probe"
    return rf.train("glow-mnist", out, sets, budget.limit(180), steps=steps)


def glow_run(a, rf, budget, probe, holder):
    """The ~5-minute glow-mnist run: as many steps as the probe's rate allows in `glow_seconds` (cosine schedule over
    them, warm-up a tenth), full test set; stopped at the limit if slower, then evaluated from its last checkpoint."""
    p = a.plan
    rate = probe.get("rate") or 1.0
    steps = max(20, int(rate * p["glow_seconds"] * p["glow_contention"]))
    sets = [f"train.warmup={min(500, steps // 10)}", f"eval.every={max(steps // 5, 1)}", "eval.n_eval=1000",
            "train.sample_every=0", f"train.checkpoint_every={max(steps // 4, 1)}", "train.log_every=50",
            "eval.n_samples=64", "eval.quality_samples=1000"] + p["glow_extra"]
    out = rf.work / "runs" / "glow-mnist" / "five-minutes"
    limit = budget.limit(p["glow_seconds"] + p["glow_eval_margin"], p["phase_b_reserve"])
    r = rf.train("glow-mnist", out, sets, limit, steps=steps)
    r["planned_steps"] = steps
    if r["summary"] is None and (out / "checkpoint.pt").exists():
        e = rf.eval(out, a.device, budget.limit(90 * a.plan['limit_scale'], p["phase_b_reserve"] * 0.5))
        r["eval_after_stop"] = e["json"]
        r["eval_err"] = tail(e["err"])
    holder["glow"] = r


def glow_section(a, rep, r):
    """The glow-mnist section: test bits/dim (or, if cut, evaluated from its checkpoint), curve, samples."""
    s = r.get("summary") or {}
    keep_run(r, rep.out, "glow-mnist")
    src = Path(r["run"]) / "samples"
    pngs = sorted(src.glob("step-*.png")) if src.is_dir() else []
    picture = ""
    if pngs:
        shutil.copy(pngs[-1], rep.out / "glow-mnist-samples.png")
        picture = "\n![glow-mnist samples](glow-mnist-samples.png)\n"
    ev = r.get("eval_after_stop") or {}
    bpd = s.get("bits_per_dim", ev.get("bits_per_dim"))
    steps = s.get("steps") or (r["metrics"][-1]["step"] if r["metrics"] else None)
    iq = s.get("image_quality") or {}
    curve = [(m["step"], m.get("test_bpd")) for m in r["metrics"] if m.get("test_bpd") is not None]
    rep.record("glow", {k: v for k, v in r.items() if k not in ("out", "metrics")} | {"err": tail(r["err"], 20)})
    rep.add(
        f"## glow-mnist, about {a.plan['glow_seconds'] / 60:.1f} minutes of training on `{a.device}`\n\n"
        f"- status: {status_of(r)}; steps: {steps} of {r.get('planned_steps')} planned (from the probe's "
        f"{fmt(r.get('probe_rate'), '.2f')} steps/s x 0.8 for sharing the GPU with phase A)\n"
        f"- **test bits/dim: {fmt(bpd, '.4f')}** ({s.get('nll_kind', ev.get('kind', '?'))}, {s.get('test_n', ev.get('n', '?'))} test images"
        f"{'' if s else ', evaluated from the last checkpoint after the time limit'}); "
        f"check through the logit space: {fmt((s.get('bits_per_dim_check') or {}).get('bits_per_dim'), '.4f')}\n"
        f"- training time {fmt(s.get('train_time_s'), '.0f')} s at {fmt(s.get('steps_per_s'), '.2f')} steps/s; "
        f"peak GPU memory {mib(r['peak_mib'])} MiB; sample Fréchet distance {fmt(iq.get('frechet_distance'), '.1f')} "
        f"(floor {fmt(iq.get('frechet_floor'), '.1f')})\n"
        f"- test bits/dim during training (1000 test images): "
        f"{', '.join(f'{k}: {v:.3f}' for k, v in curve) or '–'}\n{picture}"
        + (f"\n```text\n{tail(r['err'], 8)}\n```\n" if status_of(r) != "ok" else "")
    )


# ----------------------------------------------------------------------------------------------------------------------
# Phase B: timings

def phase_b_torch_jobs(a):
    """(case, specs, extra args) of every PyTorch measurement in phase B, in order."""
    p = a.plan
    rn = p["realnvp"]["batch"]
    b_small, b_large = (u["batch"] for u in p["unet"])
    d = p["diffflow"]
    s = p["sample"]
    jobs = [
        ("realnvp", [f"batch={rn}", f"batch={rn},adam=fused", f"batch={rn},mode=compile", f"batch={rn},mode=compile-ro"], []),
        ("unet", [f"batch={b_small}", f"batch={b_small},mode=compile", f"batch={b_large}", f"batch={b_large},dtype=bf16",
                  f"batch={b_large},mode=compile", f"batch={b_large},mode=compile,dtype=bf16"], []),
        ("diffflow", [f"batch={d['batch']}", f"batch={d['batch']},mode=compile"], ["--steps", d["n"]]),
        ("sample", [f"sampler=ddpm", f"sampler=ddim", f"sampler=diffflow", "sampler=ddpm,mode=compile",
                    "sampler=diffflow,mode=compile"],
         ["--batch", s["n"], "--timesteps", s["timesteps"], "--steps", s["diffflow_n"], "--max-steps", 1]),
    ]
    return [(case, [x for x in specs if "mode=compile" not in x or compiled_allowed(a, case)], extra)
            for case, specs, extra in jobs]


def timing_table(rep, title, note, rows, ours_label):
    """rows: (label, per_s, peak_mib, extra) ; ratios against `ours_label`."""
    ours = next((r[1] for r in rows if r[0] == ours_label), None)
    text = f"### {title}\n\n{note}\n\n| implementation | steps/s | relaxflow / this | peak GPU MiB | notes |\n|---|---|---|---|---|\n"
    for label, rate, peak, extra in rows:
        ratio = f"{ours / rate:.2f}x" if ours and rate else "–"
        text += f"| {label} | {fmt(rate, '.2f')} | {ratio} | {peak} | {extra} |\n"
    rep.add(text)


def torch_rows(recs, label_of):
    """Table rows from bench/gpu_models.py records (errors shown as such)."""
    rows = []
    for x in recs:
        if x.get("error"):
            rows.append((label_of(x), None, "–", cell(f"error: {x['error'][:160]}")))
            continue
        peak = f"{x['peak_allocated_mib']:.0f} alloc / {x['peak_reserved_mib']:.0f} reserved" if "peak_allocated_mib" in x else "–"
        rows.append((label_of(x), x["per_s"], peak, f"{x['timed_calls']} timed after {x['warmup_s']:.1f} s warm-up"))
    return rows


def torch_label(x):
    """A PyTorch measurement's label: mode, bf16, fused Adam."""
    parts = ["PyTorch " + {"eager": "eager", "compile": "torch.compile", "compile-ro": "torch.compile reduce-overhead"}[x["mode"]]]
    if x.get("dtype") == "bf16":
        parts.append("bf16 autocast")
    if x.get("adam") == "fused":
        parts.append("Adam(fused=True)")
    return ", ".join(parts)


def rf_row(label, r):
    """A table row from a relaxflow timing run."""
    return (label, r.get("rate"), mib(r["peak_mib"]) + " (process)",
            f"{status_of(r)}; intervals {', '.join(f'{v:.1f}' for v in r.get('interval_rates', []))}")


def timing_quiet(extra=(), sampler_settings="[]"):
    """Overrides of a timing run: constant learning rate, no evaluation or pictures during training."""
    return ["train.lr_schedule=constant", "train.warmup=0", "eval.every=0", "train.sample_every=0",
            f"eval.sampler_settings={sampler_settings}"] + list(extra)


def phase_b(a, rep, rf, budget):
    """Phase B: the timings, each measurement under its own limit; returns the numbers for the goals table."""
    p = a.plan
    timing_runs = rf.work / "timing-runs"  # no classifier there: no image-quality sampling in the timing runs
    jobs = {case: (specs, extra) for case, specs, extra in phase_b_torch_jobs(a)}
    reserve = 10.0
    rep.add(f"## Phase B: training and sampling speed on `{a.device}` (relaxflow vs PyTorch, same script)\n\n"
            "relaxflow's steps/s is the median over its logged intervals after the first (training steps only, as "
            "`metrics.jsonl` records them); PyTorch's is timed after its warm-up (compilation included there). "
            "Peak memory: relaxflow's whole process as nvidia-smi sees it (CUDA context included); PyTorch's "
            "caching allocator (allocated / reserved) per measurement.\n")
    results = {}

    # 2D RealNVP.
    rn = p["realnvp"]
    sets = timing_quiet([f"train.batch_size={rn['batch']}", f"train.log_every={rn['log']}",
                         f"train.checkpoint_every={rn['steps']}", "eval.n_samples=200", "eval.grid=16"])
    r_flat = rf.train("realnvp-moons", timing_runs / "realnvp-flat", sets, budget.limit(90 * a.plan['limit_scale'], reserve), steps=rn["steps"])
    r_fused = rf.train("realnvp-moons", timing_runs / "realnvp-fused", sets + ['train.optimizer_impl="fused"'],
                       budget.limit(90 * a.plan['limit_scale'], reserve), steps=rn["steps"])
    # The whole step captured as a CUDA graph (train.cuda_graph) needs the build with the feature `cuda-graphs`
    # (target/gpu-check/relaxflow-nccl, built by `make gpu-prep` where CUDA's headers are).
    graph_bin = ROOT / "target" / "gpu-check" / "relaxflow-nccl"
    r_graph = {"rate": None, "peak_mib": None, "err": "no target/gpu-check/relaxflow-nccl (built with cuda-graphs by make gpu-prep)"}
    if graph_bin.exists() and a.device == "cuda":
        r_graph = Relaxflow(graph_bin, rf.device, rf.work).train(
            "realnvp-moons", timing_runs / "realnvp-graph", sets + ["train.cuda_graph=true"],
            budget.limit(90 * a.plan['limit_scale'], reserve), steps=rn["steps"])
        modes = [m.get("cuda_graph") for m in (r_graph.get("metrics") or [])]
        r_graph["replayed"] = bool(modes) and modes[-1] == "replayed"
    recs, pr = torch_case(a, "realnvp", jobs["realnvp"][0], budget.limit(180 * a.plan['limit_scale'], reserve), jobs["realnvp"][1])
    rows = [rf_row("relaxflow (flat Adam)", r_flat), rf_row("relaxflow (fused Adam, train.optimizer_impl = \"fused\")", r_fused),
            rf_row(f"relaxflow, train.cuda_graph = true ({'replayed' if r_graph.get('replayed') else 'NOT replayed'})", r_graph)
            if "peak_mib" in r_graph and r_graph.get("rate") is not None else ("relaxflow, train.cuda_graph = true", None, "", tail(str(r_graph.get("err"))))]
    rows += torch_rows(recs, torch_label)
    results["realnvp"] = {"relaxflow": r_flat.get("rate"), "relaxflow_fused": r_fused.get("rate"), "relaxflow_graph": r_graph.get("rate"),
                          "graph_replayed": r_graph.get("replayed"), "torch": recs, "torch_status": status_of(pr)}
    rep.record("timing/realnvp", results["realnvp"] | {"rf_err": tail(r_flat["err"]), "torch_err": tail(pr["err"], 10)})
    timing_table(rep, f"2D RealNVP training step (realnvp-moons, batch {rn['batch']})",
                 f"relaxflow {rn['steps']} steps, logged every {rn['log']}; params {((r_flat.get('summary') or {}).get('params'))} "
                 f"(PyTorch {recs[0]['params'] if recs and 'params' in recs[0] else '?'})", rows, "relaxflow (flat Adam)")

    # ddpm-mnist U-Net.
    unet_specs, _ = jobs["unet"]
    recs, pr = torch_case(a, "unet", unet_specs, budget.limit(300 * a.plan['limit_scale'], reserve))
    results["unet"] = {"torch": recs, "torch_status": status_of(pr)}
    for u in p["unet"]:
        b = u["batch"]
        sets = timing_quiet([f"train.batch_size={b}", f"train.log_every={u['log']}", f"train.checkpoint_every={u['steps']}",
                             "model.timesteps=10", "eval.n_final=2", "eval.n_samples=2"])
        r = rf.train("ddpm-mnist", timing_runs / f"unet-{b}", sets, budget.limit(120 * a.plan['limit_scale'], reserve), steps=u["steps"],
                     runs=timing_runs)
        results["unet"][f"relaxflow_{b}"] = r.get("rate")
        rows = [rf_row("relaxflow", r)]
        if b == p["unet"][-1]["batch"]:
            # The large batch also with the image networks under bf16 autocast (train.precision = "bf16").
            r16 = rf.train("ddpm-mnist", timing_runs / f"unet-{b}-bf16", sets + ['train.precision="bf16"'],
                           budget.limit(120 * a.plan['limit_scale'], reserve), steps=u["steps"], runs=timing_runs)
            results["unet"][f"relaxflow_{b}_bf16"] = r16.get("rate")
            rows.append(rf_row('relaxflow, train.precision = "bf16"', r16))
            # ... and with the convolution weights (so the activations) channels-last (train.channels_last).
            r16cl = rf.train("ddpm-mnist", timing_runs / f"unet-{b}-bf16-cl", sets + ['train.precision="bf16"', "train.channels_last=true"],
                             budget.limit(120 * a.plan['limit_scale'], reserve), steps=u["steps"], runs=timing_runs)
            results["unet"][f"relaxflow_{b}_bf16_cl"] = r16cl.get("rate")
            rows.append(rf_row('relaxflow, bf16 and train.channels_last = true', r16cl))
        rows += torch_rows([x for x in recs if x.get("batch") == b], torch_label)
        rep.record(f"timing/unet-{b}", {"relaxflow": r.get("rate"), "rf_err": tail(r["err"]), "torch_err": tail(pr["err"], 10)})
        timing_table(rep, f"ddpm-mnist U-Net training step, batch {b}",
                     f"L_simple, clipping at 1, Adam; relaxflow {u['steps']} steps logged every {u['log']} "
                     f"(model.timesteps=10 only shortens its final evaluation; the step does not depend on T); "
                     f"params {(r.get('summary') or {}).get('params')} (PyTorch {recs[0].get('params') if recs else '?'}); "
                     f"images/s = steps/s x {b}", rows, "relaxflow")
    rep.record("timing/unet", results["unet"])

    # DiffFlow MNIST step.
    d = p["diffflow"]
    sets = timing_quiet([f"train.batch_size={d['batch']}", f"train.log_every={d['log']}", f"train.checkpoint_every={d['steps']}",
                         "model.steps_schedule=[]", f"model.steps={d['n']}", 'model.likelihood="elbo"', "eval.n_final=2",
                         "eval.n_samples=2", "model.sample_steps=2"])
    r_rec = rf.train("diffflow-mnist", timing_runs / "diffflow-recompute", sets, budget.limit(150 * a.plan['limit_scale'], reserve),
                     steps=d["steps"], runs=timing_runs)
    recs, pr = torch_case(a, "diffflow", jobs["diffflow"][0], budget.limit(240 * a.plan['limit_scale'], reserve), jobs["diffflow"][1])
    r_full = rf.train("diffflow-mnist", timing_runs / "diffflow-full", sets + ['model.backprop="full"'],
                      budget.limit(150 * a.plan['limit_scale'], reserve), steps=d["steps"], runs=timing_runs)
    rows = [rf_row("relaxflow, backprop = recompute (the experiment's)", r_rec), rf_row("relaxflow, backprop = full", r_full)]
    rows += torch_rows(recs, lambda x: torch_label(x) + ", full autograd")
    results["diffflow"] = {"relaxflow_recompute": r_rec.get("rate"), "relaxflow_full": r_full.get("rate"), "torch": recs}
    rep.record("timing/diffflow", results["diffflow"] | {"rf_err": tail(r_rec["err"]), "torch_err": tail(pr["err"], 10)})
    timing_table(rep, f"DiffFlow MNIST training step (N = {d['n']}, batch {d['batch']})",
                 "two U-Nets (drift, score); relaxflow's grid is randomized per step as in diffflow-mnist, PyTorch's fixed "
                 "(same cost)", rows, "relaxflow, backprop = recompute (the experiment's)")

    # Sampling.
    s = p["sample"]
    n = s["n"]
    ddim = f"[['model.sampler=\"ddim\"', 'model.ddim_steps={s['ddim']}']]"
    r_ddpm = rf.train("ddpm-mnist", timing_runs / "sample-ddpm", timing_quiet([
        f"model.timesteps={s['timesteps']}", "eval.n_final=1", f"eval.n_samples={n}", f"eval.batch_size={n}"], ddim),
        budget.limit(150 * a.plan['limit_scale'], reserve), steps=1, runs=timing_runs)
    r_df = rf.train("diffflow-mnist", timing_runs / "sample-diffflow", timing_quiet([
        'model.likelihood="elbo"', "eval.n_final=1", f"eval.n_samples={n}", f"eval.batch_size={n}",
        f"model.steps={s['diffflow_n']}", "model.steps_schedule=[]"]), budget.limit(90 * a.plan['limit_scale'], reserve), steps=1, runs=timing_runs)
    recs, pr = torch_case(a, "sample", jobs["sample"][0], budget.limit(240 * a.plan['limit_scale'], reserve), jobs["sample"][1])
    samp = {}
    for label, r, idx in [(f"DDPM ancestral, {s['timesteps']} steps", r_ddpm, 0), (f"DDIM, {s['ddim']} steps", r_ddpm, 1),
                          (f"DiffFlow SDE, N = {s['diffflow_n']}", r_df, 0)]:
        sm = ((r.get("summary") or {}).get("sampling") or [])
        samp[label] = sm[idx]["ms_per_1000"] if len(sm) > idx else None
    text = (f"### Sampling throughput ({n} samples per call, 28x28)\n\nms per 1000 samples (lower is better); relaxflow from "
            "its final evaluation's sampler timing (warm-up draw excluded), PyTorch timed after one warm-up call.\n\n"
            "| sampler | relaxflow ms/1000 | PyTorch eager | torch.compile | relaxflow NFE |\n|---|---|---|---|---|\n")
    tmap = {"ddpm": f"DDPM ancestral, {s['timesteps']} steps", "ddim": f"DDIM, {s['ddim']} steps",
            "diffflow": f"DiffFlow SDE, N = {s['diffflow_n']}"}
    torch_ms = {}
    for x in recs:
        if "ms_per_1000" in x:
            torch_ms[(tmap[x["sampler"]], x["mode"])] = x["ms_per_1000"]
    nfe = {tmap["ddpm"]: s["timesteps"], tmap["ddim"]: s["ddim"], tmap["diffflow"]: 2 * s["diffflow_n"]}
    for label in tmap.values():
        text += (f"| {label} | {fmt(samp.get(label), '.0f')} | {fmt(torch_ms.get((label, 'eager')), '.0f')} | "
                 f"{fmt(torch_ms.get((label, 'compile')), '.0f')} | {nfe[label]} |\n")
    ddpm_ms, df_ms = samp.get(tmap["ddpm"]), samp.get(tmap["diffflow"])
    if ddpm_ms and df_ms:
        text += f"\nrelaxflow DiffFlow (N = {s['diffflow_n']}) samples {ddpm_ms / df_ms:.1f}x faster than its DDPM ({s['timesteps']} steps).\n"
    torch_mem = ", ".join(f"{x['sampler']} {x['mode']}: {x['peak_allocated_mib']:.0f} MiB allocated"
                          for x in recs if "peak_allocated_mib" in x)
    text += (f"\nPeak process memory: relaxflow DDPM run {mib(r_ddpm['peak_mib'])} MiB, DiffFlow run {mib(r_df['peak_mib'])} MiB; "
             f"PyTorch {torch_mem or '–'}\n")
    # `relaxflow sample` of the DDPM run in 4 blocks of n, eagerly and replaying a captured sampler (train.cuda_graph;
    # the build with the feature `cuda-graphs`): wall time of the whole command (loading included).
    graph_bin = ROOT / "target" / "gpu-check" / "relaxflow-nccl"
    ddpm_run = timing_runs / "sample-ddpm"
    graphed = {}
    if a.device == "cuda" and graph_bin.exists() and (ddpm_run / "checkpoint.pt").exists():
        for label, binary, extra in [("eager", rf.bin, []), ("cuda_graph", graph_bin, ["--set", "train.cuda_graph=true"])]:
            cmd = [binary, "sample", ddpm_run, "-n", str(4 * n), "--out", rf.work / f"sample-{label}.npy", "--device", a.device,
                   "--set", f"eval.batch_size={n}"] + extra
            start = time.monotonic()
            r = run(cmd, budget.limit(120 * a.plan['limit_scale'], reserve), a.device, mem=False)
            graphed[label] = {"rc": r["rc"], "wall_s": time.monotonic() - start, "err": tail(r["err"], 4)}
        e, g = graphed["eager"], graphed["cuda_graph"]
        text += (f"\n`relaxflow sample` of the DDPM run ({s['timesteps']} steps), 4 blocks of {n}, whole command: eager "
                 f"{e['wall_s']:.1f} s (rc {e['rc']}), train.cuda_graph {g['wall_s']:.1f} s (rc {g['rc']}; "
                 f"{'replayed' if 'replayed a captured CUDA graph' in g['err'] else 'NOT replayed: ' + g['err']}).\n")
    results["sampling"] = {"relaxflow_ms_per_1000": samp, "torch_ms_per_1000": {f"{k[0]} / {k[1]}": v for k, v in torch_ms.items()},
                           "sample_command_graph": graphed}
    rep.record("timing/sampling", results["sampling"] | {"rf_err": tail(r_ddpm["err"]) + tail(r_df["err"]),
                                                         "torch_err": tail(pr["err"], 10)})
    rep.add(text)
    return results


def goals_section(a, rep, results, glow):
    """The issue's goals next to this run's numbers."""
    def torch_rate(case, **want):
        for x in results.get(case, {}).get("torch", []):
            if all(x.get(k) == v for k, v in want.items()) and "per_s" in x:
                return x["per_s"]
        return None

    def ratio(a_, b_):
        return f"{a_ / b_:.2f}x" if a_ and b_ else "–"

    p = a.plan
    b_small, b_large = (u["batch"] for u in p["unet"])
    rn = results.get("realnvp", {})
    un = results.get("unet", {})
    df = results.get("diffflow", {})
    gs = (glow or {}).get("summary") or {}
    samp = results.get("sampling", {}).get("relaxflow_ms_per_1000", {})
    ddpm_ms = next((v for k, v in samp.items() if k.startswith("DDPM")), None)
    df_ms = next((v for k, v in samp.items() if k.startswith("DiffFlow")), None)
    rows = [
        ("2D RealNVP step >= 5x PyTorch eager (CUDA graphs: train.cuda_graph)", ratio(rn.get("relaxflow_graph"), torch_rate("realnvp", mode="eager", adam="default"))),
        ("2D RealNVP step without graphs vs PyTorch eager", ratio(rn.get("relaxflow"), torch_rate("realnvp", mode="eager", adam="default"))),
        ("2D RealNVP step, fused Adam, vs PyTorch eager Adam(fused=True)", ratio(rn.get("relaxflow_fused"), torch_rate("realnvp", mode="eager", adam="fused"))),
        (f"U-Net batch {b_small} >= PyTorch eager", ratio(un.get(f"relaxflow_{b_small}"), torch_rate("unet", mode="eager", batch=b_small, dtype="fp32"))),
        (f"U-Net batch {b_large} >= torch.compile bf16 (relaxflow fp32)", ratio(un.get(f"relaxflow_{b_large}"), torch_rate("unet", mode="compile", batch=b_large, dtype="bf16"))),
        (f"U-Net batch {b_large} >= torch.compile bf16 (relaxflow bf16)", ratio(un.get(f"relaxflow_{b_large}_bf16"), torch_rate("unet", mode="compile", batch=b_large, dtype="bf16"))),
        (f"U-Net batch {b_large} >= torch.compile bf16 (relaxflow bf16, channels-last)", ratio(un.get(f"relaxflow_{b_large}_bf16_cl"), torch_rate("unet", mode="compile", batch=b_large, dtype="bf16"))),
        ("DiffFlow MNIST step >= PyTorch eager", ratio(df.get("relaxflow_recompute"), torch_rate("diffflow", mode="eager"))),
        ("DiffFlow sampling >= 20x faster than DDPM 1000 steps (speed only; equal quality needs trained models)",
         ratio(ddpm_ms, df_ms)),
        (f"glow-mnist <= 1.25 bits/dim within 10 min (here {a.plan['glow_seconds']:.0f} s of training)",
         f"{fmt(gs.get('bits_per_dim'), '.3f')} bits/dim after {fmt(gs.get('train_time_s'), '.0f')} s"),
    ]
    rep.record("goals", dict(rows))
    rep.add("## The issue's goals against this run\n\n| goal | this run |\n|---|---|\n" + "".join(f"| {g} | {v} |\n" for g, v in rows)
            + ("\n(a CPU dry run: these ratios say nothing)\n" if a.device == "cpu" else ""))


# ----------------------------------------------------------------------------------------------------------------------

def find_commit(explicit):
    """The commit to name: --commit, $RELAXFLOW_COMMIT, target/gpu-check/COMMIT, git, else unknown."""
    if explicit:
        return explicit
    if os.environ.get("RELAXFLOW_COMMIT"):
        return os.environ["RELAXFLOW_COMMIT"]
    f = ROOT / "target" / "gpu-check" / "COMMIT"
    if f.exists():
        return f.read_text().strip()
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def find_binary(explicit):
    """The relaxflow binary: --bin, target/gpu-check/relaxflow, target/release/relaxflow."""
    for c in [explicit, ROOT / "target" / "gpu-check" / "relaxflow", ROOT / "target" / "release" / "relaxflow"]:
        if c and Path(c).is_file():
            return Path(c).resolve()
    sys.exit("gpu-check: no relaxflow binary (target/gpu-check/relaxflow or target/release/relaxflow); build it with "
             "`make gpu-prep` on the build machine and carry target/gpu-check over")


def main():
    """Parses the command line and runs the check, phase A then phase B."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a dry run with tiny sizes")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "out" / "gpu-check"),
                    help="report folder (default $OUT, else bench/out/gpu-check)")
    ap.add_argument("--commit", default=None, help="commit to name in the report (default: $RELAXFLOW_COMMIT, "
                    "target/gpu-check/COMMIT written by `make gpu-prep`, else git)")
    ap.add_argument("--bin", default=None)
    ap.add_argument("--python", default=sys.executable, help="the Python with torch for the references")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole check (cuda 480, cpu 3600)")
    ap.add_argument("--glow-seconds", type=float, default=None, help="glow-mnist training seconds (cuda 240)")
    ap.add_argument("--compile", default=None, help="torch.compile cases: all, none, or a list (cuda all, cpu realnvp)")
    ap.add_argument("--work", default=None, help="scratch folder for run folders (default: a fresh temporary one)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: tests,smokes,consistency,parallel,glow,timing")
    a = ap.parse_args()
    a.plan = dict(PLANS[a.device])
    if a.glow_seconds is not None:
        a.plan["glow_seconds"] = a.glow_seconds
    if a.compile is not None:
        a.plan["compile"] = a.compile
    a.budget_s = a.budget or a.plan["budget"]
    a.commit = find_commit(a.commit)
    a.bin = find_binary(a.bin)
    skip = set(filter(None, a.skip.split(",")))
    budget = Budget(a.budget_s)
    rep = Report(Path(a.out))
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="relaxflow-gpu-check-"))
    rf = Relaxflow(a.bin, a.device, work)
    timeline = []

    def mark(name):
        timeline.append((name, round(budget.elapsed(), 1)))
        rep.record("timeline", timeline)

    header(a, rep)
    mark("header")
    if not info_section(a, rep, rf):
        sys.exit(1)
    mark("info")
    if "tests" not in skip:
        tests_section(a, rep, budget)
        mark("tests")

    # Phase A: the glow run in the background; smokes, consistency and compile warm-ups meanwhile.
    holder, threads, warm_results = {}, [], []
    probe = None
    if "glow" not in skip:
        probe = glow_probe(a, rf, budget)
        mark("glow probe")
        if probe["rc"] == 0 and probe.get("rate"):
            t = threading.Thread(target=glow_run, args=(a, rf, budget, probe, holder), daemon=True)
            t.start()
            threads.append(t)
        else:
            rep.add(f"## glow-mnist\n\nthe probe failed ({status_of(probe)}); no glow run.\n\n```text\n{tail(probe['err'], 8)}\n```\n")
    warm_jobs = compile_warmups(a) if "timing" not in skip else []
    if warm_jobs:
        t = threading.Thread(target=run_warmups, args=(a, rep, budget, warm_jobs, warm_results), daemon=True)
        t.start()
        threads.append(t)
    if "smokes" not in skip:
        smokes_section(a, rep, rf, budget, probe or {"rc": None, "skipped": True, "wall_s": 0, "timed_out": False, "peak_mib": None})
        mark("smokes")
    if "consistency" not in skip:
        consistency_section(a, rep, rf, budget)
        mark("consistency")
    if "parallel" not in skip:
        parallel_section(a, rep, rf, budget)
        mark("parallel")
    for t in threads:
        t.join(timeout=max(1.0, budget.left() - 5))
    if warm_jobs:
        rep.record("compile_warmups", warm_results)
        rep.add("## torch.compile warm-ups (phase A, to fill Inductor's cache)\n\n"
                + "".join(f"- {w['case']}: {w['status']} in {w['wall_s']:.0f} s ({len(w['specs'])} settings)"
                          f"{'; errors: ' + '; '.join(e[:200] for e in w['errors']) if w['errors'] else ''}\n" for w in warm_results))
    glow = holder.get("glow")
    if glow is not None:
        glow["probe_rate"] = probe.get("rate")
        glow_section(a, rep, glow)
    mark("phase A")

    results = {}
    if "timing" not in skip:
        results = phase_b(a, rep, rf, budget)
        mark("phase B")
    goals_section(a, rep, results, glow)
    mark("end")
    rep.add(f"---\nfinished in {budget.elapsed():.0f} s of a {a.budget_s:.0f} s budget; section times (s from start): "
            + ", ".join(f"{n} {t}" for n, t in timeline) + f". Run folders: `{work}`.\n")


if __name__ == "__main__":
    main()
