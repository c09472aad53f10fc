//! The classifier network: a small CNN for 28x28 one-channel images (MNIST, Fashion-MNIST).
//!
//! Per entry of `channels`: conv3x3 (padding 1) -> ReLU -> 2x2 max pooling; then the flattened maps go through
//! linear -> ReLU, the `feature_dim`-dimensional "feature" layer whose activations the Fréchet distance compares
//! (as FID uses Inception's pool layer, Heusel et al. 2017, §3), and a final linear layer to 10 logits.
//! With the defaults (channels [32, 64], 128 features): 28² -> 14² -> 7², 3136 -> 128 -> 10, about 420k parameters.
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

/// Image side the network expects.
pub const SIDE: i64 = 28;
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
}

impl Default for ClassifierParams {
    fn default() -> Self {
        ClassifierParams {
            channels: vec![32, 64],
            feature_dim: 128,
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
}

impl Classifier {
    pub fn new(path: &nn::Path, p: &ClassifierParams) -> Result<Self> {
        ensure!(!p.channels.is_empty(), "model.channels needs at least one entry");
        ensure!(p.channels.iter().all(|&c| c > 0), "model.channels must be positive, got {:?}", p.channels);
        ensure!(p.feature_dim > 0, "model.feature_dim must be positive, got {}", p.feature_dim);
        ensure!(p.channels.len() <= 4, "model.channels: at most 4 pooling blocks fit a 28x28 image, got {}", p.channels.len());
        let mut c_in = 1;
        let mut side = SIDE;
        let mut convs = Vec::new();
        for (i, &c) in p.channels.iter().enumerate() {
            convs.push(nn::conv2d(path.sub(format!("conv{i}")), c_in, c, 3, nn::ConvConfig { padding: 1, ..Default::default() }));
            c_in = c;
            side /= 2;
        }
        let flat = c_in * side * side;
        Ok(Classifier {
            convs,
            feature: nn::linear(path.sub("feature"), flat, p.feature_dim, Default::default()),
            head: nn::linear(path.sub("head"), p.feature_dim, CLASSES, Default::default()),
            feature_dim: p.feature_dim,
        })
    }

    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// The penultimate ReLU activations [N, feature_dim] of images [N, 1, 28, 28] or [N, 784].
    pub fn features(&self, x: &Tensor) -> Tensor {
        let mut h = as_images(x);
        for conv in &self.convs {
            h = conv.forward(&h).relu().max_pool2d_default(2);
        }
        self.feature.forward(&h.flatten(1, -1)).relu()
    }

    /// Class logits [N, 10] from features [N, feature_dim].
    pub fn head(&self, features: &Tensor) -> Tensor {
        self.head.forward(features)
    }

    /// Class logits [N, 10] of images [N, 1, 28, 28] or [N, 784].
    pub fn logits(&self, x: &Tensor) -> Tensor {
        self.head(&self.features(x))
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

/// (accuracy, mean cross-entropy in nats) of `net` on images [N, 1, 28, 28] in [0, 1] with labels \[N], in batches.
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

/// Images [N, 1, 28, 28] from [N, 1, 28, 28], [N, 28, 28] or [N, 784].
///
/// # Panics
/// On any other shape (a programming error: callers check sample shapes first).
pub fn as_images(x: &Tensor) -> Tensor {
    let size = x.size();
    let per_example: i64 = size.iter().skip(1).product();
    assert!(
        !size.is_empty() && per_example == SIDE * SIDE,
        "the classifier takes [N, 1, 28, 28] or [N, 784] images, got shape {size:?}"
    );
    x.reshape([size[0], 1, SIDE, SIDE])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_of_features_and_logits_for_images_and_vectors() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Classifier::new(&vs.root(), &ClassifierParams::default()).unwrap();
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
    fn odd_settings_are_errors() {
        let vs = nn::VarStore::new(Device::Cpu);
        let bad = |channels: Vec<i64>, feature_dim: i64| Classifier::new(&vs.root(), &ClassifierParams { channels, feature_dim }).unwrap_err().to_string();
        assert!(bad(vec![], 8).contains("at least one"));
        assert!(bad(vec![4, 0], 8).contains("positive"));
        assert!(bad(vec![4], 0).contains("feature_dim"));
        assert!(bad(vec![2; 5], 8).contains("at most 4"));
    }

    #[test]
    #[should_panic(expected = "[N, 1, 28, 28] or [N, 784]")]
    fn wrong_image_size_panics_with_the_shape() {
        let _ = as_images(&Tensor::zeros([2, 100], (Kind::Float, Device::Cpu)));
    }
}
