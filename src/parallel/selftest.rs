//! `relaxflow dist-selftest` (hidden): join the job the environment describes, run each collective on known tensors,
//! check the results, and print one JSON line per rank. Used by tests/parallel.rs (two processes, FileStore or
//! TCPStore, torchrun) and by hand to check a cluster's set-up and time its allreduce.
use super::World;
use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// After the checks, this rank stops answering (sleeps) while the others enter an allreduce: a test kills it
    /// and expects the others to fail cleanly.
    pub stall_rank: Option<usize>,
    /// Time this many allreduces per buffer size (0: no timing).
    pub bench: usize,
}

/// Buffer sizes timed by `--bench`: the flat gradient of realnvp-moons-sized and of MNIST-sized models.
pub const BENCH_SIZES: [i64; 3] = [35_000, 1_000_000, 3_000_000];

fn values<T: tch::kind::Element + Copy>(t: &Tensor) -> Result<Vec<T>> {
    Ok(Vec::<T>::try_from(&t.flatten(0, -1).to_device(Device::Cpu))?)
}

/// Where the collectives' tensors live: the local rank's GPU under NCCL (which reduces only CUDA tensors), else the
/// CPU.
fn device_of(world: &World) -> Device {
    match world.backend() {
        Some(super::Backend::Nccl) => Device::Cuda(world.local_rank()),
        _ => Device::Cpu,
    }
}

/// Waits for the device's queued work (NCCL collectives return once enqueued on the stream).
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

pub fn run(opts: &Options, out: &mut impl Write) -> Result<()> {
    let world = World::from_env()?;
    let dev = device_of(&world);
    let (r, w) = (world.rank() as i64, world.world_size() as i64);
    let sum_to = |f: &dyn Fn(i64) -> f64| (0..w).map(f).sum::<f64>();

    // Sums: exact in f64 and i64; the mean of f32 (rank + 1 everywhere) is (w + 1) / 2, exact too.
    let mut a = Tensor::from_slice(&[(r + 1) as f64, ((r + 1) * (r + 1)) as f64, -0.5 * (r + 1) as f64]).to_device(dev);
    world.allreduce_sum_(&mut a)?;
    let a = values::<f64>(&a)?;
    let want_a = vec![sum_to(&|i| (i + 1) as f64), sum_to(&|i| ((i + 1) * (i + 1)) as f64), sum_to(&|i| -0.5 * (i + 1) as f64)];
    let mut m = Tensor::full([1000], (r + 1) as f64, (Kind::Float, dev));
    world.allreduce_mean_(&mut m)?;
    let m = values::<f32>(&m)?;
    let mut n = Tensor::from_slice(&[r, 7 * r, 1]).to_device(dev);
    world.allreduce_sum_(&mut n)?;
    let n = values::<i64>(&n)?;
    let mut lo = Tensor::from_slice(&[r, -r]).to_device(dev);
    world.allreduce_min_(&mut lo)?;
    let lo = values::<i64>(&lo)?;
    let mut hi = Tensor::from_slice(&[r as f64, -(r as f64)]).to_device(dev);
    world.allreduce_max_(&mut hi)?;
    let hi = values::<f64>(&hi)?;

    // Broadcasts: rank 0's random vector (each rank draws a different one first), then the last rank's value.
    tch::manual_seed(1000 + r);
    let mut b = Tensor::randn([16], (Kind::Float, tch::Device::Cpu)).to_device(dev);
    world.broadcast_(&mut b, 0)?;
    let b = values::<f32>(&b)?;
    let mut c = Tensor::from_slice(&[r as f32]).to_device(dev);
    world.broadcast_(&mut c, (w - 1) as usize)?;
    let c = values::<f32>(&c)?[0];
    world.barrier()?;

    let checks = [
        (a == want_a, format!("f64 sum {a:?}, expected {want_a:?}")),
        (m.iter().all(|&v| v == (w + 1) as f32 / 2.0), format!("f32 mean {}, expected {}", m[0], (w + 1) as f32 / 2.0)),
        (n == vec![w * (w - 1) / 2, 7 * w * (w - 1) / 2, w], format!("i64 sum {n:?}")),
        (c == (w - 1) as f32, format!("broadcast from the last rank gave {c}")),
        (lo == vec![0, -(w - 1)], format!("i64 min {lo:?}")),
        (hi == vec![(w - 1) as f64, 0.0], format!("f64 max {hi:?}")),
    ];
    let failed: Vec<&String> = checks.iter().filter(|(ok, _)| !ok).map(|(_, m)| m).collect();
    let mut bench = serde_json::Map::new();
    if opts.bench > 0 {
        for size in BENCH_SIZES {
            bench.insert(size.to_string(), json!(time_allreduce(&world, size, opts.bench, dev)?));
        }
    }
    let line = json!({
        "rank": r, "world_size": w, "local_rank": world.local_rank(), "device": format!("{dev:?}"),
        "backend": world.backend().map(|b| b.name()), "launcher": world.launcher().map(|l| format!("{l:?}")),
        "sum_f64": a, "mean_f32": m[0], "sum_i64": n, "broadcast": b, "broadcast_last": c,
        "allreduce_ms_median": bench, "ok": failed.is_empty(),
    });
    writeln!(out, "{line}")?;
    out.flush()?;
    ensure!(failed.is_empty(), "rank {r}: collectives gave wrong results: {failed:?}");

    if let Some(s) = opts.stall_rank {
        if s == r as usize {
            writeln!(out, "stalling")?;
            out.flush()?;
            std::thread::sleep(Duration::from_secs(600));
            return Ok(());
        }
        let mut t = Tensor::ones([1000], (Kind::Float, dev));
        world.allreduce_sum_(&mut t).with_context(|| format!("rank {s} stopped answering"))?;
    }
    Ok(())
}

/// Median milliseconds of one allreduce of `size` f32 over `reps` runs (after 3 warm-up runs).
fn time_allreduce(world: &World, size: i64, reps: usize, dev: Device) -> Result<f64> {
    let mut t = Tensor::ones([size], (Kind::Float, dev));
    for _ in 0..3 {
        world.allreduce_sum_(&mut t)?;
    }
    sync(dev);
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        world.allreduce_sum_(&mut t)?;
        sync(dev);
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}
