//! Multi-scale image flows: RealNVP (Dinh et al. 2017, §3.6) and Glow (Kingma & Dhariwal 2018, §3) from one builder.
//!
//! x in [0, 1]^{C×H×W} -> logit -> per level: `checkerboard` checkerboard couplings, squeeze, `steps` flow steps
//! ([ActNorm], mixing, channel coupling), then (except at the last level) a slice that factors out half the channels
//! to p(z2 | z1). The last level's output goes to the base. Every layer is a bijection or the slice (an exact
//! inference surjection), so log p(x) is exact, in [0, 1] space, logit Jacobian included.
use crate::flows::build::{Base, Mixing};
use crate::flows::image_coupling::{ImageCoupling, ImageTransform, Mask};
use crate::flows::{ActNorm, ScaleBound};
use crate::dist::{DiagNormal, Distribution, StandardNormal};
use crate::layer::{Layer, LayerModel};
use crate::survae::max::{Blocks, Max};
use crate::survae::vardeq::VarDequant;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn;

/// How the factored-out half is modelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitPrior {
    /// N(0, I) (RealNVP).
    Standard,
    /// N(μ(z1), σ(z1)²) from a zero-initialised 3x3 convolution of the kept half (Glow).
    Learned,
}

/// How a level reduces the dimension before the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    /// Factor out half the channels (a slice; the next level squeezes again).
    Slice,
    /// 2x2 max pooling (SurVAE's max surjection, exact; the next level does not squeeze).
    MaxPool,
}

/// The dequantization of 8-bit pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dequantization {
    /// The data's own (pixel + u)/256, u ~ U(0, 1): exact likelihood of the dequantized data.
    Uniform,
    /// u ~ q(u | pixels), a learned conditional flow (Flow++): a lower bound, reported as IWBO(eval_k).
    Variational,
}

/// Affine or additive (NICE-style) couplings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouplingKind {
    Affine,
    Additive,
}

/// `kind = "glow"` (these defaults) or `kind = "realnvp"` on images (see `realnvp_defaults`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiscaleParams {
    /// Scales L; each squeezes once, so H and W must be divisible by 2^L.
    pub levels: usize,
    /// Flow steps K per level after its squeeze (channel couplings).
    pub steps: usize,
    /// Checkerboard couplings per level before its squeeze (RealNVP uses 3; Glow 0).
    pub checkerboard: usize,
    /// Width of each coupling's ResNet.
    pub hidden_channels: i64,
    /// Residual blocks per ResNet.
    pub blocks: usize,
    pub coupling: CouplingKind,
    pub scale_bound: ScaleBound,
    /// Between channel couplings: `lu` (invertible 1x1 convolution), `reverse`, `random` (channel permutation) or
    /// `alternate` (no layer; couplings alternate halves).
    pub mixing: Mixing,
    /// ActNorm before every coupling.
    pub actnorm: bool,
    /// α of the logit preprocessing y = logit(α + (1 - 2α)x).
    pub logit_alpha: f64,
    pub split_prior: SplitPrior,
    /// `standard_normal` or `diag_normal` (learned mean and scale per latent coordinate).
    pub base: crate::flows::build::BaseParams,
    pub downsample: Downsample,
    pub dequantization: Dequantization,
    /// IWBO samples for the test likelihood when it is a bound (variational dequantization).
    pub eval_k: i64,
    /// A conditional run: the width of the context embedding every coupling's ResNet reads as constant channels
    /// (default: 16 for classes, a vector context as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_embed: Option<i64>,
}

impl Default for MultiscaleParams {
    fn default() -> Self {
        MultiscaleParams {
            levels: 2,
            steps: 8,
            checkerboard: Default::default(),
            hidden_channels: 128,
            blocks: 1,
            coupling: CouplingKind::Affine,
            scale_bound: ScaleBound::Sigmoid,
            mixing: Mixing::Lu,
            actnorm: true,
            logit_alpha: 0.05,
            split_prior: SplitPrior::Learned,
            base: Default::default(),
            downsample: Downsample::Slice,
            dequantization: Dequantization::Uniform,
            eval_k: 1,
            context_embed: None,
        }
    }
}

/// What `kind = "realnvp"` changes from the Glow defaults on images: 3 checkerboard and 3 channel couplings per
/// level with alternating halves, a ResNet of 2 blocks, N(0, I) for factored-out halves.
pub fn realnvp_defaults() -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("steps".into(), 3.into());
    t.insert("checkerboard".into(), 3.into());
    t.insert("hidden_channels".into(), 64.into());
    t.insert("blocks".into(), 2.into());
    t.insert("mixing".into(), "alternate".into());
    t.insert("split_prior".into(), "standard".into());
    t
}

/// The multi-scale flow for events of shape [C, H, W].
pub fn multiscale(path: &nn::Path, shape: &[i64], p: &MultiscaleParams) -> Result<LayerModel> {
    multiscale_given(path, shape, p, 0)
}

/// The multi-scale flow whose couplings read `cond` channels of context features (0: `multiscale`, variable for
/// variable); the other layers (ActNorm, 1x1 convolutions, slices, max pooling, dequantization) do not read c.
pub fn multiscale_given(path: &nn::Path, shape: &[i64], p: &MultiscaleParams, cond: i64) -> Result<LayerModel> {
    let [c, h, w] = shape else { bail!("a multi-scale flow needs [C, H, W] images, got shape {shape:?}") };
    ensure!(p.levels >= 1, "model.levels must be at least 1");
    ensure!(p.steps + p.checkerboard >= 1, "model.steps + model.checkerboard must be at least 1");
    let div = 1i64 << p.levels;
    ensure!(h % div == 0 && w % div == 0, "model.levels = {} needs H and W divisible by {div}, got {h}x{w}", p.levels);
    let transform = match p.coupling {
        CouplingKind::Affine => ImageTransform::Affine(p.scale_bound),
        CouplingKind::Additive => ImageTransform::Additive,
    };
    let flow = path.sub("flow");
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    if p.dequantization == Dequantization::Variational {
        layers.push(Box::new(VarDequant::new(&path.sub("dequantization"), *c, p.hidden_channels, p.blocks)?));
    }
    layers.push(Box::new(crate::flows::logit::Logit::new(p.logit_alpha)?));
    let mut shape = vec![*c, *h, *w];
    for level in 0..p.levels {
        let lp = flow.sub(format!("level{level}"));
        for i in 0..p.checkerboard {
            let sp = lp.sub(format!("checker{i}"));
            if p.actnorm {
                layers.push(Box::new(ActNorm::new(&sp.sub("actnorm"), shape[0])));
            }
            let mask = Mask::Checkerboard { parity: i % 2 == 1 };
            layers.push(Box::new(ImageCoupling::conditional(&sp.sub("coupling"), &shape, mask, transform, p.hidden_channels, p.blocks, cond)?));
        }
        if level == 0 || p.downsample == Downsample::Slice {
            layers.push(Box::new(crate::flows::squeeze::Squeeze));
            shape = vec![shape[0] * 4, shape[1] / 2, shape[2] / 2];
        }
        for k in 0..p.steps {
            let sp = lp.sub(format!("step{k}"));
            if p.actnorm {
                layers.push(Box::new(ActNorm::new(&sp.sub("actnorm"), shape[0])));
            }
            layers.extend(p.mixing.between(shape[0], &sp.sub("perm"), &sp.sub("conv1x1")));
            let mask = Mask::Channel { parity: p.mixing.parity(k) };
            layers.push(Box::new(ImageCoupling::conditional(&sp.sub("coupling"), &shape, mask, transform, p.hidden_channels, p.blocks, cond)?));
        }
        if level + 1 < p.levels {
            match p.downsample {
                Downsample::Slice => {
                    let slice = crate::flows::slice::Slice::new(&lp.sub("split"), shape[0], p.split_prior == SplitPrior::Learned)?;
                    shape[0] -= shape[0] / 2;
                    layers.push(Box::new(slice));
                }
                Downsample::MaxPool => {
                    layers.push(Box::new(Max::new(&lp.sub("maxpool"), Blocks::Pool2d, shape[0])));
                    shape = vec![shape[0], shape[1] / 2, shape[2] / 2];
                }
            }
        }
    }
    let base: Box<dyn Distribution> = match p.base.kind {
        Base::StandardNormal => Box::new(StandardNormal { shape: shape.clone(), device: path.device() }),
        Base::DiagNormal => Box::new(DiagNormal::new(&path.sub("base"), &shape)),
        Base::Gmm | Base::Resampled | Base::ConditionalNormal => bail!("model.base.kind = {:?} is for vector data; use standard_normal or diag_normal on images", p.base.kind),
    };
    // Max pooling and variational dequantization make it a SurVAE flow (the slice alone keeps Glow a flow).
    let surjective = p.downsample == Downsample::MaxPool || p.dequantization == Dequantization::Variational;
    Ok(LayerModel { layers, base, family: if surjective { crate::model::Family::Survae } else { crate::model::Family::Flow } })
}

impl crate::model::ModelParams for MultiscaleParams {
    /// Glow (and RealNVP on images); a model with a surjective layer is evaluated by IWBO(eval_k).
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn crate::model::Model>> {
        ensure!(self.eval_k >= 1, "model.eval_k must be at least 1");
        let m = multiscale(path, shape, self)?;
        if m.kind() == crate::model::Kind::Exact {
            return Ok(Box::new(m));
        }
        Ok(Box::new(crate::survae::model::Survae::wrap(m, self.eval_k)))
    }

    /// The class- (or vector-) conditional multi-scale flow: h(c) enters every coupling's ResNet; exact, or
    /// IWBO(eval_k) of log p(x | c) with a surjective layer.
    fn build_conditional(&self, path: &nn::Path, shape: &[i64], context: &crate::ContextSpec) -> Result<Box<dyn crate::model::Model>> {
        ensure!(self.eval_k >= 1, "model.eval_k must be at least 1");
        let encoder = crate::nets::embed::ContextEncoder::new(&path.sub("context"), *context, self.context_embed)?;
        let flow = multiscale_given(path, shape, self, encoder.width())?;
        Ok(Box::new(crate::flows::conditional::ConditionalFlow { flow, encoder, eval_k: self.eval_k }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind as LikKind, Model};
    use tch::{Device, Kind, Tensor};

    fn small(extra: &str) -> MultiscaleParams {
        toml::from_str(&format!("hidden_channels = 8\nsteps = 2\n{extra}")).unwrap()
    }

    fn perturbed(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for mut p in vs.trainable_variables() {
                let _ = p.g_add_(&(Tensor::randn_like(&p) * 0.05));
            }
        });
    }

    #[test]
    fn glow_and_realnvp_are_exact_invertible_and_normalised_by_their_parts() {
        for extra in ["", "checkerboard = 2\nmixing = \"alternate\"\nsplit_prior = \"standard\"\n[base]\nkind = \"diag_normal\""] {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let model = multiscale(&vs.root(), &[1, 8, 8], &small(extra)).unwrap();
            let x = Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
            model.data_init(&x);
            perturbed(&vs);
            let lp = model.log_prob(&x);
            assert_eq!(lp.kind, LikKind::Exact);
            assert!(bool::try_from(lp.value.isfinite().all()).unwrap());
            // The latent of the last level plus every factored-out half: 64 dimensions in all.
            let (z, _) = model.forward(&x);
            assert_eq!(z.size(), vec![4, 8, 2, 2]);
            let (x_back, _) = model.inverse_tempered(&z, 0.0);
            // With t = 0 the factored-out halves are their prior means, not x's: re-encoding gives back the same z.
            let (z_again, _) = model.forward(&x_back);
            assert!((z_again - &z).abs().max().double_value(&[]) < 1e-3);
            let s = model.sample_tempered(5, 0.7).unwrap();
            assert_eq!(s.size(), vec![5, 1, 8, 8]);
            let (lo, hi) = (s.min().double_value(&[]), s.max().double_value(&[]));
            assert!(lo > -0.06 && hi < 1.06, "samples in the logit's range: {lo} {hi}");
        }
    }

    #[test]
    fn log_prob_is_the_logit_space_density_plus_the_logit_jacobian() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = multiscale(&vs.root(), &[1, 4, 4], &small("levels = 1")).unwrap();
        perturbed(&vs);
        let x = Tensor::rand([3, 1, 4, 4], (Kind::Float, Device::Cpu));
        let ls = model.logit_space_log_prob(&x).unwrap();
        let s = &x * 0.9 + 0.05;
        let jac = ((s.log() + (-&s + 1.0).log()) * -1.0 + 0.9f64.ln()).flatten(1, -1).sum_dim_intlist(1, false, None);
        let err = (model.log_prob(&x).value - (ls.log_prob_y + jac)).abs().max().double_value(&[]);
        assert!(err < 1e-3, "{err}");
    }

    #[test]
    fn max_pooling_stays_exact_and_variational_dequantization_is_a_bound() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let x = Tensor::rand([3, 1, 8, 8], (Kind::Float, Device::Cpu)) * 0.9 + 0.05;
        let pooled = multiscale(&vs.root().sub("a"), &[1, 8, 8], &small("downsample = \"max_pool\"")).unwrap();
        let (z, _) = pooled.forward(&x);
        assert_eq!(z.size(), vec![3, 4, 2, 2], "squeeze to 4x4x4, pool to 4x2x2");
        assert_eq!(pooled.log_prob(&x).kind, LikKind::Exact);
        assert_eq!(pooled.sample(2).size(), vec![2, 1, 8, 8]);
        let vardeq = multiscale(&vs.root().sub("b"), &[1, 8, 8], &small("dequantization = \"variational\"")).unwrap();
        assert_eq!(vardeq.log_prob(&x).kind, LikKind::LowerBound);
        assert!(vardeq.logit_space_log_prob(&x).is_none(), "the first layer is no longer the logit");
    }

    #[test]
    fn bad_shapes_and_keys_are_named() {
        let vs = nn::VarStore::new(Device::Cpu);
        let e = multiscale(&vs.root(), &[1, 28, 28], &small("levels = 3")).err().unwrap().to_string();
        assert!(e.contains("model.levels") && e.contains("divisible by 8"), "{e}");
        let e = multiscale(&vs.root(), &[784], &small("")).err().unwrap().to_string();
        assert!(e.contains("[C, H, W]"), "{e}");
        let e = toml::from_str::<MultiscaleParams>("hiden_channels = 3").unwrap_err().to_string();
        assert!(e.contains("hiden_channels"), "{e}");
    }
}
