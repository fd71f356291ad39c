//! The config loader over arbitrary input: the bytes as a config file (JSON), and as
//! `--config ENV` variables (`KEY=value` lines under the binary's prefix), for the tap and the
//! target, then everything a run derives from a config that loaded.
//!
//! Oracles besides "never panics":
//! - a config either loads or is refused with a [`ConfigError`] (every one exits 2);
//! - every numeric key that loaded is inside its setting's documented range;
//! - from a config that loaded, the base URL, the HTTP client config and the client itself
//!   (durations, retry budget, concurrency, rate), the bulk timeout and file limits, and every
//!   vendor's typed view are derived without a panic; the base URL carries no credentials and
//!   is plain http only to loopback or a test host unless `allow_insecure_http` is set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::config::{Applies, ConfigError, RawConfig, Setting, is_local_test_host};
use roster::http::{Auth, HttpClient};
use roster::sink::bulk::{BulkSettings, FileLimits};
use roster::vendors::{self, REGISTRY, Resolved};
use serde_json::{Map, Value};

fn in_range(setting: &Setting, value: &Value) -> bool {
    match (setting.range, value.as_f64()) {
        (Some(range), Some(n)) => range.contains(n),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn check(resolved: &Resolved, binary: Applies) {
    for setting in resolved.spec.all_settings(binary) {
        if let Some(value) = resolved.values.get(setting.name) {
            assert!(
                in_range(setting, value),
                "{} = {value} loaded outside its range",
                setting.name
            );
        }
    }
    if let Ok(url) = resolved.base_url() {
        assert!(url.username().is_empty() && url.password().is_none());
        assert!(
            url.scheme() == "https" || resolved.common.allow_insecure_http || is_local_test_host(&url),
            "plain http to {url}"
        );
        let auth = Auth::Bearer(roster::config::Secret::new("k".to_string()));
        if let Ok(cfg) = roster::http::ClientConfig::for_vendor(resolved, roster::http::ClientSpec::new(auth)) {
            let _ = HttpClient::new(cfg);
        }
    }
    if let Ok(bulk) = resolved.typed::<BulkSettings>() {
        let _ = bulk.timeout();
        let defaults = FileLimits {
            max_rows: 10_000,
            max_bytes: 1 << 20,
        };
        let _ = bulk.limits(resolved.spec.name, defaults, defaults);
    }
    let _ = resolved.typed::<roster::config::TargetSettings>();
    let _ = resolved.typed::<roster::vendors::scim::config::Config>();
}

fn load(raw: &RawConfig, binary: Applies) {
    for require in [false, true] {
        match vendors::resolve(raw, binary, require) {
            Ok(resolved) => check(&resolved, binary),
            Err(err) => {
                let _: &ConfigError = &err;
                let _ = err.to_string();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, data)) = data.split_first() else {
        return;
    };
    // A vendor from the knob, so every vendor's settings are reached without the fuzzer
    // having to spell a name.
    let vendor = REGISTRY[usize::from(knob) % REGISTRY.len()].name;

    // The bytes as a config file.
    if let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(data) {
        if knob & 0x80 != 0 {
            object
                .entry("vendor")
                .or_insert_with(|| Value::from(vendor));
        }
        for binary in [Applies::Tap, Applies::Target] {
            load(&RawConfig::from_object(object.clone()), binary);
        }
    }

    // The bytes as environment variables.
    let text = String::from_utf8_lossy(data);
    for (binary, prefix) in [(Applies::Tap, "TAP_ROSTER_"), (Applies::Target, "TARGET_ROSTER_")] {
        let mut vars = vec![(format!("{prefix}VENDOR"), vendor.to_string())];
        for line in text.lines() {
            if let Some((key, value)) = line.split_once('=') {
                vars.push((format!("{prefix}{}", key.to_ascii_uppercase()), value.to_string()));
            }
        }
        let mut raw = RawConfig::from_object(Map::new());
        raw.merge_env(vars, prefix);
        load(&raw, binary);
    }
});
