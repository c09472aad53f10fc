//! Fuzz-style tests of every reader a user's file reaches: .npy, .csv, IDX, TOML overrides and checkpoints.
//! Random truncations, bit flips and headers (proptest): the answer is a clean error or the correct result, never a
//! panic, never a signal (a segfault or abort would take this test binary down), never silently different data.
use proptest::prelude::*;
use relaxflow::data::{idx, npy, points};
use relaxflow::experiment::config;
use relaxflow::runner::checkpoint::{self, Progress};
use relaxflow::runner::optim::{Adam, AdamConfig};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// A valid .npy file of `rows` x `cols` f64 values.
fn valid_npy(rows: i64, cols: i64) -> (Vec<u8>, Tensor) {
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::randn([rows, cols], (Kind::Double, Device::Cpu));
    let p = dir.path().join("x.npy");
    x.write_npy(&p).unwrap();
    (std::fs::read(&p).unwrap(), x)
}

/// A mutation of a byte string: truncate, flip one bit, overwrite a byte, or append junk.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Set(usize, u8),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
    ]
}

/// Applies `m`; returns the bytes and whether they differ from the input.
fn apply(bytes: &[u8], m: &Mutation) -> (Vec<u8>, bool) {
    let mut b = bytes.to_vec();
    match m {
        Mutation::Truncate(i) => b.truncate(i % bytes.len()),
        Mutation::Flip(i, bit) => b[i % bytes.len()] ^= 1 << bit,
        Mutation::Set(i, v) => b[i % bytes.len()] = *v,
        Mutation::Append(junk) => b.extend(junk),
    }
    let changed = b != bytes;
    (b, changed)
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn npy_reader_never_returns_data_the_file_does_not_hold(rows in 1i64..20, cols in 1i64..5, m in mutation()) {
        let (bytes, x) = valid_npy(rows, cols);
        let (bad, _) = apply(&bytes, &m);
        match npy::decode(&bad) {
            Err(_) => {}
            Ok(t) => {
                // Shorter or longer files never decode; a flip in the data region changes one value at most.
                prop_assert_eq!(bad.len(), bytes.len());
                prop_assert_eq!(t.numel(), x.numel());
                let differing = t.view([-1]).ne_tensor(&x.view([-1])).sum(Kind::Int64).int64_value(&[]);
                prop_assert!(differing <= 1, "{} values differ", differing);
            }
        }
    }

    #[test]
    fn npy_reader_survives_arbitrary_bytes(junk in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend(junk);
        let _ = npy::decode(&b);
    }

    #[test]
    fn csv_reader_gives_finite_2d_points_or_an_error(text in "[0-9eE+\\-.,a-z\\n \\u{feff}]{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.csv");
        std::fs::write(&p, &text).unwrap();
        if let Ok(x) = points::load_points(&p) {
            prop_assert_eq!(x.dim(), 2);
            prop_assert!(x.size()[0] >= 2);
            prop_assert_eq!(x.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]), 0);
        }
    }

    #[test]
    fn overrides_are_applied_or_refused_cleanly(key in "[a-z_.]{0,20}", value in "[ -~]{0,30}") {
        let base = "[data]\nname = \"moons\"\n[model]\nkind = \"realnvp\"\n[train]\nbatch_size = 8\nsteps = 10\nlr = 1e-3\n";
        let mut t: toml::Table = base.parse().unwrap();
        if config::apply_override(&mut t, &format!("{key}={value}")).is_ok() {
            let _ = config::from_table(t, "fuzz.toml");
        }
    }
}

proptest! {
    #![proptest_config(cases(150))]

    #[test]
    fn idx_reader_survives_mutations(m in mutation()) {
        let dir = tempfile::tempdir().unwrap();
        // A 3 x 4 x 4 unsigned-byte IDX file.
        let mut bytes = vec![0, 0, 0x08, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4];
        bytes.extend((0..48u8).collect::<Vec<_>>());
        let (bad, changed) = apply(&bytes, &m);
        let p = dir.path().join("x-idx3-ubyte");
        std::fs::write(&p, &bad).unwrap();
        if let Ok(idx) = idx::read_idx(&p) {
            prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
            if !changed {
                prop_assert_eq!(idx.dims, vec![3, 4, 4]);
            }
        }
    }

    #[test]
    fn checkpoints_load_the_saved_weights_or_refuse(m in mutation()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(checkpoint::FILE);
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().randn_standard("w", &[8, 4]);
        checkpoint::save(&path, &vs, &Adam::new(&vs, cfg).unwrap(), Progress { step: 3, elapsed_s: 1.0 }).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (bad, _) = apply(&bytes, &m);
        std::fs::write(&path, &bad).unwrap();
        let other = nn::VarStore::new(Device::Cpu);
        let w2 = other.root().zeros("w", &[8, 4]);
        if let Ok(p) = checkpoint::load_weights(&path, &other) {
            prop_assert!(w2.equal(&w), "a mutated checkpoint loaded different weights without an error");
            prop_assert_eq!(p.step, 3);
        }
    }
}

#[test]
fn truncated_npy_through_the_points_loader_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = valid_npy(100, 2);
    let p = dir.path().join("t.npy");
    std::fs::write(&p, &bytes[..bytes.len() - 900]).unwrap();
    let err = format!("{:#}", points::load_points(Path::new(&p)).unwrap_err());
    assert!(err.contains("t.npy") && err.contains("truncated") && err.contains("[100, 2]"), "{err}");
}
