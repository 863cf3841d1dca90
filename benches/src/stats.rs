//! Small statistics over repeated measurements: median, min, max.

/// The summary of one measured quantity over several runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub count: usize,
}

/// The values sorted ascending; NaNs are dropped (a run that measured nothing
/// is left out, not counted as zero).
fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The median of `values`, `None` if there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let v = sorted(values);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The smallest of `values`.
pub fn min(values: &[f64]) -> Option<f64> {
    sorted(values).first().copied()
}

/// The largest of `values`.
pub fn max(values: &[f64]) -> Option<f64> {
    sorted(values).last().copied()
}

/// Median, min and max together, `None` if there are no values.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    Some(Summary {
        median: median(values)?,
        min: min(values)?,
        max: max(values)?,
        count: sorted(values).len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
    }

    #[test]
    fn empty_input_has_no_statistics() {
        assert_eq!(median(&[]), None);
        assert_eq!(min(&[]), None);
        assert_eq!(max(&[]), None);
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn min_and_max_ignore_order() {
        let v = [5.0, -1.0, 9.5, 0.0];
        assert_eq!(min(&v), Some(-1.0));
        assert_eq!(max(&v), Some(9.5));
    }

    #[test]
    fn nan_values_are_left_out() {
        let v = [2.0, f64::NAN, 4.0];
        assert_eq!(median(&v), Some(3.0));
        assert_eq!(
            summarize(&v),
            Some(Summary {
                median: 3.0,
                min: 2.0,
                max: 4.0,
                count: 2
            })
        );
    }

    #[test]
    fn median_is_robust_to_one_outlier() {
        assert_eq!(median(&[30.0, 31.0, 29.0, 32.0, 900.0]), Some(31.0));
    }
}
