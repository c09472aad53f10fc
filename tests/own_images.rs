//! A user's own images: a folder of PNG files (one sub-folder per class) trains a Glow, a DDPM and a
//! class-conditional DDPM with one `--set data.path=DIR`, in colour, with bits/dim over 3 x 16 x 16 dimensions and
//! colour sample grids; CIFAR-10 batch files cropped to 16x16 (the CPU profile's colour run).
mod common;

use std::path::Path;
use std::process::Command;

fn relaxflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relaxflow")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("the relaxflow binary runs")
}

fn ok(args: &[&str]) {
    let o = relaxflow(args);
    assert!(o.status.success(), "relaxflow {args:?}:\n{}", String::from_utf8_lossy(&o.stderr));
}

/// 24 colour 16x16 PNGs: `warm/` reddish, `cool/` bluish, each with a bright square at a random place.
fn write_folder(dir: &Path) {
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    for (class, base) in [("warm", [180u8, 60, 40]), ("cool", [40u8, 70, 190])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..12 {
            let (x0, y0) = (next() % 10, next() % 10);
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                let lit = (x0..x0 + 6).contains(&x) && (y0..y0 + 6).contains(&y);
                let n = (next() % 30) as u8;
                image::Rgb(base.map(|v| if lit { v.saturating_add(60) } else { v.saturating_sub(30) }.saturating_add(n)))
            });
            img.save(dir.join(class).join(format!("{i:02}.png"))).unwrap();
        }
    }
}

#[test]
fn a_folder_of_pngs_trains_glow_and_ddpm_in_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("my images");
    write_folder(&imgs);
    let data = format!("data.path={}", imgs.display());
    let small = ["train.batch_size=4", "eval.n_final=4", "eval.n_eval=4", "eval.batch_size=4", "eval.n_samples=4", "train.sample_every=2", "eval.every=2"];
    for (exp, extra) in [
        ("glow-mnist", vec!["model.hidden_channels=4", "model.steps=1"]),
        ("ddpm-mnist", vec!["model.timesteps=10", "model.net.unet_ch=8", "model.net.unet_groups=4"]),
        ("ddpm-mnist-conditional", vec!["model.timesteps=10", "model.net.unet_ch=8", "model.net.unet_groups=4"]),
    ] {
        let run = tmp.path().join(exp);
        let mut args = vec!["train", exp, "--steps", "3", "--device", "cpu", "--out", run.to_str().unwrap(), "--set", &data];
        for s in small.iter().chain(&extra) {
            args.extend(["--set", s]);
        }
        ok(&args);
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["dim"], 768, "{exp}: 3 x 16 x 16");
        assert_eq!(summary["dataset"], "my images", "{exp}");
        let bpd = summary["bits_per_dim"].as_f64().unwrap();
        assert!(bpd.is_finite() && bpd > 0.0, "{exp}: bits/dim {bpd}");
        // Colour grids: some pixel has unequal channels.
        let grid = image::open(run.join("samples/step-000002.png")).unwrap().to_rgb8();
        assert!(grid.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]) || exp == "glow-mnist", "{exp}: a grey grid");
        if exp == "ddpm-mnist-conditional" {
            assert_eq!(summary["context"], serde_json::json!({"kind": "class", "classes": 2}), "class folders are the labels");
            let out = tmp.path().join("cool.png");
            ok(&["sample", run.to_str().unwrap(), "-n", "3", "--class", "0", "--out", out.to_str().unwrap()]);
            assert_eq!(image::image_dimensions(&out).unwrap(), (2 * (3 * 17 - 1), 2 * 16));
        }
    }
    // A bad file in the folder is named before anything is written.
    std::fs::write(imgs.join("warm").join("readme.txt"), b"notes").unwrap();
    let run = tmp.path().join("bad");
    let o = relaxflow(&["train", "glow-mnist", "--steps", "1", "--out", run.to_str().unwrap(), "--set", &data]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("readme.txt") && err.contains("not a PNG or JPEG"), "{err}");
    assert!(!run.exists(), "nothing written");
}

/// data.image_size on CIFAR-10 is a centre crop: a 16x16 DDPM trains on generated batch files, its bits/dim over
/// 3 x 16 x 16 dimensions, its samples 16x16 colour images; grey CIFAR-10 is refused by name.
#[test]
fn cifar10_cropped_to_16_trains_a_colour_ddpm() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_cifar10(&tmp.path().join("cifar10").join("cifar-10-batches-bin"));
    let dir = format!("data.dir={:?}", tmp.path().to_str().unwrap());
    let run = tmp.path().join("run");
    let mut args = vec!["train", "ddpm-cifar10", "--steps", "2", "--device", "cpu", "--out", run.to_str().unwrap(), "--set", &dir, "--set", "data.image_size=16"];
    for s in ["model.net.unet_ch=8", "model.net.unet_groups=4", "model.timesteps=20", "train.batch_size=4", "eval.n_final=2", "eval.batch_size=2", "eval.n_samples=4", "eval.quality_samples=8"] {
        args.extend(["--set", s]);
    }
    ok(&args);
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let (nll, bpd) = (s["test_nll_nats"].as_f64().unwrap(), s["bits_per_dim"].as_f64().unwrap());
    assert!((bpd - (nll / (768.0 * std::f64::consts::LN_2) + 8.0)).abs() < 1e-6, "bits/dim over 3 x 16 x 16: {bpd} from {nll} nats");
    assert_eq!(s["weights"], "ema", "DDPM on images keeps a weight average by default");
    assert_eq!(tch::Tensor::read_npy(run.join("samples.npy")).unwrap().size()[1..], [3, 16, 16]);
    let o = relaxflow(&["train", "ddpm-cifar10", "--steps", "1", "--out", tmp.path().join("grey").to_str().unwrap(), "--set", &dir, "--set", "data.channels=1"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cifar10 is colour"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The CIFAR-10 classifier at the 16x16 crop learns the generated classes, scores a 16x16 colour Glow's samples
/// (a Fréchet distance in its own feature space, beside its floor), refuses a 32x32 run's samples by their shape, and
/// the report tables the CIFAR-10 runs with published numbers only where the task is the published one.
#[test]
fn a_cifar10_classifier_scores_colour_samples_of_its_own_size() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_cifar10(&tmp.path().join("cifar10").join("cifar-10-batches-bin"));
    let dir = format!("data.dir={:?}", tmp.path().to_str().unwrap());
    let clf = tmp.path().join("repro").join("runs").join("cifar10-classifier");
    let c = clf.to_str().unwrap();
    let mut args = vec!["train", "cifar10-classifier", "--steps", "300", "--device", "cpu", "--out", c, "--set", &dir, "--set", "data.image_size=16"];
    // No flips: the generated images brighten left to right, so a mirror blurs their (brightness) classes.
    let settings = ["model.channels=[8, 16]", "model.feature_dim=16", "model.flip=false", "train.batch_size=32", "train.lr=3e-3", "train.lr_schedule=\"constant\"", "eval.every=100", "train.log_every=50"];
    for s in settings {
        args.extend(["--set", s]);
    }
    ok(&args);
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(clf.join("summary.json")).unwrap()).unwrap();
    assert_eq!((s["dataset"].as_str(), s["shape"].clone()), (Some("cifar10"), serde_json::json!([3, 16, 16])));
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.5, "the generated classes differ in brightness: {}", s["test_accuracy"]);

    let classifier = format!("eval.classifier={c:?}");
    let small = ["model.hidden_channels=8", "model.steps=1", "train.batch_size=4", "eval.n_final=4", "eval.batch_size=4", "eval.n_samples=4", "eval.quality_samples=16"];
    let glow = |out: &Path, side: &str| {
        let mut args = vec!["train", "glow-cifar10", "--steps", "2", "--device", "cpu", "--out", out.to_str().unwrap(), "--set", &dir, "--set", &classifier];
        args.extend(["--set", side]);
        for s in &small {
            args.extend(["--set", s]);
        }
        ok(&args);
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
    };
    let run = tmp.path().join("repro").join("runs").join("glow-cifar10");
    let g = glow(&run, "data.image_size=16");
    let q = &g["image_quality"];
    assert!(q["error"].is_null(), "{q}");
    assert_eq!((q["dataset"].as_str(), q["n"].as_i64(), q["n_reference"].as_i64()), (Some("cifar10"), Some(16), Some(16)), "{q}");
    let (fd, floor) = (q["frechet_distance"].as_f64().unwrap(), q["frechet_floor"].as_f64().unwrap());
    assert!(fd.is_finite() && floor.is_finite() && fd > floor, "two steps of a Glow are far from the data: {fd} vs floor {floor}");
    assert!(q["note"].as_str().unwrap().contains("not FID"), "{q}");
    assert_eq!(q["class_counts"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum::<i64>(), 16);

    let full = glow(&tmp.path().join("full"), "data.image_size=32");
    let e = full["image_quality"]["error"].as_str().unwrap_or_default().to_string();
    assert!(e.contains("needs samples [n, 3, 16, 16]") && e.contains("got shape [16, 3, 32, 32]"), "{e}");

    let out = tmp.path().join("report");
    ok(&["report", tmp.path().join("repro").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let md = std::fs::read_to_string(out.join("survey-comparison.md")).unwrap();
    assert!(md.contains("## `cifar10`") && md.contains("cifar10-classifier"), "{md}");
    let row = md.lines().find(|l| l.starts_with("| glow-cifar10 |")).expect("the CIFAR-10 Glow row");
    assert!(row.contains("- (a crop)") && row.contains(&format!("{:.4}", g["bits_per_dim"].as_f64().unwrap())), "{row}");
}
