//! Baidu `result/detail` replies: scores, OCR fields, card images and the confirmed identity, and the identity
//! facegate keeps of them (shown only masked).
#![no_main]

use facegate::domain::mask_name;
use facegate::domain::validation::{mask_id_number, IdType};
use facegate::vendors::baidu::wire::{self, DetailResult, Reply};
use facegate::vendors::baidu::{error_of, identity_of};
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let detail = match wire::parse_reply::<DetailResult>(body) {
        Ok(Reply::Ok { result, .. }) => result,
        Ok(Reply::Err(e)) => {
            let v = error_of(&e, "result/detail");
            assert!(sanitized(&v.vendor_message), "{v:?}");
            return;
        }
        Err(_) => return,
    };
    if let Some(v) = &detail.verify_result {
        for score in [&v.score, &v.liveness_score, &v.spoofing]
            .into_iter()
            .flatten()
        {
            assert!(score.as_f64().is_none_or(f64::is_finite));
        }
    }
    let Some(identity) = identity_of(&detail) else {
        assert!(detail.idcard_ocr_result.is_none() && detail.idcard_confirm.is_none());
        return;
    };
    assert_eq!(identity.id_type, IdType::of_number(&identity.id_number));
    let shown = identity.masked();
    assert_eq!(shown.id_number, mask_id_number(&identity.id_number));
    assert_eq!(shown.name, mask_name(&identity.name));
    assert_eq!(
        shown.id_number.chars().count(),
        identity.id_number.chars().count()
    );
    assert_eq!(shown.name.chars().count(), identity.name.chars().count());
    // Masked means at most the first 3 and last 4 characters of the number, and the first of the name, stay.
    let kept = shown.id_number.chars().filter(|c| *c != '*').count();
    assert!(kept <= 7, "{kept}");
    assert!(shown.name.chars().skip(1).all(|c| c == '*'));
    assert!(
        shown.address.is_empty() && shown.birth_date.is_empty() && shown.valid_period.is_empty()
    );
});
