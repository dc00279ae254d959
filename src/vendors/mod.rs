//! The vendor adapters: each implements [`crate::domain::adapter::VendorAdapter`] in its own module, with its wire
//! types. Vendors depend on the domain, never the other way round.

pub mod baidu;
pub mod budget;
pub mod http;
pub mod json;
pub mod juhe;
pub mod megvii;
