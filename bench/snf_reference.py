"""Reference run of the SNF paper's double-well "RNVP + MC" and "RNVP" rows, using the paper's own code.

Runs the pipeline of experiment1_doublewell.ipynb from noegroup/stochastic_normalizing_flows (Wu, Koehler, Noe,
"Stochastic Normalizing Flows", NeurIPS 2020): the model `boltzmann_generator_RNVP_MC(prior, target, n_transform=3,
shift_nhidden=[64, 64], scale_nhidden=[64, 64], nrelax=20, stepsize=0.25, stochastic=True, diffuse_at_0=True)` for
`--model rnvp_mc` (notebook "RNVP + MC unbiased" cell) or the same call with `stochastic=False` for `--model rnvp`
("RNVP unbiased" cell), trained and scored by the notebook's own `train_and_analyze` / `bias_uncertainty` on
`x_brute[::10]` from its GaussianMCMCSampler chain, once per seed, and writes the free-energy errors per training.

None of the paper's code is in this file. The paper's packages (`bgtorch`, `snf_code`) are imported from a checkout of
its repository, and the notebook cells this run needs (imports, `prior`/`target`, the `x_brute` chain,
`bias_uncertainty`, `train_and_analyze`) are read from the notebook JSON at run time and executed, found by matching
their source text. Everything else here (seeding, the loop over trainings, diagnostics, output) is relaxflow's.

Usage:
    python bench/snf_reference.py [--paper-repo DIR] [--model rnvp_mc|rnvp] [--seeds 0 1 ... 9] [--out FILE.jsonl]

    DIR is an extracted checkout of https://github.com/noegroup/stochastic_normalizing_flows (for instance
    `git clone https://github.com/noegroup/stochastic_normalizing_flows`). Without --paper-repo, the bare mirror
    /work/.mirror/noegroup+stochastic_normalizing_flows/repo is extracted into a temporary directory if it exists.
    On one CPU thread the x_brute chain takes 40-90 s and one training about 2 minutes (rnvp_mc) or 40 s (rnvp);
    the notebook runs 10 trainings (the default here, seeds 0-9).

Output: one JSON line per training (keys model, seed, bias, unc, bias_rw, unc_rw, combined_raw, combined_rw, stat_eff,
test_nll, log_z_exact, time_train_eval_s, time_total_s, final_losses, acceptance, ess_per_1000, logw_std,
mode_weight_raw, mode_weight_rw, log_z_est), then one summary line with the mean and standard deviation (numpy's,
ddof = 0, as the notebook prints) over the trainings. `combined_*` is sqrt(bias^2 + unc^2), the notebook's
"bias**2+std**2" / "reweighted" rows. Results are recorded in docs/snf-reference.md.

Compatibility notes (nothing in the paper's checkout is edited):
  * snf_code/flowtools.py imports `nflows` at import time, but only its NSF flows use it. If `nflows` is not
    installed, a stub package is written to a temporary directory; its two functions raise if they are ever called.
  * matplotlib is not needed: matplotlib imports and plotting cells are not executed (they do not affect the numbers);
    IPython magics (`%autoreload`) are dropped.
  * The notebook never seeds. Here the x_brute chain is drawn once with torch.manual_seed(1000) and
    np.random.seed(1000), and training i runs after torch.manual_seed(i) and np.random.seed(i). Diagnostics run after
    the notebook's evaluation with torch.manual_seed(10000 + i), so they do not change the notebook's numbers.
  * Single-threaded (OMP_NUM_THREADS=1, torch.set_num_threads(1)), so a seed gives the same numbers on a given build.
  * Tested with torch 2.11 and numpy 2.4; the notebook's `E_target - E_mean` (torch tensor minus numpy array) only
    emits a numpy-2 DeprecationWarning.
  * Diagnostics (not in the notebook), computed with the library's public objects only: `stat_eff` is what the
    notebook's `statistical_efficiency` returns (mean of exp(logw - max logw), not an ESS); `final_losses` are the
    means of the last 50 recorded values of each loss of the last training phase; ESS per 1000 samples (Kish),
    std of log w, P(x1 < 0) raw and reweighted and log Z estimates come from 3 x 100,000 samples; Metropolis
    acceptance per MC block is measured by running each MetropolisMCFlow block one step at a time (nsteps = 1, same
    random-number stream) and counting the samples that moved; test NLL (an upper bound for the SNF) is bg.energy on
    20,000 exact double-well samples.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import ast
import importlib.util
import io
import json
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

NOTEBOOK = "experiment1_doublewell.ipynb"
MIRROR = "/work/.mirror/noegroup+stochastic_normalizing_flows/repo"
CLONE_HINT = "git clone https://github.com/noegroup/stochastic_normalizing_flows"
# Paths of the paper's repository this run needs (the full tree holds LFS data files the mirror lacks).
NEEDED = ["bgtorch", "snf_code", NOTEBOOK]

# Notebook arguments of the two rows (cells "# RNVP unbiased" and "# RNVP + MC unbiased").
MODEL_KWARGS = {
    "rnvp_mc": dict(n_transform=3, shift_nhidden=[64, 64], scale_nhidden=[64, 64],
                    nrelax=20, stepsize=0.25, stochastic=True, diffuse_at_0=True),
    "rnvp": dict(n_transform=3, shift_nhidden=[64, 64], scale_nhidden=[64, 64], stochastic=False),
}
STAT_KEYS = ["bias", "unc", "bias_rw", "unc_rw", "combined_raw", "combined_rw"]


def fail(msg):
    sys.exit(f"snf_reference: {msg}")


# ------------------------------------------------------------------------------------------------ paper checkout
def extract_mirror(tmp):
    """Extract the needed paths of the mirror's HEAD into tmp/paper; return that directory."""
    dest = os.path.join(tmp, "paper")
    os.makedirs(dest)
    proc = subprocess.run(["git", "--git-dir", MIRROR, "archive", "--format=tar", "HEAD", *NEEDED],
                          capture_output=True)
    if proc.returncode != 0:
        fail(f"`git archive` of {MIRROR} failed: {proc.stderr.decode(errors='replace').strip()}\n"
             f"Get the paper's repository with `{CLONE_HINT}` and pass --paper-repo DIR.")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    print(f"extracted {MIRROR} (HEAD: {', '.join(NEEDED)}) to {dest}", flush=True)
    return dest


def locate_paper_repo(arg, tmp):
    if arg is None:
        if not os.path.isdir(MIRROR):
            fail(f"--paper-repo not given and no mirror at {MIRROR}.\n"
                 f"Get the paper's repository with `{CLONE_HINT}` and pass --paper-repo DIR.")
        arg = extract_mirror(tmp)
    repo = os.path.abspath(arg)
    missing = [p for p in NEEDED if not os.path.exists(os.path.join(repo, p))]
    if missing:
        fail(f"{repo} is not a checkout of the SNF paper's repository (missing {', '.join(missing)}).\n"
             f"Get it with `{CLONE_HINT}`.")
    return repo


def write_nflows_stub(tmp):
    """snf_code.flowtools imports nflows' spline functions at module level (NSF only): stub them if absent."""
    if importlib.util.find_spec("nflows") is not None:
        return None
    root = os.path.join(tmp, "shim")
    pkg = os.path.join(root, "nflows", "transforms", "splines")
    os.makedirs(pkg)
    for d in ["nflows", "nflows/transforms", "nflows/transforms/splines"]:
        with open(os.path.join(root, d, "__init__.py"), "w") as f:
            f.write("# relaxflow stub (bench/snf_reference.py)\n")
    with open(os.path.join(pkg, "rational_quadratic.py"), "w") as f:
        f.write("# relaxflow stub: only NSF flows use these, the RNVP runs never call them.\n")
        for name in ["rational_quadratic_spline", "unconstrained_rational_quadratic_spline"]:
            f.write(f"def {name}(*args, **kwargs):\n"
                    f"    raise NotImplementedError('nflows stub: install nflows to use NSF flows')\n")
    return root


# ------------------------------------------------------------------------------------------------ notebook cells
def strip_magics(src):
    return "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))


def load_cells(path):
    with open(path) as f:
        nb = json.load(f)
    cells = []
    for c in nb["cells"]:
        if c.get("cell_type") == "code":
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            cells.append(strip_magics(src))
    return cells


def find_cell(cells, *needles):
    """The one code cell whose source contains all needles (clear error if none or several)."""
    hits = [c for c in cells if all(n in c for n in needles)]
    if len(hits) != 1:
        fail(f"{NOTEBOOK}: expected one code cell containing {needles}, found {len(hits)}; "
             f"this script follows the notebook as of commit c71b397 (2020-10-21, unchanged since).")
    return hits[0]


def exec_import_cells(cells, ns):
    """Execute the import statements of the notebook's import-only cells, skipping matplotlib."""
    failed = []
    for src in cells:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        if not tree.body or not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body):
            continue
        for node in tree.body:
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(m.split(".")[0] == "matplotlib" for m in mods):
                continue
            try:
                exec(compile(ast.Module(body=[node], type_ignores=[]), NOTEBOOK, "exec"), ns)
            except ImportError as e:
                failed.append(f"{ast.unparse(node)}: {e}")
    for f in failed:
        print(f"warning: notebook import failed (not needed unless a later NameError says so): {f}", flush=True)


def exec_cell(src, ns, defines):
    exec(compile(src, NOTEBOOK, "exec"), ns)
    for name in defines:
        if name not in ns:
            fail(f"{NOTEBOOK}: the cell executed for {name!r} did not define it")


# ------------------------------------------------------------------------------------------------ diagnostics
def exact_samples(n, rng):
    """Exact samples of u(x) = x1^4 - 6 x1^2 - 0.5 x1 + x2^2/2 (inverse CDF on a grid for x1, normal x2) and log Z."""
    import numpy as np
    import torch
    g = np.linspace(-4, 4, 400001)
    u = g ** 4 - 6 * g ** 2 - 0.5 * g
    p = np.exp(-(u - u.min()))
    c = np.cumsum(p)
    c /= c[-1]
    x1 = np.interp(rng.uniform(size=n), c, g)
    x = torch.tensor(np.stack([x1, rng.normal(size=n)], 1), dtype=torch.float32)
    return x, float(np.log(np.trapezoid(np.exp(-u), g)) + 0.5 * np.log(2 * np.pi))


def diagnostics(bg, prior, target, mc_class, n=100_000, repeats=3):
    """Sample the trained generator block by block (MC blocks one step at a time, to count moves)."""
    import numpy as np
    import torch
    out = {k: [] for k in ["ess_per_1000", "logw_std", "mode_weight_raw", "mode_weight_rw", "log_z_est"]}
    acc_all = []
    with torch.no_grad():
        for _ in range(repeats):
            z = prior.sample(n)
            xs = [z]
            dlogp = torch.zeros(n, 1)
            accs = []
            for block in bg.flow._blocks:
                if isinstance(block, mc_class):
                    (x,) = xs
                    nsteps, moved = block.nsteps, []
                    try:
                        block.nsteps = 1
                        for _ in range(nsteps):
                            x_new, dd = block(x)
                            moved.append((x_new != x).any(dim=1).double().mean().item())
                            x = x_new
                            dlogp += dd
                    finally:
                        block.nsteps = nsteps
                    xs = [x]
                    accs.append(float(np.mean(moved)))
                else:
                    *xs, dd = block(*xs)
                    dlogp += dd
            (y,) = xs
            acc_all.append(accs)
            # log w = -u(x) + u_Z(z) + sum dS; with the normalised prior add log(2 pi) (d = 2) for log Z.
            logw = (dlogp[:, 0] - target.energy(y)[:, 0] + prior.energy(z)[:, 0]).double()
            a, b = torch.logsumexp(logw, 0).item(), torch.logsumexp(2 * logw, 0).item()
            out["ess_per_1000"].append(float(np.exp(2 * a - b) / n * 1000))
            out["logw_std"].append(logw.std().item())
            left = (y[:, 0] < 0).double()
            out["mode_weight_raw"].append(left.mean().item())
            out["mode_weight_rw"].append((left * torch.softmax(logw, 0)).sum().item())
            out["log_z_est"].append((torch.logsumexp(logw + np.log(2 * np.pi), 0) - np.log(n)).item())
    out["acceptance"] = np.mean(acc_all, axis=0).tolist() if acc_all and acc_all[0] else []
    return out


# ------------------------------------------------------------------------------------------------ driver
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper-repo", default=None, help="extracted checkout of noegroup/stochastic_normalizing_flows")
    ap.add_argument("--model", choices=sorted(MODEL_KWARGS), default="rnvp_mc")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--data-seed", type=int, default=1000)
    ap.add_argument("--out", default=None, help="JSON lines file (default: snf_reference_<model>.jsonl)")
    ap.add_argument("--no-diagnostics", action="store_true", help="only the notebook's numbers")
    args = ap.parse_args()

    # a temporary directory for the extracted checkout and the nflows stub, removed on exit (also on SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="snf_reference_") as tmp:
        run(args, tmp)


def run(args, tmp):
    repo = locate_paper_repo(args.paper_repo, tmp)
    stub = write_nflows_stub(tmp)
    sys.path[:0] = [os.path.join(repo, "bgtorch"), os.path.join(repo, "snf_code")] + ([stub] if stub else [])

    import numpy as np
    import torch
    torch.set_num_threads(1)

    cells = load_cells(os.path.join(repo, NOTEBOOK))
    ns = {"__name__": "snf_notebook"}
    exec_import_cells(cells, ns)
    for name in ["torch", "np", "KLTrainer", "GaussianMCMCSampler", "boltzmann_generator_RNVP_MC",
                 "sample_energy", "statistical_efficiency"]:
        if name not in ns:
            fail(f"{NOTEBOOK}: the import cells did not provide {name!r}")
    exec_cell(find_cell(cells, "target = DoubleWellEnergy("), ns, ["prior", "target"])
    exec_cell(find_cell(cells, "def bias_uncertainty("), ns, ["bias_uncertainty"])
    exec_cell(find_cell(cells, "def train_and_analyze("), ns, ["train_and_analyze"])
    data_cell = find_cell(cells, "brute_sampler = GaussianMCMCSampler(", "x_brute =")
    for row in ["# RNVP unbiased", "# RNVP + MC unbiased"]:
        find_cell(cells, row, "boltzmann_generator_RNVP_MC(", "x_brute[::10]")  # the rows this script follows

    # train_and_analyze returns only the four statistics: record the trainer and statistical_efficiency's value
    # by wrapping the two names its global lookups resolve to.
    captured = {}
    base_trainer, base_stat_eff = ns["KLTrainer"], ns["statistical_efficiency"]

    class RecordingKLTrainer(base_trainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            captured["trainer"] = self

    def recording_stat_eff(*a, **k):
        res = base_stat_eff(*a, **k)
        captured["stat_eff"] = res
        return res

    ns["KLTrainer"], ns["statistical_efficiency"] = RecordingKLTrainer, recording_stat_eff

    # the exact-sample chain, drawn once (the notebook draws it once per session)
    t0 = time.time()
    torch.manual_seed(args.data_seed)
    np.random.seed(args.data_seed)
    exec_cell(data_cell, ns, ["x_brute"])
    data = ns["x_brute"][::10]
    print(f"data {tuple(data.shape)} from x_brute {tuple(ns['x_brute'].shape)} ({time.time() - t0:.1f} s), "
          f"fraction x1<0 {float((data[:, 0] < 0).float().mean()):.4f}", flush=True)
    xtest, log_z = exact_samples(20000, np.random.default_rng(4242))
    from bgtorch.nn.flow.stochastic import MetropolisMCFlow

    prior, target = ns["prior"], ns["target"]
    out_path = args.out or f"snf_reference_{args.model}.jsonl"
    records = []
    with open(out_path, "w") as out:
        for seed in args.seeds:
            t0 = time.time()
            torch.manual_seed(seed)
            np.random.seed(seed)
            captured.clear()
            bg = ns["boltzmann_generator_RNVP_MC"](prior, target, **MODEL_KWARGS[args.model])
            stat = ns["train_and_analyze"](bg, data)
            t1 = time.time()
            bias, unc, bias_rw, unc_rw = (float(s) for s in stat)
            rec = dict(model=args.model, seed=seed, bias=bias, unc=unc, bias_rw=bias_rw, unc_rw=unc_rw,
                       combined_raw=float(np.sqrt(bias ** 2 + unc ** 2)),
                       combined_rw=float(np.sqrt(bias_rw ** 2 + unc_rw ** 2)))
            se = captured.get("stat_eff")
            rec["stat_eff"] = float(se[0] if isinstance(se, tuple) else se) if se is not None else None
            if not args.no_diagnostics:
                torch.manual_seed(10_000 + seed)
                diag = diagnostics(bg, prior, target, MetropolisMCFlow)
                with torch.no_grad():
                    rec["test_nll"] = (bg.energy(xtest)[:, 0].mean() + np.log(2 * np.pi)).item()
                rec["log_z_exact"] = log_z
            rec["time_train_eval_s"] = t1 - t0
            rec["time_total_s"] = time.time() - t0
            trainer = captured.get("trainer")
            raw = getattr(getattr(trainer, "reporter", None), "_raw", None)
            if raw is not None:
                rec["final_losses"] = [float(np.mean(l[-50:])) for l in raw]
            if not args.no_diagnostics:
                rec.update(diag)
            records.append(rec)
            print(json.dumps(rec), flush=True)
            out.write(json.dumps(rec) + "\n")
            out.flush()

        # the notebook's summary cell: mean and +- np.std (ddof 0) over trainings
        summary = dict(summary=True, model=args.model, n=len(records), seeds=args.seeds, std_ddof=0)
        for k in STAT_KEYS:
            v = np.array([r[k] for r in records])
            summary[k] = {"mean": float(v.mean()), "std": float(v.std())}
        if not args.no_diagnostics:
            v = np.array([np.mean(r["ess_per_1000"]) for r in records])
            summary["ess_per_1000"] = {"mean": float(v.mean()), "std": float(v.std())}
        out.write(json.dumps(summary) + "\n")
    print(json.dumps(summary))
    print(f"{args.model}, {len(records)} trainings: reweighted {summary['combined_rw']['mean']:.3f} +- "
          f"{summary['combined_rw']['std']:.3f} kT, raw {summary['combined_raw']['mean']:.3f} +- "
          f"{summary['combined_raw']['std']:.3f} kT -> {out_path}", flush=True)


if __name__ == "__main__":
    main()
