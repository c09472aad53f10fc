//! Compose a SurVAE model from layers (Nielsen et al. 2020): augment the 2-d data with 2 extra dimensions drawn
//! from a learned q(e | x) (a generative surjection), then RealNVP couplings on the 4-d result, then a standard
//! normal base. The likelihood is a lower bound (the augmentation's ELBO term), and the model says so.
//!
//! `cargo run --release --example survae`
use anyhow::Result;
use relaxflow::flows::build::realnvp_layers;
use relaxflow::survae::augment::Augment;
use relaxflow::{Family, Kind, Layer, LayerModel, Model, RealNvpParams, StandardNormal};
use tch::{nn, nn::OptimizerConfig, Device};

/// The augmented flow, trained `steps` steps on the checkerboard; returns (kind, test NLL in nats: an upper bound).
fn run(steps: i64) -> Result<(Kind, f64)> {
    tch::manual_seed(0);
    let train = relaxflow::data::toy::generate("checkerboard", 20_000)?;
    let test = relaxflow::data::toy::generate("checkerboard", 2_000)?;
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let mut layers: Vec<Box<dyn Layer>> = vec![Box::new(Augment::new(&root.sub("augment"), 2, 2, &[32])?)];
    layers.extend(realnvp_layers(&root.sub("flow"), 4, &RealNvpParams { n_layers: 6, ..Default::default() })?);
    let model = LayerModel { layers, base: Box::new(StandardNormal { shape: vec![4], device: Device::Cpu }), family: Family::Survae };
    let mut adam = nn::Adam::default().build(&vs, 1e-3)?;
    for step in 0..steps {
        let idx = tch::Tensor::randint(train.size()[0], [256], (tch::Kind::Int64, Device::Cpu));
        adam.backward_step(&model.loss(&train.index_select(0, &idx), step));
    }
    let lp = tch::no_grad(|| model.log_prob(&test));
    Ok((lp.kind, -lp.value.mean(None).double_value(&[])))
}

fn main() -> Result<()> {
    let (kind, nll) = run(2000)?;
    println!("augmented RealNVP on the checkerboard: test NLL {nll:.4} nats ({}; the entropy is ln 32 = 3.4657)", kind.label());
    Ok(())
}

#[test]
fn an_augmented_flow_is_a_bound_and_learns() {
    let (kind, before) = run(0).unwrap();
    assert_eq!(kind, Kind::LowerBound, "a generative surjection makes the likelihood a bound");
    let (_, after) = run(300).unwrap();
    assert!(after < before - 0.3, "{before} -> {after}");
}
