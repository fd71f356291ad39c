use super::*;
use serde_json::json;

const KEY: Setting = Setting::new("api_key", Kind::String, "key")
    .secret()
    .required();

fn settings() -> Vec<&'static Setting> {
    COMMON_SETTINGS
        .iter()
        .chain(TARGET_SETTINGS)
        .chain([&KEY])
        .collect()
}

fn no_hint(_: &str) -> Option<String> {
    None
}

fn raw(value: Value) -> RawConfig {
    RawConfig::from_object(value.as_object().cloned().unwrap())
}

#[test]
fn later_files_override_earlier_ones_and_null_means_unset() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(
        &a,
        r#"{"vendor":"userflow","api_key":"one","max_retries":2}"#,
    )
    .unwrap();
    std::fs::write(&b, r#"{"api_key":"two","max_retries":null}"#).unwrap();
    let raw = RawConfig::load(
        &[ConfigSource::File(a), ConfigSource::File(b)],
        "TAP_ROSTER_",
    )
    .unwrap();
    let merged = raw
        .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
        .unwrap();
    assert_eq!(merged["api_key"], "two");
    assert!(!merged.contains_key("max_retries"));
}

#[test]
fn environment_beats_files_and_is_cast() {
    let mut raw = raw(json!({"vendor": "userflow", "api_key": "file", "max_retries": 1}));
    raw.merge_env(
        [
            ("TAP_ROSTER_API_KEY".to_string(), "env".to_string()),
            ("TAP_ROSTER_MAX_RETRIES".to_string(), "4".to_string()),
            ("TAP_ROSTER__SELECT".to_string(), "[]".to_string()),
            ("TAP_ROSTER_LOGLEVEL".to_string(), "debug".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ],
        "TAP_ROSTER_",
    );
    let merged = raw
        .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
        .unwrap();
    assert_eq!(merged["api_key"], "env");
    assert_eq!(merged["max_retries"], 4);
}

#[test]
fn unknown_keys_are_named_with_a_hint() {
    let raw = raw(json!({"vendor": "userflow", "api_key": "k", "reject_file": "r.ndjson"}));
    let hint = |key: &str| (key == "reject_file").then(|| "a target-roster setting".to_string());
    let err = raw
        .resolve("userflow", &settings(), Applies::Tap, true, &hint)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("unknown config key \"reject_file\" for vendor userflow in tap-roster (a target-roster setting)"), "{err}");
    let err = raw.resolve("userflow", &settings(), Applies::Target, true, &no_hint);
    assert!(err.is_ok(), "target keys are fine for the target");
}

#[test]
fn missing_and_mistyped_keys() {
    let err = raw(json!({"vendor": "userflow"}))
        .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vendor userflow needs config key(s) api_key"
    );
    assert!(
        raw(json!({"vendor": "userflow"}))
            .resolve("userflow", &settings(), Applies::Tap, false, &no_hint)
            .is_ok()
    );
    let err = raw(json!({"vendor": "userflow", "api_key": "k", "region": "mars"}))
        .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config key \"region\" must be one of us, eu, got \"mars\""
    );
}

#[test]
fn base_url_defaults_by_region_and_loses_trailing_slashes() {
    let mut common: CommonSettings =
        typed(&json!({"vendor": "userflow"}).as_object().cloned().unwrap()).unwrap();
    let url = common
        .base_url_or(
            Some("https://api.userflow.com"),
            Some("https://api.eu.userflow.com"),
        )
        .unwrap();
    assert_eq!(url.as_str(), "https://api.userflow.com/");
    common.region = Region::Eu;
    let url = common
        .base_url_or(Some("https://a"), Some("https://api.eu.userflow.com/"))
        .unwrap();
    assert_eq!(url.host_str(), Some("api.eu.userflow.com"));
    common.base_url = Some(Url::parse("http://127.0.0.1:8787/guru/api/v1/").unwrap());
    assert_eq!(
        common.base_url_or(None, None).unwrap().as_str(),
        "http://127.0.0.1:8787/guru/api/v1"
    );
    common.base_url = Some(Url::parse("https://me:hunter2@api.example.com").unwrap());
    let err = common.base_url_or(None, None).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    common.base_url = None;
    assert!(
        common.base_url_or(Some("https://a"), None).is_err(),
        "no eu host"
    );
}

#[test]
fn plain_http_only_to_loopback_and_test_hosts_unless_allowed() {
    let common = |url: &str, allow: bool| -> CommonSettings {
        typed(
            &json!({"vendor": "userflow", "base_url": url, "allow_insecure_http": allow})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap()
    };
    for url in [
        "http://127.0.0.1:8787/userflow",
        "http://127.3.4.5/",
        "http://[::1]:9/",
        "http://localhost:1/",
        "http://sandbox.localhost/",
        "http://roster.test/",
        "https://api.userflow.com",
    ] {
        assert!(common(url, false).check_base_url().is_ok(), "{url}");
        assert!(common(url, false).base_url_or(None, None).is_ok(), "{url}");
    }
    for url in [
        "http://api.userflow.com",
        "http://10.0.0.5/",
        "http://192.168.1.2/",
        "http://printer.local/",
        "http://sandbox/",
        "http://[fd00::1]/",
    ] {
        let err = common(url, false).check_base_url().unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("config key \"base_url\" uses plain http"),
            "{text}"
        );
        assert!(text.contains("allow_insecure_http"), "{text}");
        assert!(common(url, false).base_url_or(None, None).is_err(), "{url}");
        assert!(common(url, true).check_base_url().is_ok(), "{url}");
    }
    let err = common("http://me:hunter2@127.0.0.1/", true)
        .check_base_url()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("base_url") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn integers_too_large_for_their_type_name_the_key() {
    for (key, value) in [
        ("max_retries", json!(5_000_000_000u64)),
        ("max_concurrency", json!(u64::MAX)),
        ("timeout_seconds", json!(1e300)),
        ("requests_per_second", json!(1e-300)),
    ] {
        let mut config = json!({"vendor": "userflow", "api_key": "k"});
        config[key] = value;
        let err = raw(config)
            .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("config key \"{key}\" must be")),
            "{err}"
        );
    }
}

#[test]
fn stream_overrides_reject_unknown_fields() {
    let ok: TargetSettings = typed(&json!({"streams": {"public-users": {"kind": "users", "key": "user_id", "rename": {"mail": "email"}}}}).as_object().cloned().unwrap()).unwrap();
    assert_eq!(ok.streams["public-users"].key.as_deref(), Some("user_id"));
    let err = typed::<TargetSettings>(
        &json!({"streams": {"x": {"knd": "users"}}})
            .as_object()
            .cloned()
            .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("knd"), "{err}");
}
