//! Sandbox: faithful in-process simulators of the vendors, so every flow can be tried without a vendor account.
//! Simulators are mounted on the HTTP listener under `/sandbox/<vendor>` and adapters are pointed at them.
//! Compiled only with the `sandbox` cargo feature (default on); the production image is built without it.

pub mod baidu;
pub mod juhe;
pub mod megvii;
pub mod scenarios;
pub mod simulate;
pub mod web;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;

use crate::config::{BaiduConfig, BaiduPlanConfig, Config, MegviiConfig, Secret};

use crate::domain::validation::{synthetic_id_number, Date};

/// The Juhe key the sandbox accepts.
pub const JUHE_KEY: &str = "sandbox-juhe-key";
/// The Juhe openid of the sandbox account (its md5 keys verifyEncry).
pub const JUHE_OPENID: &str = "sandbox-juhe-openid";
/// Path prefix of the Juhe simulator on the HTTP listener.
pub const JUHE_PREFIX: &str = "/sandbox/juhe";

/// Points every vendor adapter of `config` at the simulators served under `local` (`http://host:port`, facegate's
/// own HTTP listener), with the sandbox credentials.
pub fn configure(config: &mut Config, local: &str) {
    config.juhe.base_url = format!("{local}{JUHE_PREFIX}");
    config.juhe.key = Secret::new(JUHE_KEY);
    config.juhe.openid = Secret::new(JUHE_OPENID);
    configure_baidu(&mut config.baidu, local);
    configure_megvii(&mut config.megvii, local);
}

/// The Baidu API Key of the sandbox app.
pub const BAIDU_API_KEY: &str = "sandbox-baidu-api-key";
/// The Baidu Secret Key of the sandbox app.
pub const BAIDU_SECRET_KEY: &str = "sandbox-baidu-secret-key";
/// The Baidu app id of the sandbox app.
pub const BAIDU_APP_ID: &str = "100001";

/// A sandbox Baidu plan: facegate name, plan_id, needs identity, needs reference, a failure ends the URL.
pub struct SandboxBaiduPlan {
    /// facegate's name (`BaiduOptions.plan`).
    pub name: &'static str,
    /// The simulated console's plan_id.
    pub plan_id: &'static str,
    /// 指定用户身份核验.
    pub needs_identity: bool,
    /// 自建人脸库比对.
    pub needs_reference: bool,
    /// 认证未通过时URL失效.
    pub fail_ends_url: bool,
}

/// The plans of the sandbox Baidu app (README lists them). `kyc` is the default.
pub const BAIDU_PLANS: &[SandboxBaiduPlan] = &[
    SandboxBaiduPlan {
        name: "kyc",
        plan_id: "9001",
        needs_identity: true,
        needs_reference: false,
        fail_ends_url: true,
    },
    SandboxBaiduPlan {
        name: "kyc_retry",
        plan_id: "9002",
        needs_identity: true,
        needs_reference: false,
        fail_ends_url: false,
    },
    SandboxBaiduPlan {
        name: "reference",
        plan_id: "9003",
        needs_identity: false,
        needs_reference: true,
        fail_ends_url: true,
    },
];

/// The similarity threshold of the sandbox plans.
pub const BAIDU_PLAN_THRESHOLD: f64 = 80.0;

/// Points the Baidu settings at the simulator served under `local` (`http://host:port`) with the sandbox app's
/// credentials and plans.
pub fn configure_baidu(cfg: &mut BaiduConfig, local: &str) {
    cfg.base_url = format!("{local}{}", baidu::MOUNT);
    cfg.page_url = format!("{local}{}/face/print/", baidu::MOUNT);
    cfg.api_key = Secret::new(BAIDU_API_KEY);
    cfg.secret_key = Secret::new(BAIDU_SECRET_KEY);
    cfg.plans = BAIDU_PLANS
        .iter()
        .map(|p| {
            (
                p.name.to_owned(),
                BaiduPlanConfig {
                    plan_id: p.plan_id.to_owned(),
                    needs_identity: p.needs_identity,
                    needs_reference: p.needs_reference,
                    fail_ends_url: p.fail_ends_url,
                    success_url: String::new(),
                    failure_url: String::new(),
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    cfg.default_plan = "kyc".to_owned();
}

/// The Megvii api_key of the sandbox account.
pub const MEGVII_API_KEY: &str = "sandbox-megvii-api-key";
/// The Megvii api_secret of the sandbox account (it signs the simulator's callbacks).
pub const MEGVII_API_SECRET: &str = "sandbox-megvii-api-secret";

/// Points the Megvii settings at the simulator served under `local` with the sandbox account.
pub fn configure_megvii(cfg: &mut MegviiConfig, local: &str) {
    cfg.base_url = format!("{local}{}", megvii::MOUNT);
    cfg.page_url = format!("{local}{}/faceid/lite/do", megvii::MOUNT);
    cfg.api_key = Secret::new(MEGVII_API_KEY);
    cfg.api_secret = Secret::new(MEGVII_API_SECRET);
}

/// All simulators.
pub struct Sandbox {
    /// The Juhe verifyface simulator.
    pub juhe: Arc<juhe::JuheSimulator>,
    /// The Baidu faceprint simulator (its clock can be moved forward).
    pub baidu: Arc<baidu::BaiduSimulator>,
    /// The Megvii FaceID Lite simulator (notify callbacks are sent to facegate's own HTTP port, which is why the
    /// sandbox does not enforce Megvii's callback ports).
    pub megvii: Arc<megvii::MegviiSimulator>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Simulators with the sandbox credentials.
    pub fn new() -> Self {
        Self {
            juhe: juhe::JuheSimulator::new(juhe::JuheSimConfig {
                key: JUHE_KEY.into(),
                openid: JUHE_OPENID.into(),
            }),
            baidu: baidu::BaiduSimulator::new(
                baidu::BaiduSimConfig {
                    api_key: BAIDU_API_KEY.into(),
                    secret_key: BAIDU_SECRET_KEY.into(),
                    app_id: BAIDU_APP_ID.into(),
                    plans: BAIDU_PLANS
                        .iter()
                        .map(|p| baidu::BaiduSimPlan {
                            plan_id: p.plan_id.into(),
                            needs_identity: p.needs_identity,
                            needs_reference: p.needs_reference,
                            fail_ends_url: p.fail_ends_url,
                            threshold: BAIDU_PLAN_THRESHOLD,
                        })
                        .collect(),
                },
                baidu::SimClock::new(),
            ),
            megvii: megvii::MegviiSimulator::new(
                megvii::MegviiSimConfig {
                    api_key: MEGVII_API_KEY.into(),
                    api_secret: MEGVII_API_SECRET.into(),
                    enforce_notify_ports: false,
                },
                baidu::SimClock::new(),
            ),
        }
    }

    /// The simulators' routes.
    pub fn router(&self) -> Router {
        Router::new()
            .nest(JUHE_PREFIX, self.juhe.router())
            .nest(baidu::MOUNT, self.baidu.router())
            .nest(megvii::MOUNT, self.megvii.router())
    }
}

/// A synthetic test ID number whose sequence code selects a sandbox scenario (see [`juhe::SCENARIOS`]). Born
/// 1900-01-01 in region 110101: valid by the checksum rules, and nobody's real number in use.
pub fn test_id_number(sequence: u16) -> Option<String> {
    synthetic_id_number(
        "110101",
        Date {
            year: 1900,
            month: 1,
            day: 1,
        },
        sequence,
    )
}
