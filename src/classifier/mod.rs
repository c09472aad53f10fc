//! relaxflow's own image classifier for MNIST and Fashion-MNIST, and the sample-quality measures built on it.
//!
//! Inception weights are not available offline, so FID cannot be computed; instead a small CNN trained here
//! (`relaxflow train mnist-classifier` / `fashion-classifier`) supplies the feature space of a Fréchet distance and
//! the predictions behind class coverage. The numbers compare runs with each other (same n, same classifier), not
//! with published FIDs.
//!
//! net.rs: the CNN; data.rs: labelled IDX images; train.rs: training runs and opening them; summary.rs: the run's
//! summary.json; frechet.rs: the Fréchet distance of two feature sets; quality.rs: `image_quality` of samples.
pub mod data;
pub mod frechet;
pub mod net;
pub mod quality;
pub mod summary;
pub mod train;

pub use frechet::frechet_distance;
pub use net::{Classifier, ClassifierParams};
pub use quality::{find_classifier, image_quality, image_quality_if_trained, ImageQuality};
pub use summary::ClassifierSummary;
