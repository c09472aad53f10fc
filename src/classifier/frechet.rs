//! The Fréchet (2-Wasserstein) distance between Gaussians fitted to two feature sets (Dowson & Landau 1982), the
//! quantity behind FID (Heusel et al. 2017, §3):
//!
//!   d² = ||μ_a - μ_b||² + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).
//!
//! S_a S_b need not be symmetric, but it has the eigenvalues of the symmetric positive semi-definite
//! S_a^{1/2} S_b S_a^{1/2} (AB and BA share their eigenvalues, with A = S_a^{1/2}, B = S_a^{1/2} S_b), so
//! Tr (S_a S_b)^{1/2} = Σ_i sqrt(λ_i(S_a^{1/2} S_b S_a^{1/2})): two symmetric eigendecompositions in f64, with tiny
//! negative eigenvalues (rounding, or rank-deficient covariances when n ≤ d) clamped to zero.
use tch::{Device, Kind, Tensor};

/// Fréchet distance between Gaussians fitted to feature sets `a` [n, d] and `b` [m, d] (means, and unbiased
/// covariances with n - 1 as in the reference FID code). The sets need at least two rows each.
///
/// # Panics
/// When the sets are not 2-D with the same number of columns, or have fewer than two rows.
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> f64 {
    let (sa, sb) = (a.size(), b.size());
    assert!(sa.len() == 2 && sb.len() == 2 && sa[1] == sb[1], "feature sets must be [n, d] with one d, got {sa:?} and {sb:?}");
    assert!(sa[0] >= 2 && sb[0] >= 2, "a covariance needs at least two rows, got {} and {}", sa[0], sb[0]);
    let (mu_a, cov_a) = moments(a);
    let (mu_b, cov_b) = moments(b);
    gaussian_frechet(&mu_a, &cov_a, &mu_b, &cov_b)
}

/// Mean \[d] and unbiased covariance [d, d] of the rows of `x` [n, d], in f64 on the CPU.
pub fn moments(x: &Tensor) -> (Tensor, Tensor) {
    let x = x.to_device(Device::Cpu).to_kind(Kind::Double);
    let mu = x.mean_dim(0, false, Kind::Double);
    let centred = &x - &mu;
    let cov = centred.transpose(0, 1).matmul(&centred) / (x.size()[0] - 1) as f64;
    (mu, cov)
}

/// ||μ_a - μ_b||² + Tr S_a + Tr S_b - 2 Σ sqrt(λ(S_a^{1/2} S_b S_a^{1/2})) for means \[d] and covariances [d, d].
pub fn gaussian_frechet(mu_a: &Tensor, cov_a: &Tensor, mu_b: &Tensor, cov_b: &Tensor) -> f64 {
    let f64_cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    let (mu_a, cov_a, mu_b, cov_b) = (f64_cpu(mu_a), f64_cpu(cov_a), f64_cpu(mu_b), f64_cpu(cov_b));
    let mean_term = (&mu_a - &mu_b).square().sum(Kind::Double).double_value(&[]);
    let root_a = sqrt_psd(&cov_a);
    let m = root_a.matmul(&cov_b).matmul(&root_a);
    let trace_root = symmetric(&m).linalg_eigvalsh("L").clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]);
    let trace = |c: &Tensor| c.trace().double_value(&[]);
    mean_term + trace(&cov_a) + trace(&cov_b) - 2.0 * trace_root
}

/// (M + Mᵀ)/2: removes the rounding asymmetry before a symmetric eigensolver.
fn symmetric(m: &Tensor) -> Tensor {
    (m + m.transpose(0, 1)) * 0.5
}

/// The symmetric square root V diag(sqrt(max(λ, 0))) Vᵀ of a positive semi-definite matrix.
fn sqrt_psd(m: &Tensor) -> Tensor {
    let (lambda, v) = symmetric(m).linalg_eigh("L");
    (&v * lambda.clamp_min(0.0).sqrt()).matmul(&v.transpose(0, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: (Kind, Device) = (Kind::Double, Device::Cpu);

    /// n rows whose sample mean is exactly 0 and sample covariance exactly I (whitened Gaussian draws).
    fn white(n: i64, d: i64) -> Tensor {
        let x = Tensor::randn([n, d], CPU);
        let (mu, cov) = moments(&x);
        let l = cov.linalg_cholesky(false);
        // x_c L⁻ᵀ has covariance L⁻¹ S L⁻ᵀ = I.
        (x - mu).matmul(&Tensor::linalg_inv(&l).transpose(0, 1))
    }

    /// Rows with sample mean `mu` and sample covariance L Lᵀ exactly.
    fn with_moments(n: i64, mu: &[f64], l: &Tensor) -> Tensor {
        white(n, mu.len() as i64).matmul(&l.transpose(0, 1)) + Tensor::from_slice(mu)
    }

    #[test]
    fn identical_sets_are_at_distance_zero_and_the_distance_is_symmetric() {
        tch::manual_seed(0);
        let a = Tensor::randn([500, 16], CPU).exp();
        assert!(frechet_distance(&a, &a).abs() < 1e-8, "{}", frechet_distance(&a, &a));
        // Rank-deficient covariances (n < d) still give zero: negative rounding eigenvalues are clamped.
        let small = Tensor::randn([10, 32], CPU);
        assert!(frechet_distance(&small, &small).abs() < 1e-6, "{}", frechet_distance(&small, &small));
        let b = Tensor::randn([400, 16], CPU) * 1.5 + 0.3;
        let (ab, ba) = (frechet_distance(&a, &b), frechet_distance(&b, &a));
        assert!(ab > 1.0 && (ab - ba).abs() < 1e-8 * ab, "{ab} vs {ba}");
        // f32 input (what the classifier gives) is promoted to f64.
        assert!((frechet_distance(&a.to_kind(Kind::Float), &b.to_kind(Kind::Float)) - ab).abs() < 1e-4 * ab);
    }

    #[test]
    fn diagonal_covariances_match_the_closed_form() {
        // d² = Σ (sqrt(a_i) - sqrt(b_i))² + ||Δμ||² when both covariances are diagonal.
        tch::manual_seed(1);
        let (var_a, var_b) = ([1.0, 4.0, 0.25, 9.0], [2.0, 1.0, 0.25, 16.0]);
        let (mu_a, mu_b) = ([0.0, 1.0, -2.0, 0.5], [1.0, 1.0, 0.0, -0.5]);
        let diag = |v: &[f64]| Tensor::from_slice(v).sqrt().diag(0);
        let a = with_moments(300, &mu_a, &diag(&var_a));
        let b = with_moments(200, &mu_b, &diag(&var_b));
        let expected: f64 = (0..4).map(|i| (var_a[i].sqrt() - var_b[i].sqrt()).powi(2) + (mu_a[i] - mu_b[i]).powi(2)).sum();
        let got = frechet_distance(&a, &b);
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        // A pure shift is ||Δμ||².
        let shifted = &a + Tensor::from_slice(&[3.0, 0.0, -4.0, 0.0]);
        assert!((frechet_distance(&a, &shifted) - 25.0).abs() < 1e-9);
    }

    #[test]
    fn full_two_by_two_covariances_match_the_hand_square_root() {
        // For a 2x2 matrix M with non-negative eigenvalues, sqrt(M) = (M + sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M)),
        // so Tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)). Here M = S_a S_b (not symmetric).
        tch::manual_seed(2);
        let (sa, sb): ([[f64; 2]; 2], [[f64; 2]; 2]) = ([[2.0, 0.8], [0.8, 1.0]], [[0.5, -0.3], [-0.3, 3.0]]);
        let m = [
            [sa[0][0] * sb[0][0] + sa[0][1] * sb[1][0], sa[0][0] * sb[0][1] + sa[0][1] * sb[1][1]],
            [sa[1][0] * sb[0][0] + sa[1][1] * sb[1][0], sa[1][0] * sb[0][1] + sa[1][1] * sb[1][1]],
        ];
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        let trace_root = (m[0][0] + m[1][1] + 2.0 * det.sqrt()).sqrt();
        let (mu_a, mu_b): ([f64; 2], [f64; 2]) = ([1.0, -1.0], [0.5, 0.0]);
        let dmu = (mu_a[0] - mu_b[0]).powi(2) + (mu_a[1] - mu_b[1]).powi(2);
        let expected = dmu + sa[0][0] + sa[1][1] + sb[0][0] + sb[1][1] - 2.0 * trace_root;

        let to_tensor = |s: [[f64; 2]; 2]| Tensor::from_slice(&[s[0][0], s[0][1], s[1][0], s[1][1]]).view([2, 2]);
        let got = gaussian_frechet(&Tensor::from_slice(&mu_a), &to_tensor(sa), &Tensor::from_slice(&mu_b), &to_tensor(sb));
        assert!((got - expected).abs() < 1e-10, "{got} vs {expected}");
        // The same through sample sets with exactly these moments.
        let chol = |s: [[f64; 2]; 2]| to_tensor(s).linalg_cholesky(false);
        let (a, b) = (with_moments(100, &mu_a, &chol(sa)), with_moments(150, &mu_b, &chol(sb)));
        let got = frechet_distance(&a, &b);
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        assert!(expected > 0.5, "a case that is not near zero: {expected}");
    }
}
