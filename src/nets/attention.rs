//! The self-attention block of the DDPM U-Net (Ho et al. 2020, App. B: "self-attention at the 16x16 resolution";
//! the `AttnBlock` of its code): one head over the H·W positions of a feature map,
//! out = x + W_o · softmax(QᵀK / √C) V with Q, K, V 1x1 projections of GroupNorm(x). W_o starts at zero (as the
//! reference code's `init_scale = 0`), so a new block is the identity and adding one leaves the untrained net as it was.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct Attention {
    norm: nn::GroupNorm,
    q: nn::Conv2D,
    k: nn::Conv2D,
    v: nn::Conv2D,
    out: nn::Conv2D,
}

impl Attention {
    /// A block over `c` channels with GroupNorm of `groups` groups.
    pub fn new(p: nn::Path, c: i64, groups: i64) -> Self {
        let one = |name: &str| nn::conv2d(&p / name, c, c, 1, Default::default());
        let zero = nn::ConvConfig { ws_init: nn::Init::Const(0.0), bs_init: nn::Init::Const(0.0), ..Default::default() };
        Attention {
            norm: nn::group_norm(&p / "norm", groups, c, Default::default()),
            q: one("q"),
            k: one("k"),
            v: one("v"),
            out: nn::conv2d(&p / "out", c, c, 1, zero),
        }
    }

    /// `x`: [B, C, H, W] to the same shape.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("attention reads [B, C, H, W] feature maps");
        let n = self.norm.forward(x);
        let flat = |t: Tensor| t.reshape([b, c, h * w]);
        let (q, k, v) = (flat(self.q.forward(&n)), flat(self.k.forward(&n)), flat(self.v.forward(&n)));
        // weights[b, i, j] = softmax_j(q_i · k_j / √C): each position i attends over all positions j.
        // The softmax in at least f32 (bf16 autocast included).
        let kind = if x.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let weights = (q.transpose(1, 2).matmul(&k) / (c as f64).sqrt()).softmax(-1, kind).to_kind(x.kind());
        let attended = v.matmul(&weights.transpose(1, 2)).reshape([b, c, h, w]);
        x + self.out.forward(&attended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_new_block_is_the_identity_and_a_trained_one_mixes_positions_by_the_softmax_of_qk() {
        tch::manual_seed(0);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let att = Attention::new(vs.root() / "a", 8, 4);
        let x = Tensor::randn([2, 8, 4, 4], (Kind::Double, Device::Cpu));
        vs.double();
        let att_x = att.forward(&x);
        assert!(att_x.equal(&x), "zero-initialised output projection: the identity");
        // Perturb every weight, then compare with the attention written out position by position.
        tch::no_grad(|| {
            for mut v in vs.trainable_variables() {
                let _ = v.g_add_(&(v.randn_like() * 0.3));
            }
        });
        let got = att.forward(&x);
        let n = att.norm.forward(&x);
        let (q, k, v) = (att.q.forward(&n), att.k.forward(&n), att.v.forward(&n));
        let pos = |t: &Tensor, b: i64, i: i64| t.get(b).reshape([8, 16]).select(1, i);
        let mut rows = Vec::new();
        for b in 0..2 {
            let mut cols = Vec::new();
            for i in 0..16 {
                let scores = Tensor::stack(&(0..16).map(|j| pos(&q, b, i).dot(&pos(&k, b, j)) / 8f64.sqrt()).collect::<Vec<_>>(), 0);
                let w = scores.softmax(0, Kind::Double);
                let mixed = (0..16).map(|j| pos(&v, b, j) * w.get(j)).reduce(|a, c| a + c).unwrap();
                cols.push(mixed);
            }
            rows.push(Tensor::stack(&cols, 1).reshape([8, 4, 4]));
        }
        let want = &x + att.out.forward(&Tensor::stack(&rows, 0));
        assert!((&got - &want).abs().max().double_value(&[]) < 1e-10);
        assert!((&got - &x).abs().max().double_value(&[]) > 1e-3, "a perturbed block changes its input");
    }
}
