//! The colour scale of heat maps: viridis (perceptually uniform, readable in grey), as RGB.

/// The colour of NaN cells.
pub const NAN_COLOUR: [u8; 3] = [0, 0, 0];

/// Viridis at nine stops, from dark purple (0) to yellow (1).
const STOPS: [[f64; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 82.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 145.0, 140.0],
    [39.0, 173.0, 129.0],
    [94.0, 201.0, 98.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

/// Viridis colour for t in \[0,1] (clamped; NaN is black), linearly interpolated between the stops.
pub fn colormap(t: f64) -> [u8; 3] {
    if t.is_nan() {
        return NAN_COLOUR;
    }
    let pos = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    std::array::from_fn(|k| (a[k] + f * (b[k] - a[k])).round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_ends_middle_and_nan() {
        assert_eq!(colormap(0.0), [68, 1, 84]);
        assert_eq!(colormap(1.0), [253, 231, 37]);
        assert_eq!(colormap(0.5), [33, 145, 140]);
        assert_eq!(colormap(-3.0), colormap(0.0));
        assert_eq!(colormap(7.0), colormap(1.0));
        assert_eq!(colormap(f64::NAN), NAN_COLOUR);
        // Monotone in brightness from end to end: green + red grows.
        let lum = |t: f64| colormap(t).iter().map(|&c| c as u32).sum::<u32>();
        assert!(lum(0.0) < lum(0.5) && lum(0.5) < lum(1.0));
    }
}
