//! SCIM discovery (RFC 7644 §4): ServiceProviderConfig, ResourceTypes and Schemas, as the
//! settings make them; and `/Bulk`, which is not supported.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::routes::{Scim, answer, scim_err};
use super::{ENTERPRISE, GROUP_SCHEMA, LIST, USER_SCHEMA};

pub(super) async fn service_provider_config(Scim { sh, c, .. }: Scim) -> Response {
    let s = &sh.settings;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/roster/roster/blob/main/docs/sandbox.md",
        "patch": {"supported": s.scim_patch},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": s.scim_filter, "maxResults": s.scim_page_cap},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "pagination": {
            "cursor": false, "index": true, "defaultPaginationMethod": "index",
            "defaultPageSize": s.scim_default_count, "maxPageSize": s.scim_page_cap,
        },
        "authenticationSchemes": [
            {"type": "oauthbearertoken", "name": "OAuth Bearer Token", "description": "Authentication with a bearer token", "primary": true},
            {"type": "httpbasic", "name": "HTTP Basic", "description": "Authentication with a username and password"},
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", c.base)},
    });
    answer(&c, StatusCode::OK, body)
}

pub(super) async fn resource_types(Scim { c, .. }: Scim) -> Response {
    let rt = |name: &str, ep: &str, schema: &str, ext: bool| {
        let mut r = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": name, "name": name, "endpoint": format!("/{ep}"), "schema": schema,
            "meta": {"resourceType": "ResourceType", "location": format!("{}/ResourceTypes/{name}", c.base)},
        });
        if ext {
            r["schemaExtensions"] = json!([{"schema": ENTERPRISE, "required": false}]);
        }
        r
    };
    let list = vec![
        rt("User", "Users", USER_SCHEMA, true),
        rt("Group", "Groups", GROUP_SCHEMA, false),
    ];
    answer(
        &c,
        StatusCode::OK,
        json!({"schemas": [LIST], "totalResults": 2, "startIndex": 1, "itemsPerPage": 2, "Resources": list}),
    )
}

pub(super) async fn schemas(Scim { c, .. }: Scim) -> Response {
    let attr = |name: &str,
                ty: &str,
                multi: bool,
                unique: &str,
                case_exact: bool,
                mutability: &str| {
        json!({"name": name, "type": ty, "multiValued": multi, "required": name == "userName",
               "caseExact": case_exact, "mutability": mutability, "returned": "default", "uniqueness": unique})
    };
    let user = json!({
        "id": USER_SCHEMA, "name": "User", "description": "User Account",
        "attributes": [
            attr("userName", "string", false, "server", false, "readWrite"),
            attr("externalId", "string", false, "none", true, "readWrite"),
            attr("name", "complex", false, "none", false, "readWrite"),
            attr("displayName", "string", false, "none", false, "readWrite"),
            attr("emails", "complex", true, "none", false, "readWrite"),
            attr("active", "boolean", false, "none", false, "readWrite"),
            attr("groups", "complex", true, "none", false, "readOnly"),
        ],
    });
    let group = json!({
        "id": GROUP_SCHEMA, "name": "Group", "description": "Group",
        "attributes": [
            attr("displayName", "string", false, "none", false, "readWrite"),
            attr("externalId", "string", false, "none", true, "readWrite"),
            attr("members", "complex", true, "none", false, "readWrite"),
        ],
    });
    answer(
        &c,
        StatusCode::OK,
        json!({"schemas": [LIST], "totalResults": 2, "startIndex": 1, "itemsPerPage": 2, "Resources": [user, group]}),
    )
}

pub(super) async fn bulk(Scim { c, .. }: Scim) -> Response {
    scim_err(
        &c,
        StatusCode::NOT_IMPLEMENTED,
        "",
        "bulk operations are not supported (ServiceProviderConfig bulk.supported is false)",
    )
}
