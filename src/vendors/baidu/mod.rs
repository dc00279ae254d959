//! Baidu H5 faceprint ("H5人脸实名认证方案"). This lands in parts: first the access_token cache; the adapter (verify
//! tokens, the eight faceprint endpoints, result mapping) follows with the Baidu issue.

pub mod token;
pub mod wire;
