//! The classifier network: a small CNN for [C, H, W] images (1x28x28 MNIST and Fashion-MNIST, 3x32x32 CIFAR-10 or
//! a centre crop of it).
//!
//! Per entry of `channels`: conv3x3 (padding 1) -> ReLU -> 2x2 max pooling; then the flattened maps go through
//! linear -> ReLU, the `feature_dim`-dimensional "feature" layer whose activations the Fréchet distance compares
//! (as FID uses Inception's pool layer, Heusel et al. 2017, §3), and a final linear layer to 10 logits.
//! With the defaults (channels [32, 64], 128 features): 28² -> 14² -> 7², 3136 -> 128 -> 10, about 420k parameters.
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

/// The image shape [C, H, W] of MNIST and Fashion-MNIST (and of classifier runs whose summary predates `shape`).
pub const MNIST_SHAPE: [i64; 3] = [1, 28, 28];
/// Number of classes (digits or Fashion-MNIST's garment kinds).
pub const CLASSES: i64 = 10;

/// The `[model]` table of a `kind = "classifier"` experiment (without `kind`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierParams {
    /// Output channels of each conv3x3 -> ReLU -> maxpool2 block.
    pub channels: Vec<i64>,
    /// Width of the penultimate (feature) layer.
    pub feature_dim: i64,
    /// Flip each training image left-right with probability 1/2 (CIFAR-10's objects are mirror-symmetric, digits
    /// are not). Off by default: it draws random numbers.
    pub flip: bool,
}

impl Default for ClassifierParams {
    fn default() -> Self {
        ClassifierParams {
            channels: vec![32, 64],
            feature_dim: 128,
            flip: false,
        }
    }
}

/// The CNN; `features` and `logits` take images in [0, 1].
#[derive(Debug)]
pub struct Classifier {
    convs: Vec<nn::Conv2D>,
    feature: nn::Linear,
    head: nn::Linear,
    feature_dim: i64,
    /// The image shape [C, H, W] it takes.
    shape: [i64; 3],
}

impl Classifier {
    /// The CNN for images of `shape` [C, H, W].
    pub fn new(path: &nn::Path, p: &ClassifierParams, shape: [i64; 3]) -> Result<Self> {
        ensure!(!p.channels.is_empty(), "model.channels needs at least one entry");
        ensure!(p.channels.iter().all(|&c| c > 0), "model.channels must be positive, got {:?}", p.channels);
        ensure!(p.feature_dim > 0, "model.feature_dim must be positive, got {}", p.feature_dim);
        let [c_in, h, w] = shape;
        ensure!(c_in > 0 && h > 0 && w > 0, "the classifier needs images [C, H, W] with positive sizes, got {shape:?}");
        let fit = (h.min(w) as f64).log2().floor() as usize;
        ensure!(p.channels.len() <= fit, "model.channels: at most {fit} pooling blocks fit a {h}x{w} image, got {}", p.channels.len());
        let (mut c_in, mut h, mut w) = (c_in, h, w);
        let mut convs = Vec::new();
        for (i, &c) in p.channels.iter().enumerate() {
            convs.push(nn::conv2d(path.sub(format!("conv{i}")), c_in, c, 3, nn::ConvConfig { padding: 1, ..Default::default() }));
            c_in = c;
            (h, w) = (h / 2, w / 2);
        }
        let flat = c_in * h * w;
        Ok(Classifier {
            convs,
            feature: nn::linear(path.sub("feature"), flat, p.feature_dim, Default::default()),
            head: nn::linear(path.sub("head"), p.feature_dim, CLASSES, Default::default()),
            feature_dim: p.feature_dim,
            shape,
        })
    }

    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// The image shape [C, H, W] the network takes.
    pub fn shape(&self) -> [i64; 3] {
        self.shape
    }

    /// The penultimate ReLU activations [N, feature_dim] of images [N, C, H, W] or [N, C·H·W].
    pub fn features(&self, x: &Tensor) -> Tensor {
        let mut h = self.as_images(x);
        for conv in &self.convs {
            h = conv.forward(&h).relu().max_pool2d_default(2);
        }
        self.feature.forward(&h.flatten(1, -1)).relu()
    }

    /// Class logits [N, 10] from features [N, feature_dim].
    pub fn head(&self, features: &Tensor) -> Tensor {
        self.head.forward(features)
    }

    /// Class logits [N, 10] of images [N, C, H, W] or [N, C·H·W].
    pub fn logits(&self, x: &Tensor) -> Tensor {
        self.head(&self.features(x))
    }

    /// Images [N, C, H, W] from [N, C, H, W] or any [N, ...] with C·H·W values per row.
    ///
    /// # Panics
    /// On any other shape (a programming error: callers check sample shapes first).
    pub fn as_images(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let per_example: i64 = size.iter().skip(1).product();
        let [c, h, w] = self.shape;
        assert!(!size.is_empty() && per_example == c * h * w, "the classifier takes [N, {c}, {h}, {w}] or [N, {}] images, got shape {size:?}", c * h * w);
        x.reshape([size[0], c, h, w])
    }
}

/// A trained classifier with what its run recorded: the folder, the dataset and the test accuracy.
pub struct Trained {
    pub vs: nn::VarStore,
    pub net: Classifier,
    pub run: std::path::PathBuf,
    pub dataset: String,
    pub test_accuracy: f64,
}

/// (accuracy, mean cross-entropy in nats) of `net` on images [N, C, H, W] in [0, 1] with labels \[N], in batches.
pub fn evaluate(net: &Classifier, images: &Tensor, labels: &Tensor, batch_size: i64, device: tch::Device) -> (f64, f64) {
    let n = labels.size()[0];
    let (mut correct, mut nll) = (0i64, 0.0);
    tch::no_grad(|| {
        for start in (0..n).step_by(batch_size.max(1) as usize) {
            let len = batch_size.min(n - start);
            let logits = net.logits(&images.narrow(0, start, len).to_device(device));
            let y = labels.narrow(0, start, len).to_device(device);
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(tch::Kind::Int64).int64_value(&[]);
            nll += logits.cross_entropy_for_logits(&y).double_value(&[]) * len as f64;
        }
    });
    (correct as f64 / n.max(1) as f64, nll / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_of_features_and_logits_for_images_and_vectors() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Classifier::new(&vs.root(), &ClassifierParams::default(), MNIST_SHAPE).unwrap();
        let x = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu));
        let f = net.features(&x);
        assert_eq!(f.size(), vec![3, 128]);
        assert!(f.min().double_value(&[]) >= 0.0, "features are ReLU outputs");
        assert_eq!(net.logits(&x).size(), vec![3, 10]);
        let flat = net.logits(&x.reshape([3, 784]));
        assert!(flat.allclose(&net.logits(&x), 1e-6, 1e-6, false), "[N, 784] input is the same images");
        let n_params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(n_params, (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3136 * 128 + 128) + (128 * 10 + 10));
    }

    #[test]
    fn colour_images_of_any_side_pool_down_to_their_own_flat_size() {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = ClassifierParams { channels: vec![8, 16, 32], feature_dim: 24, flip: true };
        let net = Classifier::new(&vs.root(), &p, [3, 32, 32]).unwrap();
        let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!((net.features(&x).size(), net.logits(&x.reshape([2, 3072])).size()), (vec![2, 24], vec![2, 10]));
        let n_params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        // 32² -> 16² -> 8² -> 4²: 32 · 16 = 512 flat features.
        assert_eq!(n_params, (27 * 8 + 8) + (72 * 16 + 16) + (144 * 32 + 32) + (512 * 24 + 24) + (24 * 10 + 10));
        // A 16x16 crop holds at most 4 pooling blocks.
        let vs = nn::VarStore::new(Device::Cpu);
        let e = Classifier::new(&vs.root(), &ClassifierParams { channels: vec![4; 5], ..p }, [3, 16, 16]).unwrap_err().to_string();
        assert!(e.contains("at most 4") && e.contains("16x16"), "{e}");
    }

    #[test]
    fn odd_settings_are_errors() {
        let vs = nn::VarStore::new(Device::Cpu);
        let bad = |channels: Vec<i64>, feature_dim: i64| {
            Classifier::new(&vs.root(), &ClassifierParams { channels, feature_dim, flip: false }, MNIST_SHAPE).unwrap_err().to_string()
        };
        assert!(bad(vec![], 8).contains("at least one"));
        assert!(bad(vec![4, 0], 8).contains("positive"));
        assert!(bad(vec![4], 0).contains("feature_dim"));
        assert!(bad(vec![2; 5], 8).contains("at most 4"));
    }

    #[test]
    #[should_panic(expected = "[N, 1, 28, 28] or [N, 784]")]
    fn wrong_image_size_panics_with_the_shape() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Classifier::new(&vs.root(), &ClassifierParams::default(), MNIST_SHAPE).unwrap();
        let _ = net.as_images(&Tensor::zeros([2, 100], (Kind::Float, Device::Cpu)));
    }
}
