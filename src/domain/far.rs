//! Decisions at a target false accept rate (FAR). Vendors publish score thresholds for some FARs; a caller asks for
//! a FAR and facegate picks the vendor's threshold for it.

use super::session::ScoreThreshold;

/// Juhe's published thresholds (juhe-verifyface-api.txt: 60 ~ 1/1000, 70 ~ 1/10000).
pub const JUHE_THRESHOLDS: [ScoreThreshold; 2] = [
    ScoreThreshold {
        false_accept_rate: 1e-3,
        threshold: 60.0,
    },
    ScoreThreshold {
        false_accept_rate: 1e-4,
        threshold: 70.0,
    },
];

/// Picks the threshold for `target_far` among `published`: the exact FAR (within 1%), else `None`.
pub fn threshold_for(published: &[ScoreThreshold], target_far: f64) -> Option<ScoreThreshold> {
    published
        .iter()
        .copied()
        .find(|t| (t.false_accept_rate - target_far).abs() <= t.false_accept_rate * 0.01)
}

/// The FARs a vendor publishes, for error messages.
pub fn describe(published: &[ScoreThreshold]) -> String {
    published
        .iter()
        .map(|t| format!("{}", t.false_accept_rate))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_published_thresholds_only() {
        assert_eq!(
            threshold_for(&JUHE_THRESHOLDS, 0.001).map(|t| t.threshold),
            Some(60.0)
        );
        assert_eq!(
            threshold_for(&JUHE_THRESHOLDS, 1e-4).map(|t| t.threshold),
            Some(70.0)
        );
        assert_eq!(threshold_for(&JUHE_THRESHOLDS, 1e-5), None);
        assert_eq!(describe(&JUHE_THRESHOLDS), "0.001, 0.0001");
    }
}
