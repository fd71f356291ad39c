//! `target-roster --test`: one request that checks the credentials and the base URL, then exit
//! 0 or 1 with one line saying which.
//!
//! The request goes through the vendor writer's own HTTP client (its auth, fixed headers and
//! rate limit), built by the writer's factory and handed back through
//! [`SinkContext::built`](crate::sink::SinkContext::built), so the test cannot pass
//! with credentials a real run would send differently. It is read-only wherever the vendor's
//! API document has a read endpoint; UserGuiding has none, so its request is an identify with
//! no `userId`, which the vendor refuses (400) after it accepted the token and creates nothing.
//! Which request each vendor gets, and what it proves, is in docs/target.md.

use crate::config::Resolved;
use crate::config::{ConfigError, TargetSettings};
use crate::exit::ExitStatus;
use crate::sink::{BuiltTransport, Method, SendFailure, WireRequest};

/// The retry budget of the test request: enough to ride out one 429 or 503, few enough that an
/// unreachable host fails within seconds, not after the run's full backoff.
const TEST_MAX_RETRIES: u32 = 2;

/// The one request `--test` sends to a vendor, and which answers pass.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The request, relative to the base URL.
    pub request: WireRequest,
    /// Statuses besides 2xx that prove the credentials and base URL (UserGuiding's 400 for an
    /// identify without `userId`).
    pub also_passes: &'static [u16],
}

/// The request for `config`'s vendor.
pub fn probe_for(config: &Resolved) -> Result<Probe, ConfigError> {
    let get = |path: String| Probe {
        request: WireRequest::new(Method::Get, path),
        also_passes: &[],
    };
    Ok(match config.spec.name {
        // No read endpoint in UserGuiding's API document: an identify without userId is refused
        // after the token was checked, and creates nothing.
        "userguiding" => Probe {
            request: WireRequest::new(Method::Post, "/identify").json(serde_json::json!({})),
            also_passes: &[400],
        },
        "userflow" => get("/users?limit=1".into()),
        // Userpilot's key check (its write API has no other read endpoint).
        "userpilot" => get("/v1/validate".into()),
        "appcues" => {
            let account = config
                .values
                .get("account_id")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| ConfigError::Missing {
                    vendor: config.spec.name.to_string(),
                    missing: vec!["account_id".into()],
                })?;
            let account =
                percent_encoding::utf8_percent_encode(account, percent_encoding::NON_ALPHANUMERIC);
            get(format!("/v2/accounts/{account}/segments"))
        }
        "guru" => get("/groups".into()),
        // SCIM: not /ServiceProviderConfig, which RFC 7644 lets servers serve without auth.
        "guru_scim" | "scim" => get("/Users?startIndex=1&count=1".into()),
        other => {
            return Err(ConfigError::Invalid {
                key: "vendor".into(),
                problem: format!("{other} has no connection test"),
            });
        }
    })
}

/// Why `--test` failed.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The config cannot drive the vendor's writer.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The writer could not be built.
    #[error("connection test failed: {0}")]
    Sink(#[from] crate::sink::SinkError),
    /// 401 or 403.
    #[error("connection test failed: {vendor} refused the credentials: check {keys} ({detail})")]
    Credentials {
        /// The vendor.
        vendor: &'static str,
        /// The config keys that carry the credentials.
        keys: String,
        /// The request and the answer.
        detail: String,
    },
    /// No answer, or an answer that shows the base URL is not the vendor's API.
    #[error("connection test failed: {vendor} at {base_url}: check base_url ({detail})")]
    BaseUrl {
        /// The vendor.
        vendor: &'static str,
        /// The base URL used.
        base_url: String,
        /// The request and the answer.
        detail: String,
    },
}

impl ExitStatus for TestError {
    fn exit_code(&self) -> u8 {
        match self {
            TestError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The config keys that hold `config`'s credentials (and Appcues' account id, which a 403
/// also points at), as "a, b".
fn credential_keys(config: &Resolved) -> String {
    let keys: Vec<&str> = config
        .spec
        .settings
        .iter()
        .filter(|s| s.secret || s.name.ends_with("username") || s.name == "account_id")
        .map(|s| s.name)
        .collect();
    keys.join(", ")
}

/// Sends the vendor's test request; `Ok` holds the line to print.
pub async fn test_connection(config: &Resolved) -> Result<String, TestError> {
    let mut config = config.clone();
    let retries = config.common.max_retries.unwrap_or(TEST_MAX_RETRIES);
    config.common.max_retries = Some(retries.min(TEST_MAX_RETRIES));
    let settings: TargetSettings = config.typed()?;
    let probe = probe_for(&config)?;
    let built = BuiltTransport::default();
    let _sink = super::build_sink_into(&config, &settings, &built).map_err(|err| match err {
        super::TargetError::Config(err) => TestError::Config(err),
        super::TargetError::Sink(err) => TestError::Sink(err),
        other => TestError::Config(ConfigError::Invalid {
            key: "vendor".into(),
            problem: crate::exit::one_line(&other),
        }),
    })?;
    let transport = built.lock().clone().ok_or_else(|| ConfigError::Invalid {
        key: "vendor".into(),
        problem: format!("{} built no HTTP client", config.spec.name),
    })?;
    let vendor = config.spec.name;
    let base_url = config.base_url()?.to_string();
    let what = format!("{} {}", probe.request.method, probe.request.path);
    let passed = |status: u16| {
        format!(
            "connection test passed: {vendor} answered {status} to {what} at {base_url}; the credentials and base_url work"
        )
    };
    match transport.send(probe.request.clone()).await {
        Ok(response) => Ok(passed(response.status)),
        Err(err) => match (err.failure, err.status) {
            (_, Some(status)) if probe.also_passes.contains(&status) => Ok(passed(status)),
            (SendFailure::Credentials, _) => Err(TestError::Credentials {
                vendor,
                keys: credential_keys(&config),
                detail: err.message,
            }),
            _ => Err(TestError::BaseUrl {
                vendor,
                base_url,
                detail: err.message,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Applies, RawConfig};
    use serde_json::json;

    fn resolved(value: serde_json::Value) -> Resolved {
        let raw = RawConfig::from_object(value.as_object().cloned().unwrap());
        crate::vendors::resolve(&raw, Applies::Target, true).unwrap()
    }

    #[test]
    fn every_writable_vendor_has_a_test_request() {
        let configs = [
            json!({"vendor": "userguiding", "api_key": "k"}),
            json!({"vendor": "userflow", "api_key": "k"}),
            json!({"vendor": "userpilot", "api_key": "k"}),
            json!({"vendor": "appcues", "account_id": "1 2", "api_key": "k", "api_secret": "s"}),
            json!({"vendor": "guru", "username": "a@b.c", "api_token": "t"}),
            json!({"vendor": "guru_scim", "scim_username": "u", "scim_token": "t"}),
            json!({"vendor": "scim", "base_url": "https://scim.example/v2", "bearer_token": "t"}),
        ];
        assert_eq!(
            configs.len(),
            crate::vendors::serving(Applies::Target).count()
        );
        for config in configs {
            let config = resolved(config);
            let probe = probe_for(&config).unwrap();
            // Only UserGuiding, which has no read endpoint, gets anything but a GET.
            assert_eq!(
                probe.request.method == Method::Get,
                config.spec.name != "userguiding",
                "{}",
                config.spec.name
            );
            if config.spec.name == "appcues" {
                assert_eq!(probe.request.path, "/v2/accounts/1%202/segments");
                assert_eq!(credential_keys(&config), "account_id, api_key, api_secret");
            }
        }
    }
}
