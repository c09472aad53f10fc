//! CUDA-gated tests: each one returns early (saying so) when no CUDA device is visible, so `cargo test` stays green on
//! CPU machines. `make gpu-prep` builds this file into target/gpu-check/tests/gpu, which `make gpu-check` runs on a
//! GPU machine (that machine has no Rust toolchain). `RELAXFLOW_GPU_TESTS_ON_CPU=1` runs them with the CPU standing
//! in for the GPU (a dry run of the tests' own logic).
use relaxflow::experiment::OptimizerImpl;
use relaxflow::nets::{Activation, Mlp, UNet};
use relaxflow::runner::optim::{Adam, AdamConfig};
use tch::{nn, Device, Kind, Tensor};

/// The first CUDA device; else the CPU under RELAXFLOW_GPU_TESTS_ON_CPU=1; else None (with a note on stderr).
fn cuda() -> Option<Device> {
    if tch::Cuda::is_available() {
        Some(Device::Cuda(0))
    } else if std::env::var("RELAXFLOW_GPU_TESTS_ON_CPU").is_ok_and(|v| v == "1") {
        eprintln!("no CUDA device: the CPU stands in for it (RELAXFLOW_GPU_TESTS_ON_CPU=1)");
        Some(Device::Cpu)
    } else {
        eprintln!("skipped: no CUDA device");
        None
    }
}

/// Largest |a - b| over the variables of two stores with the same names (b copied to a's device).
fn max_diff(a: &nn::VarStore, b: &nn::VarStore) -> f64 {
    let (va, vb) = (a.variables(), b.variables());
    va.iter().map(|(name, t)| (t - vb[name].to_device(t.device())).abs().max().double_value(&[])).fold(0.0, f64::max)
}

/// 100 steps of a small MLP with weight decay and clipping, on `device`, with `imp`; returns the store. (Small on
/// purpose: in a bigger network Adam amplifies rounding differences over 100 steps -- PyTorch's own fused and
/// single-tensor AdamW end 1e-4 apart on a 64-64 MLP, as far apart as a 1e-7 relative change of the loss puts them.)
fn train_mlp(device: Device, imp: OptimizerImpl) -> nn::VarStore {
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Mlp::new(&vs.root(), 3, &[5, 4], 2, Activation::Tanh, false).unwrap();
    let mut vs = vs;
    vs.set_device(device);
    let x = Tensor::randn([32, 3], (Kind::Float, Device::Cpu)).to_device(device);
    let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
    let mut adam = Adam::new(&vs, cfg).unwrap().with_impl(imp).unwrap();
    for k in 0..100 {
        adam.zero_grad();
        (net.forward(&x).square().mean(None) * 20.0).backward();
        let _ = adam.clip_grad_norm(1.0);
        adam.step(1e-2 * (1 + k % 7) as f64 / 7.0);
    }
    vs
}

#[test]
fn fused_adam_on_cuda_equals_flat_adam_on_cuda_and_on_the_cpu() {
    let Some(dev) = cuda() else { return };
    let flat = train_mlp(dev, OptimizerImpl::Flat);
    let fused = train_mlp(dev, OptimizerImpl::Fused);
    let cpu = train_mlp(Device::Cpu, OptimizerImpl::Flat);
    let d = max_diff(&flat, &fused);
    eprintln!("cuda fused vs cuda flat: {d:.2e}; cuda flat vs cpu flat: {:.2e}", max_diff(&flat, &cpu));
    assert!(d < 1e-5, "fused and flat Adam on CUDA differ by {d}");
    // Matmuls may run in TF32 on the GPU, so the CPU comparison is looser.
    assert!(max_diff(&flat, &cpu) < 1e-2, "CUDA and CPU training differ by {}", max_diff(&flat, &cpu));
}

#[test]
fn unet_forward_on_cuda_matches_the_cpu() {
    let Some(dev) = cuda() else { return };
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = UNet::new(&vs.root(), 1, 32, &[1, 2, 2], 8).unwrap();
    tch::no_grad(|| {
        for mut v in vs.trainable_variables() {
            let noise = v.randn_like() * 0.05;
            let _ = v.g_add_(&noise);
        }
    });
    let x = Tensor::randn([16, 1, 28, 28], (Kind::Float, Device::Cpu));
    let t = Tensor::rand([16], (Kind::Float, Device::Cpu));
    let on_cpu = tch::no_grad(|| net.forward(&x, &t));
    let mut vs = vs;
    vs.set_device(dev);
    let on_gpu = tch::no_grad(|| net.forward(&x.to_device(dev), &t.to_device(dev))).to_device(Device::Cpu);
    let scale = on_cpu.abs().max().double_value(&[]);
    let diff = (&on_cpu - &on_gpu).abs().max().double_value(&[]);
    eprintln!("U-Net CPU vs CUDA: max |diff| {diff:.2e} of max |out| {scale:.2e}");
    assert!(scale > 1e-3, "the perturbed network must output something ({scale})");
    assert!(diff <= 5e-3 * scale, "U-Net outputs differ by {diff} (scale {scale})");
}

/// A 2D CNF on CUDA and on the CPU, the same weights: the exact log p agree, and so do the adjoint's gradients (f64, so
/// the comparison is of the code path, not of TF32 or reduction order). No Jacobian term: its probe would come from
/// each device's own random stream.
#[test]
fn a_cnf_on_cuda_gives_the_cpus_likelihood_and_adjoint_gradients() {
    use relaxflow::model::{Model, ModelParams};
    let Some(dev) = cuda() else { return };
    let p: relaxflow::cnf::CnfParams = toml::from_str("gradient = \"adjoint\"\ntrain_rtol = 1e-8\nkinetic = 0.1\njacobian = 0.0\n[net]\nhidden = [32, 32]\n[ode]\nrtol = 1e-8").unwrap();
    let run = |device: Device| {
        tch::manual_seed(9);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = p.build(&vs.root(), &[2]).unwrap();
        vs.double();
        vs.set_device(device);
        model.bind_parameters(&vs.trainable_variables());
        let x = (Tensor::randn([64, 2], (Kind::Double, Device::Cpu)) * 1.5).to_device(device);
        let lp = tch::no_grad(|| model.log_prob(&x)).value.to_kind(Kind::Double).to_device(Device::Cpu);
        let _ = model.loss_backward(&x, 0);
        let mut grads: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, v)| (k, v.grad().to_device(Device::Cpu))).collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        (lp, grads)
    };
    let (lp_cpu, g_cpu) = run(Device::Cpu);
    let (lp_dev, g_dev) = run(dev);
    let diff = (&lp_cpu - &lp_dev).abs().max().double_value(&[]);
    eprintln!("CNF log p CPU vs device: max |diff| {diff:.2e}");
    assert!(diff < 1e-5, "log p differs by {diff}");
    for ((name, a), (_, b)) in g_cpu.iter().zip(&g_dev) {
        let rel = (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]).max(1e-12);
        assert!(rel < 1e-4, "∂L/∂{name}: relative difference {rel}");
    }
}

/// `steps` steps of least squares on `device` with the fused Adam kernel, its step count and learning rate held in
/// device tensors (what a captured step needs), either eagerly or through `Graphed` (a CUDA graph when this build has
/// them, else eager). Returns the weights and whether a graph was replayed.
fn fused_steps(device: Device, steps: usize, graphed: bool) -> (Tensor, bool) {
    use relaxflow::native::{fused_adam, graph::Graphed, AdamOptions};
    tch::manual_seed(3);
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([64, 16], opts).to_device(device);
    let target = Tensor::randn([64, 8], opts).to_device(device);
    let w = (Tensor::randn([16, 8], opts) * 0.1).to_device(device).set_requires_grad(true);
    let (m, v) = (w.zeros_like().detach(), w.zeros_like().detach());
    let step_t = Tensor::zeros([], (Kind::Float, device));
    let lr = Tensor::full([], 1e-2, (Kind::Float, device));
    let o = AdamOptions { lr: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true };
    // Give w its gradient tensor once, so every step accumulates into the same memory.
    (x.matmul(&w) - &target).square().mean(None).backward();
    let mut step = || -> anyhow::Result<()> {
        let mut g = w.grad();
        let _ = g.zero_();
        (x.matmul(&w) - &target).square().mean(None).backward();
        tch::no_grad(|| {
            let _ = step_t.shallow_clone().g_add_scalar_(1.0);
            fused_adam(&w.detach(), &w.grad(), &m, &v, &step_t, Some(&lr), &o)
        })
    };
    if !graphed {
        for _ in 0..steps {
            step().unwrap();
        }
        return (w.detach().to_device(Device::Cpu), false);
    }
    let mut g = Graphed::new(device, 1, None);
    for _ in 0..steps {
        g.run(&mut step).unwrap();
    }
    if let Some(why) = g.fallback() {
        eprintln!("graph fallback: {why}");
    }
    (w.detach().to_device(Device::Cpu), g.is_captured())
}

#[test]
fn a_captured_training_step_replays_like_eager_steps() {
    let Some(dev) = cuda() else { return };
    let (eager, _) = fused_steps(dev, 20, false);
    let (replayed, captured) = fused_steps(dev, 20, true);
    let d = (&eager - &replayed).abs().max().double_value(&[]);
    eprintln!("graphed ({}) vs eager, 20 fused Adam steps: {d:.2e}", if captured { "CUDA graph replays" } else { "eager fallback" });
    let moved = (&eager - fused_steps(dev, 0, false).0).abs().max().double_value(&[]);
    assert!(moved > 1e-3, "the steps must move the weights ({moved})");
    assert!(d < 1e-6, "graphed and eager steps differ by {d}");
    if dev != Device::Cpu && relaxflow::native::graph::available() {
        assert!(captured, "a CUDA build with graphs must capture the step");
    }
}

/// realnvp-moons trained `steps` steps on `dev` through the run loop, with `train.cuda_graph` on or off; returns the
/// logged losses and the metrics lines' `cuda_graph` values.
fn moons_losses(dev: Device, dir: &std::path::Path, graph: bool, steps: i64) -> (Vec<f64>, Vec<String>) {
    use relaxflow::runner::train::{train, TrainOptions};
    let out = dir.join(if graph { "graph" } else { "eager" });
    let device = match dev {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let sets = ["data.n_train=4000", "data.n_test=500", "train.log_every=10", "train.checkpoint_every=1000", "eval.every=0",
                "eval.n_samples=200", "eval.grid=16", "train.sample_every=0", "eval.sampler_settings=[]", "train.grad_clip=1.0"];
    let mut overrides: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    overrides.push(format!("train.cuda_graph={graph}"));
    let opts = TrainOptions { experiment: Some("realnvp-moons".into()), overrides, steps: Some(steps), device: Some(device),
                              out: Some(out.clone()), ..Default::default() };
    train(&opts).expect("training runs");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines()
        .map(|l| serde_json::from_str(l).unwrap()).collect();
    (lines.iter().map(|v| v["loss"].as_f64().unwrap()).collect(),
     lines.iter().filter_map(|v| v["cuda_graph"].as_str().map(String::from)).collect())
}

#[test]
fn the_run_loop_replays_a_captured_flow_step_like_eager_steps() {
    let Some(dev) = cuda() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (eager, _) = moons_losses(dev, tmp.path(), false, 60);
    let (graphed, modes) = moons_losses(dev, tmp.path(), true, 60);
    eprintln!("realnvp-moons, 60 steps: eager losses {eager:?}\n graphed {graphed:?} ({modes:?})");
    assert_eq!(eager.len(), graphed.len());
    for (a, b) in eager.iter().zip(&graphed) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "graphed loss {b} vs eager {a}");
    }
    if dev != Device::Cpu && relaxflow::native::graph::available() {
        assert_eq!(modes.last().map(String::as_str), Some("replayed"), "a CUDA build with graphs replays the captured step");
    }
}

#[test]
fn a_captured_sampler_replays_the_eager_blocks() {
    use relaxflow::model::ModelParams;
    use relaxflow::runner::graph_sample::BlockSampler;
    let Some(dev) = cuda() else { return };
    tch::manual_seed(0);
    let vs = nn::VarStore::new(dev);
    let p: relaxflow::diffusion::DdpmParams = toml::from_str("timesteps = 100").unwrap();
    let model = p.build(&vs.root(), &[2]).unwrap();
    let blocks = |graphs: bool| {
        tch::manual_seed(5);
        let mut s = BlockSampler::new(&*model, dev, 256, graphs);
        let x: Vec<Tensor> = (0..4).map(|_| s.draw(256).unwrap().to_device(Device::Cpu)).collect();
        (Tensor::cat(&x, 0), s.replays, s.note().map(String::from))
    };
    let (eager, _, _) = blocks(false);
    let (graphed, replays, note) = blocks(true);
    let d = (&eager - &graphed).abs().max().double_value(&[]);
    eprintln!("DDPM (100 steps), 4 blocks of 256: graphed vs eager max |Δx| = {d:.2e}, {replays} replays ({note:?})");
    assert!(d < 1e-4, "graphed and eager samples differ by {d}");
    if dev != Device::Cpu && relaxflow::native::graph::available() {
        assert_eq!(replays, 3, "blocks 2-4 replay the graph captured at block 2: {note:?}");
    }
}
