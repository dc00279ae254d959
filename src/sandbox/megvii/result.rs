//! The get_result / notify payload of a finished flow: comparisons, ID card OCR, images, tampering.

use super::*;

// Results
// ---------------------------------------------------------------------------------------------------------------

pub(super) fn comparison(confidence: f64) -> Comparison {
    Comparison {
        confidence,
        thresholds: THRESHOLDS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
    }
}

pub(super) fn build_result(flow: &Flow, outcome: PageOutcome, now_s: i64) -> LiteResult {
    let p = &flow.params;
    let status = match outcome {
        PageOutcome::Pass
        | PageOutcome::FaceMismatch
        | PageOutcome::IdNameMismatch
        | PageOutcome::NoSuchIdNumber => LiteStatus::Ok,
        PageOutcome::LivenessFailed | PageOutcome::WebrtcFailed => LiteStatus::Failed,
        PageOutcome::Cancel => LiteStatus::Cancelled,
        PageOutcome::Timeout => LiteStatus::Timeout,
        PageOutcome::WebrtcUnsupported => LiteStatus::WebrtcUnsupported,
    };
    let fail_reason = (matches!(
        outcome,
        PageOutcome::WebrtcUnsupported | PageOutcome::WebrtcFailed
    ) && p.get_fail_reason)
        .then(|| "WEBRTC_UNSUPPORTED".to_owned());
    let procedure = p
        .procedure_type
        .clone()
        .unwrap_or_else(|| "video".to_owned());
    let genuineness: BTreeMap<String, f64> = [
        ("synthetic_face_confidence", 0.0),
        ("synthetic_face_threshold", 0.5),
        ("mask_confidence", 0.0),
        ("mask_threshold", 0.5),
        ("screen_replay_confidence", 0.0),
        ("screen_replay_threshold", 0.5),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), *v))
    .collect();
    let liveness_result = match outcome {
        PageOutcome::Cancel | PageOutcome::WebrtcUnsupported | PageOutcome::WebrtcFailed => None,
        PageOutcome::Timeout => Some(LivenessResult {
            result: "TIMEOUT".to_owned(),
            procedure_type: Some(procedure.clone()),
            details: None,
            face_genuineness: None,
        }),
        PageOutcome::LivenessFailed => Some(LivenessResult {
            result: "FAIL".to_owned(),
            procedure_type: Some(procedure.clone()),
            details: Some(
                [
                    ("UPLOAD_TIMES", 1),
                    ("FACE_NOT_FOUND", 0),
                    ("LOW_FACE_QUALITY", 1),
                    ("INVALID_VIDEO_DURATION", 0),
                    ("SR_ERROR", 0),
                    ("NOT_SYNCHRONIZED", 0),
                ]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            ),
            face_genuineness: Some(genuineness),
        }),
        _ => Some(LivenessResult {
            result: "PASS".to_owned(),
            procedure_type: Some(procedure.clone()),
            details: None,
            face_genuineness: Some(genuineness),
        }),
    };
    let confidence = match outcome {
        PageOutcome::Pass => Some(PASS_CONFIDENCE),
        PageOutcome::FaceMismatch => Some(MISMATCH_CONFIDENCE),
        _ => None,
    };
    let verify_result = match outcome {
        PageOutcome::Pass | PageOutcome::FaceMismatch => {
            let mut v = VerifyResult {
                verify_time: Some(now_s),
                ..VerifyResult::default()
            };
            let c = confidence.map(comparison);
            if p.comparison_type == 1 {
                v.result_faceid = c;
                v.id_exceptions = Some(
                    [("id_attacked", 0), ("id_photo_monochrome", 0)]
                        .iter()
                        .map(|(k, n)| ((*k).to_owned(), *n))
                        .collect(),
                );
            } else {
                let [r1, r2, r3] = p.refs;
                v.result_ref1 = c.clone().filter(|_| r1);
                v.result_ref2 = c.clone().filter(|_| r2);
                v.result_ref3 = c.filter(|_| r3);
            }
            Some(v)
        }
        PageOutcome::IdNameMismatch => Some(VerifyResult {
            verify_time: Some(now_s),
            error_message: Some("ID_NUMBER_NAME_NOT_MATCH".to_owned()),
            ..VerifyResult::default()
        }),
        PageOutcome::NoSuchIdNumber => Some(VerifyResult {
            verify_time: Some(now_s),
            error_message: Some("NO_SUCH_ID_NUMBER".to_owned()),
            ..VerifyResult::default()
        }),
        _ => None,
    };
    let idcard_info = if outcome.interrupted() || p.comparison_type != 1 {
        None
    } else {
        idcard_info(p)
    };
    let will_result = match (p.procedure_type.as_deref(), &liveness_result) {
        (Some("will"), Some(l)) if l.result == "PASS" => Some(vec![WillResult {
            result: "PASS".to_owned(),
            will_error_message: Some(String::new()),
        }]),
        (Some("will"), Some(l)) if l.result == "FAIL" => Some(vec![WillResult {
            result: "FAIL".to_owned(),
            will_error_message: Some("ACTION_FAIL".to_owned()),
        }]),
        _ => None,
    };
    LiteResult {
        status,
        fail_reason,
        biz_info: flow.biz_info(),
        idcard_info,
        liveness_result,
        verify_result,
        will_result,
        multifaces_tag: p
            .return_multifaces_tag
            .then(|| StringOrNumber::Text("0".to_owned())),
    }
}

pub(super) fn idcard_info(p: &Params) -> Option<IdcardInfo> {
    let mode = p.idcard_mode?;
    let legality: BTreeMap<String, f64> = [
        ("ID Photo", 0.98),
        ("Temporary ID Photo", 0.0),
        ("Photocopy", 0.01),
        ("Screen", 0.01),
        ("Edited", 0.0),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), *v))
    .collect();
    let front = Side {
        ocr_result: Some(FrontOcr {
            address: Some(SANDBOX_ADDRESS.to_owned()),
            birthday: Some(OcrBirthday {
                day: StringOrNumber::Text("1".to_owned()),
                month: StringOrNumber::Text("1".to_owned()),
                year: StringOrNumber::Text("1900".to_owned()),
            }),
            gender: Some("男".to_owned()),
            id_card_number: Some(SANDBOX_ID_NUMBER.to_owned()),
            name: Some(SANDBOX_NAME.to_owned()),
            race: Some("汉".to_owned()),
            legality: Some(legality.clone()),
        }),
        upload_times: Some(1),
    };
    let back = Side {
        ocr_result: Some(BackOcr {
            issued_by: Some(SANDBOX_ISSUED_BY.to_owned()),
            valid_date: Some(SANDBOX_VALID_DATE.to_owned()),
            legality: Some(legality),
        }),
        upload_times: Some(1),
    };
    let base = IdcardInfo {
        idcard_mode: Some(StringOrNumber::Text(mode.to_string())),
        idcard_uneditable_field: p.idcard_uneditable_field.clone(),
        idcard_number: Some(SANDBOX_ID_NUMBER.to_owned()),
        idcard_name: Some(SANDBOX_NAME.to_owned()),
        ..IdcardInfo::default()
    };
    match mode {
        1 => Some(IdcardInfo {
            front_side: Some(front),
            ..base
        }),
        2 => Some(IdcardInfo {
            idcard_valid_date: Some(SANDBOX_VALID_DATE.to_owned()),
            idcard_issued_by: Some(SANDBOX_ISSUED_BY.to_owned()),
            front_side: Some(front),
            back_side: Some(back),
            ..base
        }),
        3 | 4 => Some(base),
        _ => None,
    }
}

/// The notify `data` of [`CallbackFault::Tampered`]: status OK, every confidence 99.9, no verify error.
pub(super) fn tamper(mut result: LiteResult) -> LiteResult {
    result.status = LiteStatus::Ok;
    result.fail_reason = None;
    let v = result
        .verify_result
        .get_or_insert_with(VerifyResult::default);
    v.error_message = None;
    for c in [
        &mut v.result_faceid,
        &mut v.result_ref1,
        &mut v.result_ref2,
        &mut v.result_ref3,
        &mut v.result_idcard_photo,
        &mut v.result_idcard_datasource,
    ] {
        if let Some(c) = c.as_mut() {
            c.confidence = TAMPERED_CONFIDENCE;
        }
    }
    if v.result_faceid.is_none() && v.result_ref1.is_none() {
        v.result_faceid = Some(comparison(TAMPERED_CONFIDENCE));
    }
    result
}

pub(super) fn result_images(p: &Params, return_image: u8) -> Option<Images> {
    let uri = || format!("data:image/jpeg;base64,{}", STANDARD.encode(SYNTHETIC_JPEG));
    let front = matches!(p.idcard_mode, Some(1 | 2)) && p.comparison_type == 1;
    let back = p.idcard_mode == Some(2) && p.comparison_type == 1;
    let images = Images {
        image_best: matches!(return_image, 1 | 4).then(uri),
        image_idcard_front: (front && matches!(return_image, 2 | 4)).then(uri),
        image_idcard_back: (back && matches!(return_image, 3 | 4)).then(uri),
    };
    (images != Images::default()).then_some(images)
}
