//! The statistics the benchmark tables report.

use serde::{Deserialize, Serialize};

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Seconds, to the millisecond.
pub fn secs(d: std::time::Duration) -> f64 {
    round(d.as_secs_f64(), 3)
}

/// The `p`th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Count, min, percentiles, max and mean of a set of values; `None` where there are none.
/// Every field defaults, so a summary written with fewer fields still reads.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub n: usize,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// The [`Summary`] of the finite values, rounded to `digits`.
pub fn summary(values: &[f64], digits: i32) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let r = |x: Option<f64>| x.map(|x| round(x, digits));
    let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Summary {
        n: v.len(),
        min: r(v.first().copied()),
        p50: r(percentile(&v, 50.0)),
        p90: r(percentile(&v, 90.0)),
        p99: r(percentile(&v, 99.0)),
        p999: r(percentile(&v, 99.9)),
        max: r(v.last().copied()),
        mean: r(mean),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.0));
        assert_eq!(percentile(&v, 99.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(median(v.to_vec()), 2.5);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
        assert_eq!(round(1.23456, 2), 1.23);
        let s = summary(&[3.0, f64::NAN, 1.0, 2.0], 1);
        assert_eq!(s.n, 3);
        assert_eq!(s.p50, Some(2.0));
        assert_eq!(s.mean, Some(2.0));
        // Written as before: every field, `null` where there are no values.
        assert_eq!(
            serde_json::to_value(summary(&[], 1)).ok(),
            Some(
                serde_json::json!({"n": 0, "min": null, "p50": null, "p90": null,
                "p99": null, "p999": null, "max": null, "mean": null})
            )
        );
    }
}
