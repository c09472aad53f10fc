//! A small DDPM-style U-Net for noise/score prediction on small images (Ho et al. 2020, App. B, simplified: one
//! ResBlock per resolution, no dropout; self-attention at chosen resolutions, e.g. 16x16 as DDPM on CIFAR-10, and then
//! in the middle too), built from a `tch::nn::Path` like the tch-rs examples.
//!
//! Layout for `mults = [1, 2, 2]` on 28x28: conv_in -> [Res 28x28, down] -> [Res 14x14, down] -> [Res 7x7]
//! -> Res, Res (middle, 7x7) -> [cat skip, Res, up] x3 mirrored -> GN -> SiLU -> conv_out (zero-initialised).
use super::attention::Attention;
use super::time::sinusoidal;
use anyhow::{bail, Result};
use tch::nn::{self, Module};
use tch::Tensor;


/// 3x3 convolution with padding 1 (keeps the spatial size) and torch's default initialisation.
fn conv3x3(p: nn::Path, c_in: i64, c_out: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, 3, nn::ConvConfig { padding: 1, ..Default::default() })
}

/// Residual block of the DDPM U-Net (Ho et al. 2020, App. B; the Wide-ResNet block of Zagoruyko & Komodakis 2016
/// with GroupNorm, Wu & He 2018): h = conv(SiLU(GN(conv(SiLU(GN(x))) + Linear(SiLU(temb))))), out = skip(x) + h.
#[derive(Debug)]
struct ResBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    temb: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    /// 1x1 projection when the width changes, identity otherwise.
    skip: Option<nn::Conv2D>,
}

impl ResBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, temb_dim: i64, groups: i64) -> Self {
        let skip = (c_in != c_out).then(|| nn::conv2d(&p / "skip", c_in, c_out, 1, Default::default()));
        ResBlock {
            norm1: nn::group_norm(&p / "norm1", groups, c_in, Default::default()),
            conv1: conv3x3(&p / "conv1", c_in, c_out),
            temb: nn::linear(&p / "temb", temb_dim, c_out, Default::default()),
            norm2: nn::group_norm(&p / "norm2", groups, c_out, Default::default()),
            conv2: conv3x3(&p / "conv2", c_out, c_out),
            skip,
        }
    }

    /// `x`: [B, c_in, H, W]; `temb_act`: SiLU of the time embedding, [B, temb_dim]. Output [B, c_out, H, W].
    fn forward(&self, x: &Tensor, temb_act: &Tensor) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = h + self.temb.forward(temb_act).unsqueeze(-1).unsqueeze(-1);
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        match &self.skip {
            Some(s) => s.forward(x) + h,
            None => x + h,
        }
    }
}

/// Down-sampling by a stride-2 3x3 convolution (Ho et al. 2020's `Downsample(with_conv=True)`).
#[derive(Debug)]
struct Downsample {
    conv: nn::Conv2D,
}

impl Downsample {
    fn new(p: nn::Path, c: i64) -> Self {
        let cfg = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
        Downsample { conv: nn::conv2d(p / "conv", c, c, 3, cfg) }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour x2 up-sampling followed by a 3x3 convolution (Ho et al. 2020's `Upsample(with_conv=True)`).
#[derive(Debug)]
struct Upsample {
    conv: nn::Conv2D,
}

impl Upsample {
    fn new(p: nn::Path, c: i64) -> Self {
        Upsample { conv: conv3x3(p / "conv", c, c) }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        self.conv.forward(&x.upsample_nearest2d([2 * h, 2 * w], None, None))
    }
}

/// Time embedding (Ho et al. 2020, App. B): sinusoidal(t, ch) -> Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch).
#[derive(Debug)]
struct TimeEmbedding {
    dim: i64,
    /// Highest frequency of the sinusoidal features (`time::MAX_FREQ` unless `UNet::with_max_freq`).
    max_freq: f64,
    lin1: nn::Linear,
    lin2: nn::Linear,
}

impl TimeEmbedding {
    fn new(p: nn::Path, ch: i64) -> Self {
        TimeEmbedding {
            dim: ch,
            max_freq: super::time::MAX_FREQ,
            lin1: nn::linear(&p / "lin1", ch, 4 * ch, Default::default()),
            lin2: nn::linear(&p / "lin2", 4 * ch, 4 * ch, Default::default()),
        }
    }

    /// `t`: [B] in [0, 1]; output [B, 4ch] of the given float kind.
    fn forward(&self, t: &Tensor, kind: tch::Kind) -> Tensor {
        let f = sinusoidal(t, self.dim, self.max_freq).to_kind(kind);
        self.lin2.forward(&self.lin1.forward(&f).silu())
    }
}

/// DDPM-style U-Net predicting a tensor of the input's shape from (x, t): one ResBlock per resolution, stride-2 conv
/// down-sampling, two middle ResBlocks, a mirrored up path with skip concatenation, and a zero-initialised output
/// convolution so the untrained network outputs exactly 0.
#[derive(Debug)]
pub struct UNet {
    time: TimeEmbedding,
    conv_in: nn::Conv2D,
    down: Vec<ResBlock>,
    downsample: Vec<Downsample>,
    mid: [ResBlock; 2],
    /// Indexed by level, like `down`; applied from the last level to the first.
    up: Vec<ResBlock>,
    /// `upsample[i - 1]` brings level i to level i - 1 (none at the top level).
    upsample: Vec<Upsample>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
    /// Linear map of conditioning features added to the time embedding (Ho & Salimans 2022; a conditional network
    /// only).
    cond: Option<nn::Linear>,
    /// Self-attention after each level's down and up ResBlock, by level (`with_attention`), and between the middle
    /// ResBlocks.
    attn_down: Vec<Option<Attention>>,
    attn_up: Vec<Option<Attention>>,
    attn_mid: Option<Attention>,
    widths: Vec<i64>,
    groups: i64,
}

impl UNet {
    /// `in_ch` image channels (1 for MNIST), `ch` base width (e.g. 32), `mults` per-resolution width multipliers
    /// (e.g. [1, 2, 2] for 28 -> 14 -> 7), `groups` for GroupNorm (e.g. 8; must divide every width).
    pub fn new(path: &nn::Path, in_ch: i64, ch: i64, mults: &[i64], groups: i64) -> Result<Self> {
        if mults.is_empty() {
            bail!("U-Net needs at least one resolution level (empty mults)");
        }
        if in_ch <= 0 || ch <= 0 || groups <= 0 || mults.iter().any(|&m| m <= 0) {
            bail!("U-Net sizes must be positive: in_ch {in_ch}, ch {ch}, mults {mults:?}, groups {groups}");
        }
        let widths: Vec<i64> = mults.iter().map(|&m| ch * m).collect();
        for &w in std::iter::once(&ch).chain(&widths) {
            if w % groups != 0 {
                bail!("GroupNorm groups {groups} does not divide U-Net width {w} (ch {ch}, mults {mults:?})");
            }
        }
        let temb_dim = 4 * ch;
        let last = widths.len() - 1;
        let (mut down, mut downsample) = (Vec::new(), Vec::new());
        let mut cur = ch;
        for (i, &w) in widths.iter().enumerate() {
            down.push(ResBlock::new(path / format!("down{i}") / "res", cur, w, temb_dim, groups));
            if i < last {
                downsample.push(Downsample::new(path / format!("down{i}") / "downsample", w));
            }
            cur = w;
        }
        let mid = [
            ResBlock::new(path / "mid" / "res0", cur, cur, temb_dim, groups),
            ResBlock::new(path / "mid" / "res1", cur, cur, temb_dim, groups),
        ];
        let (mut up, mut upsample) = (Vec::new(), Vec::new());
        for (i, &w) in widths.iter().enumerate() {
            // Input: the width coming from below (level i + 1, or the middle at the last level) plus the skip.
            let below = if i < last { widths[i + 1] } else { widths[last] };
            up.push(ResBlock::new(path / format!("up{i}") / "res", below + w, w, temb_dim, groups));
            if i > 0 {
                upsample.push(Upsample::new(path / format!("up{i}") / "upsample", w));
            }
        }
        let zero = nn::ConvConfig {
            padding: 1,
            ws_init: nn::Init::Const(0.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        Ok(UNet {
            time: TimeEmbedding::new(path / "time", ch),
            conv_in: conv3x3(path / "conv_in", in_ch, ch),
            down,
            downsample,
            mid,
            up,
            upsample,
            norm_out: nn::group_norm(path / "norm_out", groups, widths[0], Default::default()),
            conv_out: nn::conv2d(path / "conv_out", widths[0], in_ch, 3, zero),
            cond: None,
            attn_down: Vec::new(),
            attn_up: Vec::new(),
            attn_mid: None,
            widths,
            groups,
        })
    }

    /// The same network with sinusoidal time features up to frequency `f` (no variable changes).
    pub fn with_max_freq(mut self, f: f64) -> Self {
        self.time.max_freq = f;
        self
    }

    /// The same U-Net with self-attention at the levels whose feature maps are `side` x `side` for a side in
    /// `resolutions` (level i of an `image_side` input is image_side / 2^i), and in the middle when there is any; its
    /// variables are created after every other one, so without attention the net is `new`'s, variable for variable.
    pub fn with_attention(mut self, path: &nn::Path, image_side: i64, resolutions: &[i64]) -> Result<Self> {
        if resolutions.is_empty() {
            return Ok(self);
        }
        let sides: Vec<i64> = (0..self.widths.len()).map(|i| image_side >> i).collect();
        if let Some(r) = resolutions.iter().find(|r| !sides.contains(r)) {
            bail!("model.net.unet_attn: no U-Net level is {r}x{r} (the levels of a {image_side}x{image_side} image with {} multipliers are {sides:?})", self.widths.len());
        }
        let at = |i: usize, dir: &str| resolutions.contains(&sides[i]).then(|| Attention::new(path / format!("{dir}{i}") / "attn", self.widths[i], self.groups));
        self.attn_down = (0..self.widths.len()).map(|i| at(i, "down")).collect();
        self.attn_up = (0..self.widths.len()).map(|i| at(i, "up")).collect();
        self.attn_mid = Some(Attention::new(path / "mid" / "attn", self.widths[self.widths.len() - 1], self.groups));
        Ok(self)
    }

    fn attend(a: Option<&Option<Attention>>, h: Tensor) -> Tensor {
        match a {
            Some(Some(a)) => a.forward(&h),
            _ => h,
        }
    }

    /// The same U-Net reading conditioning features h [B, e] (a class or context embedding) through a Linear(e, 4ch)
    /// added to the time embedding; created after every other variable, so the rest initialises as in `new`.
    pub fn conditional(path: &nn::Path, in_ch: i64, ch: i64, mults: &[i64], groups: i64, e: i64) -> Result<Self> {
        let mut net = Self::new(path, in_ch, ch, mults, groups)?;
        net.cond = Some(nn::linear(path / "time" / "cond", e, 4 * ch, Default::default()));
        Ok(net)
    }

    /// `forward` of a conditional U-Net with features `h` [B, e].
    pub fn forward_given(&self, x: &Tensor, t: &Tensor, h: &Tensor) -> Tensor {
        let cond = self.cond.as_ref().expect("a U-Net built without conditioning features (UNet::conditional)");
        crate::native::amp::network(x, || {
            let temb = self.time.forward(t, x.kind()) + cond.forward(&h.to_kind(x.kind()));
            self.body(x, &temb.silu())
        })
    }

    /// x: [B, in_ch, H, W] with H, W divisible by 2^(mults.len()-1); t: \[B] float time in [0, 1]. Output: same
    /// shape as x, f32 for f32 input (under `train.precision = "bf16"` computed in bf16 autocast; see
    /// `native::amp::network`).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Tensor {
        crate::native::amp::network(x, || self.forward_at_precision(x, t))
    }

    /// The forward pass in whatever precision the caller set up.
    fn forward_at_precision(&self, x: &Tensor, t: &Tensor) -> Tensor {
        self.body(x, &self.time.forward(t, x.kind()).silu())
    }

    /// Everything after the time embedding: `temb_act` is SiLU of it, [B, 4ch].
    fn body(&self, x: &Tensor, temb_act: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(x);
        let mut skips = Vec::with_capacity(self.down.len());
        for (i, res) in self.down.iter().enumerate() {
            h = Self::attend(self.attn_down.get(i), res.forward(&h, temb_act));
            skips.push(h.shallow_clone());
            if let Some(ds) = self.downsample.get(i) {
                h = ds.forward(&h);
            }
        }
        h = self.mid[0].forward(&h, temb_act);
        if let Some(a) = &self.attn_mid {
            h = a.forward(&h);
        }
        h = self.mid[1].forward(&h, temb_act);
        for (i, res) in self.up.iter().enumerate().rev() {
            let skip = skips.pop().expect("one skip per level");
            h = Self::attend(self.attn_up.get(i), res.forward(&Tensor::cat(&[h, skip], 1), temb_act));
            if i > 0 {
                h = self.upsample[i - 1].forward(&h);
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h).silu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const OPTS: (Kind, Device) = (Kind::Float, Device::Cpu);

    fn small(vs: &nn::VarStore) -> UNet {
        UNet::new(&vs.root(), 1, 8, &[1, 2, 2], 4).unwrap()
    }

    /// Adds N(0, 0.1²) noise to every trainable variable, so the zero-initialised output conv stops masking the rest.
    fn perturb(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for mut v in vs.trainable_variables() {
                let noise = v.randn_like() * 0.1;
                let _ = v.g_add_(&noise);
            }
        });
    }

    #[test]
    fn output_has_input_shape_and_starts_at_zero() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = small(&vs);
        let x = Tensor::randn([2, 1, 28, 28], OPTS);
        let y = net.forward(&x, &Tensor::from_slice(&[0.1f32, 0.7]));
        assert_eq!(y.size(), x.size());
        assert_eq!(y.abs().max().double_value(&[]), 0.0, "zero-initialised output conv must give exactly 0");
    }

    #[test]
    fn perturbed_net_depends_on_time_and_every_variable_gets_a_gradient() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = small(&vs);
        perturb(&vs);
        let x = Tensor::randn([2, 1, 28, 28], OPTS);
        let a = net.forward(&x, &Tensor::from_slice(&[0.1f32, 0.1]));
        let b = net.forward(&x, &Tensor::from_slice(&[0.9f32, 0.9]));
        assert_eq!(a.size(), x.size());
        let diff = (&a - &b).abs().max().double_value(&[]);
        assert!(diff > 1e-5, "output must depend on t, max difference {diff}");

        let loss = (a - &x).square().mean(Kind::Float);
        loss.backward();
        let vars = vs.variables();
        assert!(!vars.is_empty());
        for (name, v) in vars {
            let g = v.grad();
            assert!(g.defined(), "{name}: no gradient");
            let g_max = g.abs().max().double_value(&[]);
            assert!(g_max.is_finite() && g_max > 0.0, "{name}: gradient max |g| = {g_max}");
        }
    }

    #[test]
    fn bf16_forward_is_close_to_f32_returns_f32_and_trains_f32_weights() {
        use crate::native::amp::{with_precision, Precision};
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = small(&vs);
        perturb(&vs);
        let x = Tensor::randn([2, 1, 28, 28], OPTS);
        let t = Tensor::from_slice(&[0.2f32, 0.6]);
        let f32_out = net.forward(&x, &t);
        let bf16_out = with_precision(Precision::Bf16, || net.forward(&x, &t)).unwrap();
        assert_eq!(bf16_out.kind(), Kind::Float);
        let rel = (&bf16_out - &f32_out).abs().max().double_value(&[]) / f32_out.abs().max().double_value(&[]);
        assert!(rel > 0.0 && rel < 0.1, "bf16 output {rel} (relative) away from f32");
        assert!(net.forward(&x, &t).equal(&f32_out), "f32 again afterwards, bit for bit");
        let loss = with_precision(Precision::Bf16, || net.forward(&x, &t)).unwrap().square().mean(Kind::Float);
        loss.backward();
        for (name, v) in vs.variables() {
            assert_eq!(v.grad().kind(), Kind::Float, "{name}");
            assert!(v.grad().isfinite().all().int64_value(&[]) == 1, "{name}: non-finite gradient");
        }
    }

    #[test]
    fn attention_at_16x16_goes_where_asked_starts_as_the_identity_and_trains() {
        tch::manual_seed(3);
        let (plain, attn) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
        let a = UNet::new(&plain.root(), 3, 8, &[1, 2, 2], 4).unwrap();
        tch::manual_seed(3);
        let b = UNet::new(&attn.root(), 3, 8, &[1, 2, 2], 4).unwrap().with_attention(&attn.root(), 32, &[16]).unwrap();
        let names: Vec<String> = attn.variables().into_keys().filter(|k| k.contains("attn")).collect();
        assert!(names.iter().all(|n| n.starts_with("down1.attn") || n.starts_with("up1.attn") || n.starts_with("mid.attn")), "{names:?}");
        assert_eq!(names.len(), 3 * 10, "three blocks of GN (2), q, k, v, out (2 each)");
        // Every other variable is `new`'s, value for value (created first, same seed).
        for (k, v) in plain.variables() {
            assert!(attn.variables()[&k].equal(&v), "{k}");
        }
        perturb(&plain);
        tch::no_grad(|| {
            for (k, mut v) in attn.variables() {
                if !k.contains("attn") {
                    v.copy_(&plain.variables()[&k]);
                }
            }
        });
        let x = Tensor::randn([2, 3, 32, 32], OPTS);
        let t = Tensor::from_slice(&[0.3f32, 0.8]);
        assert!((a.forward(&x, &t) - b.forward(&x, &t)).abs().max().double_value(&[]) < 1e-6, "new attention blocks are the identity");
        b.forward(&x, &t).square().mean(Kind::Float).backward();
        let g = attn.variables()["mid.attn.out.weight"].grad();
        assert!(g.abs().max().double_value(&[]) > 0.0, "the attention output projection learns");
        let err = UNet::new(&nn::VarStore::new(Device::Cpu).root(), 3, 8, &[1, 2], 4).unwrap().with_attention(&attn.root(), 32, &[8]).unwrap_err();
        assert!(err.to_string().contains("8x8") && err.to_string().contains("[32, 16]"), "{err}");
    }

    #[test]
    fn new_rejects_groups_not_dividing_a_width() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = UNet::new(&vs.root(), 1, 12, &[1, 2, 3], 8).unwrap_err().to_string();
        assert!(err.contains("width 12"), "{err}");
        let err = UNet::new(&vs.root(), 1, 8, &[1, 3], 6).unwrap_err().to_string();
        assert!(err.contains("width 8"), "{err}");
        assert!(UNet::new(&vs.root(), 1, 8, &[], 4).is_err());
        assert!(UNet::new(&vs.root(), 1, 0, &[1], 4).is_err());
    }

    /// Size and speed of the MNIST configuration (ch 32, mults [1, 2, 2]); informational, run with `--ignored`.
    #[test]
    #[ignore]
    fn report_size_and_cpu_time() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet::new(&vs.root(), 1, 32, &[1, 2, 2], 8).unwrap();
        perturb(&vs);
        let n: i64 = vs.trainable_variables().iter().map(|v| v.numel() as i64).sum();
        let x = Tensor::randn([64, 1, 28, 28], OPTS);
        let t = Tensor::rand([64], OPTS);
        let step = || {
            vs.trainable_variables().iter_mut().for_each(|v| v.zero_grad());
            net.forward(&x, &t).square().mean(Kind::Float).backward();
        };
        step();
        let reps = 3;
        let start = std::time::Instant::now();
        for _ in 0..reps {
            step();
        }
        let per = start.elapsed().as_secs_f64() / reps as f64;
        eprintln!("UNet ch 32 mults [1,2,2]: {n} parameters; forward+backward at batch 64: {per:.3} s");
    }
}
