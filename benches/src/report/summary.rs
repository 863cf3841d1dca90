//! Figures as the report prints them: a series' median with its min-max
//! spread, and its ratio to the bare process, on top of the crate's
//! [`crate::stats`].

use crate::stats::{self, Summary};

/// The ratio of `value` to `base` (how many times the bare figure), `None`
/// when either is missing or the base is not positive.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    (value.is_finite() && base.is_finite() && base > 0.0).then(|| value / base)
}

/// The ratio of two series' medians.
pub fn median_ratio(values: &[f64], base: &[f64]) -> Option<f64> {
    ratio(stats::median(values)?, stats::median(base)?)
}

/// A number with a precision that suits its size (3 significant digits
/// or so; no exponent notation, which tables read badly).
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `median (min-max)` of a series with a unit, or `-` when empty.
pub fn fmt_spread(values: &[f64], unit: &str) -> String {
    match stats::summarize(values) {
        Some(Summary {
            median, min, max, ..
        }) => {
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" {unit}")
            };
            // A spread that rounds away is not shown.
            if values.len() == 1 || fmt_num(min) == fmt_num(max) {
                format!("{}{unit}", fmt_num(median))
            } else {
                format!(
                    "{}{unit} ({}-{})",
                    fmt_num(median),
                    fmt_num(min),
                    fmt_num(max)
                )
            }
        }
        None => "-".into(),
    }
}

/// `×R` for a ratio to bare, or `-`.
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("×{}", fmt_num(r)),
        None => "-".into(),
    }
}

/// KiB values as MiB.
pub fn kib_to_mib(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| v / 1024.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_series() {
        let s = stats::summarize(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.count), (2.5, 1.0, 10.0, 4));
        assert_eq!(stats::median(&[5.0, f64::NAN, 7.0]), Some(6.0));
    }

    #[test]
    fn ratios_to_bare() {
        assert_eq!(ratio(30.0, 10.0), Some(3.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(
            median_ratio(&[10.0, 20.0, 30.0], &[2.0, 1.0, 3.0]),
            Some(10.0)
        );
        assert_eq!(median_ratio(&[], &[1.0]), None);
    }

    #[test]
    fn numbers_format_by_size() {
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(45.67), "45.7");
        assert_eq!(fmt_num(2.345), "2.35");
        assert_eq!(fmt_num(0.01234), "0.012");
        assert_eq!(fmt_num(f64::NAN), "-");
    }

    #[test]
    fn spreads_and_ratios_format() {
        assert_eq!(fmt_spread(&[3.0, 1.0, 2.0], "ms"), "2.00 ms (1.00-3.00)");
        assert_eq!(fmt_spread(&[150.0], "ms"), "150 ms");
        assert_eq!(fmt_spread(&[4.0, 4.0], ""), "4.00");
        assert_eq!(fmt_spread(&[1.191, 1.189], "MiB"), "1.19 MiB");
        assert_eq!(fmt_spread(&[], "ms"), "-");
        assert_eq!(fmt_ratio(Some(52.0)), "×52.0");
        assert_eq!(fmt_ratio(None), "-");
        assert_eq!(kib_to_mib(&[2048.0]), vec![2.0]);
    }
}
