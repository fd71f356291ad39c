//! UserGuiding wire types (seed 000: camelCase `userId`, `companyId`).

use serde::Serialize;
use serde_json::{Map, Value};

/// The body of `POST /identify`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Identify {
    /// The user's id, as the frontend SDK knows it.
    pub user_id: String,
    /// The user's attributes (scalars).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
    /// The user's company.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<Company>,
}

/// The company nested in an identify.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    /// The company's id (the group's key).
    pub company_id: String,
    /// The company's attributes (the group's), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}
