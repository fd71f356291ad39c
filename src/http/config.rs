//! How one vendor connection is set up: [`Auth`], [`ClientConfig`] and named rate buckets, with
//! the engine's defaults in named consts.
//!
//! Both binaries build a vendor's client the same way: the vendor room says what the vendor
//! documents ([`ClientSpec`]: auth, fixed headers, its rate, its 429 pause, named buckets), and
//! [`ClientConfig::for_vendor`] applies the common config keys over it, one rule per key
//! (documented once, in the keys' descriptions in `crate::config`).

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

use crate::config::{ConfigError, Resolved, Secret};

/// Request timeout per attempt; Vector's `TowerRequestConfig` uses the same 60 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// TCP + TLS connect timeout; a handshake that takes longer than this is a dead route, not a slow API.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries after the first attempt. Userpilot's documented ladder is 1, 2, 4, 8 s (4 retries) and
/// the Appcues CLI stops after 3; one more covers a short 5xx burst.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// Ceiling of the adaptive concurrency; the vendors' documented limits (≤60 req/s) at ~100 ms
/// round trips need ~6 requests in flight, so 16 leaves head room without hammering anyone.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// Environment switch that sets every retry delay to zero (backoff, `Retry-After`, 429 pauses).
pub const ZERO_DELAYS_ENV: &str = "ROSTER_ZERO_DELAYS";

/// The default `User-Agent`: `roster/<crate version>`.
pub fn default_user_agent() -> String {
    format!("roster/{}", env!("CARGO_PKG_VERSION"))
}

/// True when `ROSTER_ZERO_DELAYS` is set to `1` or `true` (what `ClientConfig::new` reads).
pub fn zero_delays_from_env() -> bool {
    std::env::var(ZERO_DELAYS_ENV)
        .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
        .unwrap_or(false)
}

/// How requests authenticate. `Debug` never shows a credential.
#[derive(Clone, Default)]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer <token>` (Userflow, UserGuiding, generic SCIM).
    Bearer(Secret),
    /// `Authorization: Basic base64(username:password)` (Guru, Guru SCIM, Appcues).
    Basic { username: String, password: Secret },
    /// `Authorization: Token <key>` (Userpilot).
    Token(Secret),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(s) => f.debug_tuple("Bearer").field(s).finish(),
            // The username is not a secret (an email or SCIM user), but keep it out of logs anyway:
            // Appcues uses the API key as the Basic username.
            Auth::Basic { password, .. } => f
                .debug_struct("Basic")
                .field("username", &crate::config::REDACTED)
                .field("password", password)
                .finish(),
            Auth::Token(s) => f.debug_tuple("Token").field(s).finish(),
        }
    }
}

impl Auth {
    /// The credential values, so error texts can be scrubbed of them.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Auth::None => {}
            Auth::Bearer(s) | Auth::Token(s) => out.push(s.expose().to_owned()),
            Auth::Basic { username, password } => {
                out.push(password.expose().to_owned());
                out.push(username.clone());
                out.push(base64_basic(username, password));
            }
        }
        out.retain(|s| s.len() >= 4);
        out
    }

    /// The `Authorization` header value, marked sensitive so hyper and reqwest never print it.
    pub(crate) fn header_value(&self) -> Result<Option<HeaderValue>, String> {
        let raw = match self {
            Auth::None => return Ok(None),
            Auth::Bearer(s) => format!("Bearer {}", s.expose()),
            Auth::Token(s) => format!("Token {}", s.expose()),
            Auth::Basic { username, password } => {
                format!("Basic {}", base64_basic(username, password))
            }
        };
        let mut value = HeaderValue::from_str(&raw).map_err(|_| {
            "the credential holds characters that cannot go in an http header".to_owned()
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

fn base64_basic(username: &str, password: &Secret) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()))
}

/// A rate of `requests` per `per`, e.g. Userpilot deletes: 1 per 2 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub requests: f64,
    pub per: Duration,
}

impl Rate {
    /// `n` requests per second.
    pub fn per_second(n: f64) -> Self {
        Self {
            requests: n,
            per: Duration::from_secs(1),
        }
    }

    /// `n` requests per minute.
    pub fn per_minute(n: f64) -> Self {
        Self {
            requests: n,
            per: Duration::from_secs(60),
        }
    }

    /// Requests per second as a float (0 when `per` is zero).
    pub fn as_per_second(&self) -> f64 {
        let secs = self.per.as_secs_f64();
        if secs > 0.0 {
            self.requests / secs
        } else {
            0.0
        }
    }
}

/// A named rate bucket: requests sent with `.bucket(name)` pass through it *and* through the
/// client-wide limit. A 429 on such a request adapts the bucket, not the client-wide rate.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketConfig {
    pub name: String,
    /// `None`: no fixed limit, discovered from 429s like the client-wide one.
    pub rate: Option<Rate>,
}

/// Everything one vendor connection needs. Build with [`ClientConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct ClientConfig {
    /// Vendor name, for logs and errors.
    pub vendor: &'static str,
    /// Origin plus fixed prefix; relative paths are joined onto it, keeping the prefix.
    pub base_url: Url,
    pub auth: Auth,
    /// Fixed extra headers on every request, e.g. `Userflow-Version: 2020-01-03`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Per attempt, from sending the request to the last byte of the body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt of one request.
    pub max_retries: u32,
    /// Ceiling of the adaptive (AIMD) concurrency.
    pub max_concurrency: usize,
    /// Client-side rate limit; `None` starts unlimited and discovers the limit from 429s.
    pub requests_per_second: Option<f64>,
    /// Minimum pause of the whole client after a 429 without `Retry-After` (UserGuiding blocks
    /// for a minute).
    pub default_429_wait: Option<Duration>,
    /// Named buckets (e.g. Userpilot `delete`: 1 request per 2 s).
    pub buckets: Vec<BucketConfig>,
    pub user_agent: String,
    /// Zero every retry delay (backoff, `Retry-After`, 429 pauses) and do not adapt the rate to
    /// 429s, but keep a configured rate limit real. Defaults to `ROSTER_ZERO_DELAYS=1` in the
    /// environment; tests set it directly.
    pub zero_delays: bool,
    /// Pace the first second from [`crate::http::rate::START_RATE`] when not told the rate
    /// (true by default). A client that sends one request at a time (a tap's page chain)
    /// cannot overrun a burst with its initial concurrency, which is what the cautious start is
    /// for, so it turns it off ([`ClientConfig::without_cautious_start`]) rather than wait
    /// ~0.6 s at 10 to 640 requests/s; a 429 still paces it.
    pub cautious_start: bool,
    /// The flag that ends every wait on a signal: the process's unless a test gives its own.
    pub shutdown: crate::http::Shutdown,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ClientConfig")
            .field("vendor", &self.vendor)
            .field(
                "base_url",
                &crate::http::redact::display_url(&self.base_url),
            )
            .field("auth", &self.auth)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("max_concurrency", &self.max_concurrency)
            .field("requests_per_second", &self.requests_per_second)
            .field("default_429_wait", &self.default_429_wait)
            .field("buckets", &self.buckets)
            .field("user_agent", &self.user_agent)
            .field("zero_delays", &self.zero_delays)
            .field("cautious_start", &self.cautious_start)
            .finish()
    }
}

impl ClientConfig {
    /// A config with the engine's defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_CONNECT_TIMEOUT`],
    /// [`DEFAULT_MAX_RETRIES`], [`DEFAULT_MAX_CONCURRENCY`], no fixed rate (discovered from
    /// 429s), no extra headers, `roster/<version>` and `ROSTER_ZERO_DELAYS` from the environment.
    pub fn new(vendor: &'static str, base_url: Url, auth: Auth) -> Self {
        Self {
            vendor,
            base_url,
            auth,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            requests_per_second: None,
            default_429_wait: None,
            buckets: Vec::new(),
            user_agent: default_user_agent(),
            zero_delays: zero_delays_from_env(),
            cautious_start: true,
            shutdown: crate::http::Shutdown::process(),
        }
    }

    /// Adds a fixed header (builder style). Invalid names or values are reported by
    /// [`crate::http::HttpClient::new`]-time validation, so this takes typed values.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// No cautious start (builder style; see [`ClientConfig::cautious_start`]).
    pub fn without_cautious_start(mut self) -> Self {
        self.cautious_start = false;
        self
    }

    /// Declares a named bucket (builder style).
    pub fn bucket(mut self, name: impl Into<String>, rate: Option<Rate>) -> Self {
        self.buckets.push(BucketConfig {
            name: name.into(),
            rate,
        });
        self
    }
}

/// What a vendor room asks of its HTTP client, in both binaries: auth, fixed headers and the
/// vendor's documented limits. [`ClientConfig::for_vendor`] applies the common config keys on
/// top.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Auth.
    pub auth: Auth,
    /// Fixed headers on every request.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The vendor's documented rate, used when `requests_per_second` is not configured.
    pub requests_per_second: Option<f64>,
    /// The least the whole client pauses after a 429 without `Retry-After`.
    pub default_429_wait: Option<Duration>,
    /// Named buckets with their own rate (requests per second).
    pub buckets: Vec<(&'static str, f64)>,
    /// The vendor documents JSON answers to its writes: a write answered 2xx (but 204) with a
    /// body that is not JSON (an HTML page, a body cut short) is not counted as applied (the
    /// target's transport checks it).
    pub json_answers: bool,
}

impl ClientSpec {
    /// A spec with this auth and nothing else.
    pub fn new(auth: Auth) -> Self {
        ClientSpec {
            auth,
            headers: Vec::new(),
            requests_per_second: None,
            default_429_wait: None,
            buckets: Vec::new(),
            json_answers: false,
        }
    }
}

impl ClientConfig {
    /// The one client builder both binaries use: the vendor's base URL and `spec`, with the
    /// common keys applied by one rule each:
    /// - `requests_per_second`: unset is the vendor's documented rate (`spec`; none: no
    ///   client-side limit, the engine discovers one from 429s); `0` turns the limit off; any
    ///   other value is the limit;
    /// - `max_concurrency`: the ceiling of adaptive concurrency, at least 1 (the config refuses
    ///   0 when it loads); unset is [`DEFAULT_MAX_CONCURRENCY`];
    /// - `timeout_seconds`: per attempt; unset (or not above 0) is [`DEFAULT_TIMEOUT`];
    /// - `max_retries`: retries per request; unset is [`DEFAULT_MAX_RETRIES`].
    pub fn for_vendor(config: &Resolved, spec: ClientSpec) -> Result<ClientConfig, ConfigError> {
        let vendor = config.spec.name;
        let mut cfg = ClientConfig::new(vendor, config.base_url()?, spec.auth);
        for (name, value) in spec.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|err| ConfigError::Invalid {
                    key: "vendor".into(),
                    problem: format!("{vendor} sends an invalid header name {name:?}: {err}"),
                })?;
            cfg = cfg.header(name, HeaderValue::from_static(value));
        }
        let common = &config.common;
        cfg.requests_per_second = match common.requests_per_second {
            Some(rate) if rate > 0.0 => Some(rate),
            Some(_) => None,
            None => spec.requests_per_second,
        };
        if let Some(max) = common.max_concurrency {
            cfg.max_concurrency = max.max(1);
        }
        if let Some(seconds) = common.timeout_seconds.filter(|s| *s > 0.0) {
            cfg.timeout = Duration::from_secs_f64(seconds);
        }
        if let Some(retries) = common.max_retries {
            cfg.max_retries = retries;
        }
        cfg.default_429_wait = spec.default_429_wait;
        for (name, per_second) in spec.buckets {
            cfg = cfg.bucket(name, Some(Rate::per_second(per_second)));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_max_retries_is_the_engines_default() {
        // `--about` and docs/configuration.md show the setting's default; a run without the key
        // uses the engine's. They once said 8 and did 5 ("after 6 attempts" with "8" documented).
        let documented = crate::config::COMMON_SETTINGS
            .iter()
            .find(|s| s.name == "max_retries")
            .and_then(|s| s.default);
        assert_eq!(documented, Some(DEFAULT_MAX_RETRIES.to_string().as_str()));
    }

    #[test]
    fn debug_never_shows_credentials() {
        let base = Url::parse("https://user:pw-in-url@api.example.com/v1").unwrap();
        for auth in [
            Auth::Bearer(Secret::new("bearer-secret-1")),
            Auth::Token(Secret::new("token-secret-2")),
            Auth::Basic {
                username: "apikey-user-3".into(),
                password: Secret::new("basic-secret-4"),
            },
        ] {
            let cfg = ClientConfig::new("acme", base.clone(), auth);
            let text = format!("{cfg:?}");
            for leak in [
                "bearer-secret-1",
                "token-secret-2",
                "apikey-user-3",
                "basic-secret-4",
                "pw-in-url",
            ] {
                assert!(!text.contains(leak), "{leak} leaked in {text}");
            }
            assert!(text.contains("api.example.com"));
        }
    }

    #[test]
    fn header_values_per_scheme() {
        let v = Auth::Bearer(Secret::new("abc"))
            .header_value()
            .unwrap()
            .unwrap();
        assert_eq!(v.to_str().unwrap(), "Bearer abc");
        assert!(v.is_sensitive());
        let v = Auth::Token(Secret::new("k"))
            .header_value()
            .unwrap()
            .unwrap();
        assert_eq!(v.to_str().unwrap(), "Token k");
        let v = Auth::Basic {
            username: "a@b.c".into(),
            password: Secret::new("tok"),
        }
        .header_value()
        .unwrap()
        .unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic YUBiLmM6dG9r");
        assert!(Auth::None.header_value().unwrap().is_none());
        assert!(
            Auth::Bearer(Secret::new("bad\nvalue"))
                .header_value()
                .is_err()
        );
    }

    /// A vendor with a documented rate of 10 requests/s, for the builder's rules.
    static ACME: crate::config::Vendor = crate::config::Vendor {
        name: "acme",
        title: "Acme",
        reads_summary: "",
        writes_summary: "writes nothing",
        base_url_us: Some("https://api.acme.test/v1"),
        base_url_eu: None,
        settings: &[],
        reads: &[],
        writes: &[],
        bulk: false,
        write_rate: None,
    };

    fn built(common: serde_json::Value) -> ClientConfig {
        let mut values = serde_json::json!({"vendor": "acme"});
        for (key, value) in common.as_object().unwrap() {
            values[key] = value.clone();
        }
        let values = values.as_object().unwrap().clone();
        let config = Resolved {
            spec: &ACME,
            common: crate::config::typed(&values).unwrap(),
            values,
        };
        let mut spec = ClientSpec::new(Auth::Bearer(Secret::new("t")));
        spec.requests_per_second = Some(10.0);
        ClientConfig::for_vendor(&config, spec).unwrap()
    }

    #[test]
    fn one_rule_per_common_key_for_both_binaries() {
        // Unset: the vendor's documented rate and the engine's defaults.
        let cfg = built(serde_json::json!({}));
        assert_eq!(cfg.requests_per_second, Some(10.0));
        assert_eq!(cfg.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(cfg.timeout, DEFAULT_TIMEOUT);
        assert_eq!(cfg.max_retries, DEFAULT_MAX_RETRIES);
        // 0 turns the rate limit off; a value is the limit.
        assert_eq!(
            built(serde_json::json!({"requests_per_second": 0})).requests_per_second,
            None
        );
        assert_eq!(
            built(serde_json::json!({"requests_per_second": 2.5})).requests_per_second,
            Some(2.5)
        );
        // max_concurrency is at least 1 (the config refuses 0 when it loads).
        assert_eq!(
            built(serde_json::json!({"max_concurrency": 0})).max_concurrency,
            1
        );
        assert_eq!(
            built(serde_json::json!({"max_concurrency": 3})).max_concurrency,
            3
        );
        let cfg = built(serde_json::json!({"timeout_seconds": 2.5, "max_retries": 0}));
        assert_eq!(cfg.timeout, Duration::from_millis(2500));
        assert_eq!(cfg.max_retries, 0);
    }

    #[test]
    fn rates_convert() {
        assert_eq!(Rate::per_minute(600.0).as_per_second(), 10.0);
        let r = Rate {
            requests: 1.0,
            per: Duration::from_secs(2),
        };
        assert_eq!(r.as_per_second(), 0.5);
    }
}
