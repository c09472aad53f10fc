//! The registry: model kind -> family, description and constructor. Adding an experiment needs only a TOML file;
//! adding a model kind needs one entry here.
use super::config::parse_value;
use crate::diffflow::DiffFlowParams;
use crate::diffusion::DdpmParams;
use crate::flows::build::{MafParams, NiceParams, NsfParams, PlanarParams, RealNvpParams};
use crate::flows::sinh_arcsinh::SinhArcsinhParams;
use crate::cnf::CnfParams;
use crate::context::ContextSpec;
use crate::model::{Family, Model, ModelParams};
use crate::multiscale;
use crate::score::ScoreParams;
use crate::snf::SnfParams;
use crate::survae::model::SurvaeParams;
use crate::vae::VaeParams;
use anyhow::{bail, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::nn;

/// A constructor: the `[model]` table (without `kind`), the VarStore path, the data's event shape; returns the model
/// and the table with every default filled in (written to the run's resolved config).
/// With a context spec it builds the conditional model p(x | c) (or says the kind has none).
pub type Build = fn(&toml::Table, &nn::Path, &[i64], Option<&ContextSpec>, &str) -> Result<(Box<dyn Model>, toml::Table)>;

/// One model kind.
pub struct Entry {
    pub kind: &'static str,
    pub family: Family,
    pub about: &'static str,
    pub build: Build,
    /// Overrides that make any experiment of this kind a few-second smoke test (`tests/experiments.rs`), and the
    /// further ones on image data.
    pub smoke: &'static [&'static str],
    pub smoke_image: &'static [&'static str],
}

/// Every registered model kind.
pub fn entries() -> Vec<Entry> {
    vec![
        Entry { kind: "realnvp", family: Family::Flow, about: "affine coupling flow (RealNVP); multi-scale with ResNet couplings on images", build: build_realnvp, smoke: &[], smoke_image: &["model.hidden_channels=4", "model.steps=1"] },
        Entry { kind: "glow", family: Family::Flow, about: "Glow on images: ActNorm, invertible 1x1 convolution, affine coupling, multi-scale", build: build_kind::<multiscale::MultiscaleParams>, smoke: &[], smoke_image: &["model.hidden_channels=4", "model.steps=1"] },
        Entry { kind: "maf", family: Family::Flow, about: "masked autoregressive flow (MAF), or IAF with direction = \"iaf\"", build: build_kind::<MafParams>, smoke: &[], smoke_image: &["model.hidden=[16]", "model.n_layers=2"] },
        Entry { kind: "nsf", family: Family::Flow, about: "rational-quadratic spline coupling flow (NSF)", build: build_kind::<NsfParams>, smoke: &[], smoke_image: &[] },
        Entry { kind: "planar", family: Family::Flow, about: "planar or radial flow (Rezende & Mohamed), density direction closed-form", build: build_kind::<PlanarParams>, smoke: &[], smoke_image: &[] },
        Entry { kind: "sinh_arcsinh", family: Family::Flow, about: "RealNVP with a sinh-arcsinh layer (learned skew and tails) before each coupling", build: build_kind::<SinhArcsinhParams>, smoke: &[], smoke_image: &[] },
        Entry { kind: "nice", family: Family::Flow, about: "additive coupling flow with diagonal scaling (NICE)", build: build_kind::<NiceParams>, smoke: &[], smoke_image: &[] },
        Entry { kind: "survae", family: Family::Survae, about: "SurVAE flow: abs / sort / stochastic permutation / augment layer + RealNVP; exact or IWBO(k)", build: build_kind::<SurvaeParams>, smoke: &["model.eval_k=5"], smoke_image: &[] },
        Entry { kind: "vae", family: Family::Vae, about: "VAE (ELBO) or IWAE(k): MLP/conv encoder-decoder, Bernoulli/Gaussian/discretized-logistic decoder", build: build_kind::<VaeParams>, smoke: &["model.eval_k=10", "model.hidden=[16]"], smoke_image: &[] },
        Entry {
            kind: "snf",
            family: Family::Snf,
            about: "stochastic normalizing flow: RealNVP blocks + Langevin/MH/HMC layers on an energy (or none: a flow)",
            build: build_kind::<SnfParams>,
            smoke: &[],
            smoke_image: &[],
        },
        Entry { kind: "ddpm", family: Family::Diffusion, about: "denoising diffusion (DDPM): L_simple, ancestral/DDIM, VLB", build: build_kind::<DdpmParams>, smoke: &["model.timesteps=20"], smoke_image: &["model.net.unet_ch=8", "model.net.unet_groups=4"] },
        Entry { kind: "score", family: Family::Score, about: "score SDE (VP / sub-VP / VE): DSM, EM/PC/ODE samplers, PF-ODE likelihood", build: build_kind::<ScoreParams>, smoke: &["model.sample_steps=5", "model.ode.rtol=1e-2"], smoke_image: &["model.net.unet_ch=8", "model.net.unet_groups=4"] },
        Entry {
            kind: "diffflow",
            family: Family::Diffflow,
            about: "diffusion normalizing flow: trainable drift + score, KL of path measures, PF-ODE likelihood",
            build: build_kind::<DiffFlowParams>,
            smoke: &["model.steps=3", "model.steps_schedule=[[0, 2], [2, 3]]", "model.ode.rtol=1e-2", "train.batch_size=64"],
            smoke_image: &["model.net.unet_ch=8", "model.net.unet_groups=4"],
        },
        Entry {
            kind: "cnf",
            family: Family::Cnf,
            about: "continuous normalizing flow (FFJORD) trained through the ODE: RNODE regularisers, backprop or adjoint gradients, NFE logged",
            build: build_kind::<CnfParams>,
            smoke: &["model.train_rtol=1e-2", "model.ode.rtol=1e-2", "train.batch_size=64"],
            smoke_image: &["model.net.unet_ch=8", "model.net.unet_groups=4", "model.net.unet_mults=[1]"],
        },
        Entry { kind: "ncsn", family: Family::Score, about: "NCSN: VE score model sampled by annealed Langevin dynamics", build: build_ncsn, smoke: &["model.sample_steps=5", "model.ode.rtol=1e-2"], smoke_image: &["model.net.unet_ch=8", "model.net.unet_groups=4"] },
        Entry {
            kind: "classifier",
            family: Family::Classifier,
            about: "CNN classifier of MNIST / Fashion-MNIST whose features score image samples (not a generative model)",
            build: build_classifier,
            smoke: &["model.channels=[4]", "model.feature_dim=8"],
            smoke_image: &[],
        },
    ]
}

/// The `[model]` keys (or tables, e.g. `ode`) of `kind` that may change on a trained run (eval, sample, sampler settings): they choose how
/// the trained model is sampled or how its likelihood is computed, never what it is. Any other model key changes the
/// model the weights belong to, and is refused there.
pub fn inference_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "ddpm" => &["sampler", "ddim_steps", "guidance_weight"],
        "score" | "ncsn" => &["sampler", "sample_steps", "snr", "langevin_steps", "ald_eps", "ode", "guidance_weight"],
        "diffflow" => &["sampler", "sample_steps", "denoise", "likelihood", "ode", "guidance_weight"],
        "vae" => &["eval_k", "sample_mean"],
        "cnf" => &["ode", "guidance_weight"],
        "survae" | "glow" | "realnvp" => &["eval_k"],
        _ => &[],
    }
}

/// Names of every model kind.
pub fn kinds() -> Vec<&'static str> {
    entries().iter().map(|e| e.kind).collect()
}

/// The entry for the `[model]` table's `kind`.
pub fn entry_for(model: &toml::Table, origin: &str) -> Result<Entry> {
    let Some(kind) = model.get("kind") else { bail!("{origin}: `model.kind` is missing (one of: {})", kinds().join(", ")) };
    let Some(kind) = kind.as_str() else { bail!("{origin}: `model.kind` must be a string, got {kind}") };
    match entries().into_iter().find(|e| e.kind == kind) {
        Some(e) => Ok(e),
        None => bail!("{origin}: unknown model kind `{kind}` in `model.kind` (known: {})", kinds().join(", ")),
    }
}

/// Builds the model an experiment's `[model]` table describes.
pub fn build(model: &toml::Table, path: &nn::Path, shape: &[i64], origin: &str) -> Result<(Box<dyn Model>, toml::Table)> {
    build_given(model, path, shape, None, origin)
}

/// Builds the model of a `[model]` table for data with contexts `context` (None: unconditional).
pub fn build_given(model: &toml::Table, path: &nn::Path, shape: &[i64], context: Option<&ContextSpec>, origin: &str) -> Result<(Box<dyn Model>, toml::Table)> {
    let entry = entry_for(model, origin)?;
    let mut params = model.clone();
    params.remove("kind");
    let (m, mut resolved) = (entry.build)(&params, path, shape, context, origin)
        .map_err(|e| if context.is_some() { e.context(format!("model kind `{}`", entry.kind)) } else { e })?;
    resolved.insert("kind".into(), toml::Value::String(entry.kind.into()));
    Ok((m, resolved))
}

/// Parses a kind's parameters, naming `model.<key>` and the file on error; returns them with defaults filled in.
fn params<T: DeserializeOwned + Serialize>(table: &toml::Table, origin: &str) -> Result<(T, toml::Table)> {
    let p: T = parse_value(toml::Value::Table(table.clone()), origin, "model")?;
    let resolved = toml::Table::try_from(&p)?;
    Ok((p, resolved))
}

/// The one constructor of every kind: parse `P` from the `[model]` table, build it for the data's shape.
pub fn build_kind<P: ModelParams>(t: &toml::Table, path: &nn::Path, shape: &[i64], context: Option<&ContextSpec>, origin: &str) -> Result<(Box<dyn Model>, toml::Table)> {
    let (p, resolved) = params::<P>(t, origin)?;
    let model = match context {
        Some(spec) => p.build_conditional(path, shape, spec),
        None => p.build(path, shape),
    };
    let model = model.map_err(|e| anyhow::anyhow!("{origin}: {e:#}"))?;
    Ok((model, resolved))
}

/// RealNVP on images is the multi-scale flow with RealNVP's defaults (Dinh et al. 2017, §4.1).
fn build_realnvp(t: &toml::Table, path: &nn::Path, shape: &[i64], context: Option<&ContextSpec>, origin: &str) -> Result<(Box<dyn Model>, toml::Table)> {
    if shape.len() != 3 {
        return build_kind::<RealNvpParams>(t, path, shape, context, origin);
    }
    let mut t = t.clone();
    for (k, v) in multiscale::realnvp_defaults() {
        t.entry(k).or_insert(v);
    }
    build_kind::<multiscale::MultiscaleParams>(&t, path, shape, context, origin)
}

/// NCSN = a VE score model with annealed Langevin sampling unless the table says otherwise.
fn build_ncsn(t: &toml::Table, path: &nn::Path, shape: &[i64], context: Option<&ContextSpec>, origin: &str) -> Result<(Box<dyn Model>, toml::Table)> {
    let mut t = t.clone();
    t.entry("sde").or_insert_with(|| toml::Value::String("ve".into()));
    t.entry("sampler").or_insert_with(|| toml::Value::String("ald".into()));
    build_kind::<ScoreParams>(&t, path, shape, context, origin)
}

/// Classifiers are trained by `relaxflow train` (see `classifier::train`) and are no `Model`: a clear error for
/// everything that needs a likelihood or a sampler.
fn build_classifier(_: &toml::Table, _: &nn::Path, _: &[i64], _: Option<&ContextSpec>, origin: &str) -> Result<(Box<dyn Model>, toml::Table)> {
    bail!(
        "{origin}: model kind `classifier` is not a generative model (no likelihood, no sampler), so eval and sample do not \
         apply; `relaxflow train` trains it, its summary.json holds the test accuracy, and it scores other runs' image \
         samples (relaxflow::classifier::image_quality)"
    )
}

/// The family a `[model]` table builds (an SNF without stochastic layers is a flow).
pub fn family_of(model: &toml::Table, origin: &str) -> Result<Family> {
    let entry = entry_for(model, origin)?;
    let stochastic = model.get("stochastic").and_then(|s| s.as_str()).unwrap_or("none");
    let key = |k: &str, default: &str| model.get(k).and_then(|v| v.as_str()).unwrap_or(default).to_string();
    let surjective = key("downsample", "slice") == "max_pool" || key("dequantization", "uniform") == "variational";
    Ok(match entry.kind {
        "snf" if stochastic == "none" => Family::Flow,
        "glow" | "realnvp" if surjective => Family::Survae,
        _ => entry.family,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn builds_with_defaults_filled_in() {
        let vs = nn::VarStore::new(Device::Cpu);
        let (m, resolved) = build(&table("kind = \"realnvp\"\nn_layers = 2"), &vs.root(), &[2], "f.toml").unwrap();
        assert_eq!(m.family(), Family::Flow);
        assert_eq!(resolved["hidden"].as_array().unwrap().len(), 2);
        assert_eq!(resolved["kind"].as_str(), Some("realnvp"));
    }

    #[test]
    fn network_table_and_family_keys_resolve_together() {
        let vs = nn::VarStore::new(Device::Cpu);
        let (_, resolved) = build(&table("kind = \"ddpm\"\ntimesteps = 10\n[net]\nhidden = [8]"), &vs.root(), &[2], "f.toml").unwrap();
        assert_eq!(resolved["timesteps"].as_integer(), Some(10));
        assert_eq!(resolved["net"]["hidden"].as_array().unwrap().len(), 1);
        assert_eq!(resolved["net"]["unet_ch"].as_integer(), Some(32), "network defaults are filled in too");
        let err = build(&table("kind = \"score\"\nsde = \"vp\"\nsampler = \"em\"\n[net]\nhiden = [8]"), &vs.root(), &[2], "f.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown field `hiden`") && err.contains("f.toml"), "{err}");
    }

    #[test]
    fn model_errors_name_the_key_and_file() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = |s: &str, shape: &[i64]| build(&table(s), &vs.root(), shape, "f.toml").err().unwrap().to_string();
        let e = err("kind = \"realnvp\"\nhiden = [3]", &[2]);
        assert!(e.contains("f.toml") && e.contains("model.hiden") && e.contains("unknown field `hiden`"), "{e}");
        let e = err("kind = \"realnvq\"", &[2]);
        assert!(e.contains("unknown model kind `realnvq`") && e.contains("realnvp"), "{e}");
        let e = err("kind = \"realnvp\"\nn_layers = \"two\"", &[2]);
        assert!(e.contains("`model.n_layers`") && e.contains("invalid type"), "{e}");
        let e = err("kind = \"classifier\"", &[1, 28, 28]);
        assert!(e.contains("f.toml") && e.contains("not a generative model"), "{e}");
        assert_eq!(family_of(&table("kind = \"classifier\""), "f.toml").unwrap(), Family::Classifier);
        let e = err("kind = \"nice\"", &[1, 28, 28]);
        assert!(e.contains("needs vector data") && e.contains("data.flatten"), "{e}");
    }
}
