//! The median every report uses for a typical value (handshake times, how
//! long clients waited), so that one report never computes two medians two ways.

/// The middle value, or the mean of the middle pair for an even count.
/// Sorts `values` in place (NaNs last, by `total_cmp`).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn odd_even_and_empty() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [7.0]), Some(7.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        // The upper-middle rule would say 3.0 here.
        assert_eq!(median(&mut [1.0, 3.0]), Some(2.0));
    }
}
