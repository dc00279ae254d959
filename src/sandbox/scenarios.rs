//! The sandbox's scenarios as one table: the Juhe test identities and the outcomes of the Baidu and Megvii pages,
//! with what facegate makes of each. `SandboxService.ListScenarios` answers these rows, README.md shows them (a test
//! below compares the two), and the SimulateOutcome tests check every page row against a real flow.

use super::{baidu, megvii, test_id_number};
use crate::domain::{FailureCode, State, Vendor};

/// A Juhe test identity: the sequence of its ID number and what it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JuheScenario {
    /// Characters 15-17 of the ID number.
    pub sequence: u16,
    /// What the simulator answers.
    pub vendor_answer: &'static str,
    /// What facegate makes of it.
    pub result: &'static str,
}

impl JuheScenario {
    /// A synthetic ID number with this sequence.
    pub fn id_number(&self) -> String {
        test_id_number(self.sequence).unwrap_or_default()
    }

    /// The sequence as it stands in the ID number ("901").
    pub fn sequence_text(&self) -> String {
        format!("{:03}", self.sequence)
    }
}

/// Every Juhe test identity the README lists (any other sequence passes with score 96).
pub const JUHE_SCENARIOS: &[JuheScenario] = &[
    JuheScenario {
        sequence: 1,
        vendor_answer: "res 1, score 96",
        result: "VERIFIED",
    },
    JuheScenario {
        sequence: 901,
        vendor_answer: "res 2, code 3005",
        result: "FAILED, FACE_MISMATCH",
    },
    JuheScenario {
        sequence: 902,
        vendor_answer: "res 3",
        result: "FAILED, ID_NAME_MISMATCH",
    },
    JuheScenario {
        sequence: 903,
        vendor_answer: "res 2, code 3004",
        result: "FAILED, NO_FACE_FOUND",
    },
    JuheScenario {
        sequence: 904,
        vendor_answer: "res 2, code 3003",
        result: "FAILED, ID_PHOTO_UNAVAILABLE",
    },
    JuheScenario {
        sequence: 905,
        vendor_answer: "res 1, score 55",
        result: "FAILED, SCORE_BELOW_THRESHOLD",
    },
    JuheScenario {
        sequence: 906,
        vendor_answer: "res 1, score 65",
        result: "VERIFIED at FAR 1e-3; FAILED at `target_false_accept_rate` 1e-4",
    },
    JuheScenario {
        sequence: 907,
        vendor_answer: "res 2, code 3006 (not in the document; seen in the wild)",
        result: "FAILED, FACE_MISMATCH, `vendor_code` 3006 (billed once; not retried)",
    },
    JuheScenario {
        sequence: 908,
        vendor_answer: "res 2 without code (seen in the wild)",
        result: "FAILED, FACE_MISMATCH, `vendor_code` `res=2`",
    },
    JuheScenario {
        sequence: 909,
        vendor_answer: "res `\"1\"`, error_code `\"0\"` as strings (seen in the wild), score 96",
        result: "VERIFIED",
    },
    JuheScenario {
        sequence: 910,
        vendor_answer: "res 2, code 3005, message repeating the name and ID number",
        result: "FAILED, FACE_MISMATCH; the name and number are stored masked",
    },
    JuheScenario {
        sequence: 911,
        vendor_answer: "error 226401",
        result: "UNAVAILABLE, VENDOR_DATA_SOURCE_TIMEOUT (retry)",
    },
    JuheScenario {
        sequence: 912,
        vendor_answer: "error 226402",
        result: "FAILED_PRECONDITION, VENDOR_NO_RECORD",
    },
    JuheScenario {
        sequence: 914,
        vendor_answer: "error 226404",
        result: "UNAVAILABLE, VENDOR_UNAVAILABLE (retry)",
    },
    JuheScenario {
        sequence: 921,
        vendor_answer: "error 10012",
        result: "RESOURCE_EXHAUSTED, VENDOR_RATE_LIMITED (retry)",
    },
    JuheScenario {
        sequence: 922,
        vendor_answer: "error 10011",
        result: "RESOURCE_EXHAUSTED, VENDOR_RATE_LIMITED (retry)",
    },
    JuheScenario {
        sequence: 923,
        vendor_answer: "error 10013",
        result: "RESOURCE_EXHAUSTED, VENDOR_RATE_LIMITED (retry)",
    },
    JuheScenario {
        sequence: 924,
        vendor_answer: "error 10014",
        result: "UNAVAILABLE, VENDOR_UNAVAILABLE (retry)",
    },
    JuheScenario {
        sequence: 925,
        vendor_answer: "error 10020",
        result: "UNAVAILABLE, VENDOR_UNAVAILABLE (retry)",
    },
    JuheScenario {
        sequence: 931,
        vendor_answer: "res 1, score 96 after 3 s",
        result: "VERIFIED (a slow vendor)",
    },
    JuheScenario {
        sequence: 932,
        vendor_answer: "res 1 after 120 s",
        result: "DEADLINE_EXCEEDED, VENDOR_TIMEOUT, possibly billed",
    },
];

/// What the user does on a sandbox vendor page (the outcomes of `SandboxService.SimulateOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimulatedOutcome {
    /// Liveness and the comparison pass.
    Pass,
    /// The faces do not match.
    FaceMismatch,
    /// Liveness fails.
    LivenessFailed,
    /// The authority rejects the name and ID number.
    IdNameMismatch,
    /// The user gives up (Baidu).
    Abandon,
    /// The authority does not know the number (Megvii).
    NoSuchIdNumber,
    /// The user cancels (Megvii).
    Cancel,
    /// The user runs out of time (Megvii).
    Timeout,
    /// The browser lacks WebRTC (Megvii).
    WebrtcUnsupported,
    /// The browser lacks WebRTC, as status FAILED (Megvii).
    WebrtcFailed,
}

impl SimulatedOutcome {
    /// The page's form value.
    pub fn page_value(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::FaceMismatch => "face_mismatch",
            Self::LivenessFailed => "liveness_failed",
            Self::IdNameMismatch => "id_name_mismatch",
            Self::Abandon => "abandon",
            Self::NoSuchIdNumber => "no_such_id_number",
            Self::Cancel => "cancel",
            Self::Timeout => "timeout",
            Self::WebrtcUnsupported => "webrtc_unsupported",
            Self::WebrtcFailed => "webrtc_failed",
        }
    }

    /// The Baidu page's outcome, when its page offers this one.
    pub fn baidu(self) -> Option<baidu::PageOutcome> {
        baidu::PageOutcome::parse(self.page_value())
    }

    /// The Megvii page's outcome, when its page offers this one.
    pub fn megvii(self) -> Option<megvii::PageOutcome> {
        megvii::PageOutcome::parse(self.page_value())
    }

    /// Whether `vendor`'s sandbox page offers this outcome.
    pub fn offered_by(self, vendor: Vendor) -> bool {
        match vendor {
            Vendor::Baidu => self.baidu().is_some(),
            Vendor::Megvii => self.megvii().is_some(),
            Vendor::Juhe => false,
        }
    }
}

/// A page outcome and what facegate makes of it, on a plan that ends the page's URL after a failed attempt (Baidu
/// `kyc_retry` keeps it: a failed attempt leaves the session AWAITING_USER with `last_attempt_error`). `billed` is
/// what facegate records: Baidu's charged attempts, and for Megvii every flow that ran (status OK or FAILED; the
/// vendor documents no billing field, see FACTS.md). Megvii sessions ask for `get_fail_reason`: without it a FAILED
/// flow carries no reason, and `webrtc_failed` ends FAILED VENDOR_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageScenario {
    /// Baidu or Megvii.
    pub vendor: Vendor,
    /// The outcome.
    pub outcome: SimulatedOutcome,
    /// The session's state then.
    pub state: State,
    /// Its failure code, when it failed.
    pub failure: Option<FailureCode>,
    /// Whether the attempt is billed.
    pub billed: bool,
}

impl PageScenario {
    /// What facegate makes of it, as one line ("FAILED FACE_MISMATCH (billed)").
    pub fn result(&self) -> String {
        let mut out = self.state.as_str().to_owned();
        if let Some(code) = self.failure {
            out.push(' ');
            out.push_str(code.as_str());
        }
        if self.billed {
            out.push_str(" (billed)");
        }
        out
    }
}

const fn page(
    vendor: Vendor,
    outcome: SimulatedOutcome,
    failure: Option<FailureCode>,
    billed: bool,
) -> PageScenario {
    PageScenario {
        vendor,
        outcome,
        state: if failure.is_some() {
            State::Failed
        } else {
            State::Verified
        },
        failure,
        billed,
    }
}

/// Every outcome of the Baidu and Megvii sandbox pages, in page order.
pub const PAGE_SCENARIOS: &[PageScenario] = &[
    page(Vendor::Baidu, SimulatedOutcome::Pass, None, true),
    page(
        Vendor::Baidu,
        SimulatedOutcome::FaceMismatch,
        Some(FailureCode::FaceMismatch),
        true,
    ),
    page(
        Vendor::Baidu,
        SimulatedOutcome::LivenessFailed,
        Some(FailureCode::LivenessFailed),
        true,
    ),
    page(
        Vendor::Baidu,
        SimulatedOutcome::IdNameMismatch,
        Some(FailureCode::IdNameMismatch),
        false,
    ),
    page(
        Vendor::Baidu,
        SimulatedOutcome::Abandon,
        Some(FailureCode::UserAbandoned),
        false,
    ),
    page(Vendor::Megvii, SimulatedOutcome::Pass, None, true),
    page(
        Vendor::Megvii,
        SimulatedOutcome::FaceMismatch,
        Some(FailureCode::FaceMismatch),
        true,
    ),
    page(
        Vendor::Megvii,
        SimulatedOutcome::LivenessFailed,
        Some(FailureCode::LivenessFailed),
        true,
    ),
    page(
        Vendor::Megvii,
        SimulatedOutcome::IdNameMismatch,
        Some(FailureCode::IdNameMismatch),
        true,
    ),
    page(
        Vendor::Megvii,
        SimulatedOutcome::NoSuchIdNumber,
        Some(FailureCode::IdNotFound),
        true,
    ),
    page(
        Vendor::Megvii,
        SimulatedOutcome::Cancel,
        Some(FailureCode::UserAbandoned),
        false,
    ),
    page(
        Vendor::Megvii,
        SimulatedOutcome::Timeout,
        Some(FailureCode::UserTimeout),
        false,
    ),
    page(
        Vendor::Megvii,
        SimulatedOutcome::WebrtcUnsupported,
        Some(FailureCode::BrowserUnsupported),
        false,
    ),
    page(
        Vendor::Megvii,
        SimulatedOutcome::WebrtcFailed,
        Some(FailureCode::BrowserUnsupported),
        true,
    ),
];

/// The README's rows of the Juhe table, as this table renders them.
pub fn juhe_rows() -> Vec<String> {
    JUHE_SCENARIOS
        .iter()
        .map(|s| {
            format!(
                "| {} | `{}` | {} | {} |",
                s.sequence_text(),
                s.id_number(),
                s.vendor_answer,
                s.result
            )
        })
        .collect()
}

/// The README's rows of the page outcome table, as this table renders them.
pub fn page_rows() -> Vec<String> {
    PAGE_SCENARIOS
        .iter()
        .map(|s| {
            format!(
                "| {} | `{}` | `SIMULATED_OUTCOME_{}` | {} |",
                s.vendor.as_str(),
                s.outcome.page_value(),
                s.outcome.page_value().to_ascii_uppercase(),
                s.result()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const README: &str = include_str!("../../README.md");

    /// The table rows of README.md that follow `heading` (up to the next heading), header and rule left out.
    fn table_after(heading: &str) -> Vec<String> {
        let Some(start) = README.find(heading) else {
            panic!("README.md has no {heading:?}");
        };
        README[start + heading.len()..]
            .lines()
            .take_while(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with("| "))
            .skip(1)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_readme_juhe_table_is_this_table() {
        assert_eq!(table_after("### Sandbox scenarios (Juhe)"), juhe_rows());
    }

    #[test]
    fn the_readme_page_outcome_table_is_this_table() {
        assert_eq!(table_after("#### Page outcomes"), page_rows());
    }

    #[test]
    fn the_juhe_identities_are_the_simulators_scenarios() {
        let listed: BTreeSet<String> = JUHE_SCENARIOS
            .iter()
            .filter(|s| s.sequence != 1)
            .map(JuheScenario::sequence_text)
            .collect();
        let simulated: BTreeSet<String> = super::super::juhe::SCENARIOS
            .iter()
            .map(|(s, _)| (*s).to_owned())
            .collect();
        assert_eq!(listed, simulated);
        for s in JUHE_SCENARIOS {
            let id = s.id_number();
            assert_eq!(id.len(), 18, "{s:?}");
            assert_eq!(&id[14..17], s.sequence_text(), "{s:?}");
        }
    }

    #[test]
    fn every_page_outcome_is_listed_once_and_offered_by_its_vendor() {
        let listed: Vec<(Vendor, &str)> = PAGE_SCENARIOS
            .iter()
            .map(|s| (s.vendor, s.outcome.page_value()))
            .collect();
        let pages: Vec<(Vendor, &str)> = baidu::PageOutcome::ALL
            .iter()
            .map(|o| (Vendor::Baidu, o.as_str()))
            .chain(
                megvii::PageOutcome::ALL
                    .iter()
                    .map(|o| (Vendor::Megvii, o.as_str())),
            )
            .collect();
        assert_eq!(listed, pages);
        for s in PAGE_SCENARIOS {
            assert!(s.outcome.offered_by(s.vendor), "{s:?}");
        }
        assert!(!SimulatedOutcome::Abandon.offered_by(Vendor::Megvii));
        assert!(!SimulatedOutcome::Cancel.offered_by(Vendor::Baidu));
        assert!(!SimulatedOutcome::Pass.offered_by(Vendor::Juhe));
    }
}
