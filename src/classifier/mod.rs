//! relaxflow's own image classifier for MNIST and Fashion-MNIST, and the sample-quality measures built on it.
//!
//! Inception weights are not available offline, so FID cannot be computed; instead a small CNN trained here
//! (`relaxflow train mnist-classifier` / `fashion-classifier`) supplies the feature space of a Fréchet distance and
//! the predictions behind class coverage. The numbers compare runs with each other (same n, same classifier), not
//! with published FIDs.
//!
//! net.rs: the CNN (and `Trained`, an opened run); data.rs: labelled IDX images; frechet.rs: the Fréchet distance of
//! two feature sets; quality.rs: `image_quality` of samples. Nothing here knows the runner: training a classifier
//! and opening its run folder are `runner::classifier_run`'s, and the runner calls `image_quality` as a service.
pub mod data;
pub mod frechet;
pub mod net;
pub mod quality;

pub use frechet::frechet_distance;
pub use net::{evaluate, Classifier, ClassifierParams, Trained};
pub use quality::{find_classifier, image_quality, ImageQuality};
