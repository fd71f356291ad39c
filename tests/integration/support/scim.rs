//! A proxy in front of a SCIM server that creates a conflicting user right before the writer's
//! POST (a deterministic race, so a real server answers 409), for the provisioning tests (SCIM
//! against roster-sandbox and against scim2-server).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// When a [`RaceProxy`] acts: the first request with this method whose path (after the SCIM
/// base) starts with `path`, and, when given, whose body's `userName` is this (any case).
#[derive(Debug, Clone)]
pub struct Trigger {
    pub method: &'static str,
    pub path: &'static str,
    pub user_name: Option<String>,
}

impl Trigger {
    /// The first `POST /Users` for `user_name`.
    pub fn create_of(user_name: &str) -> Self {
        Trigger {
            method: "POST",
            path: "/Users",
            user_name: Some(user_name.to_lowercase()),
        }
    }

    /// The first `PATCH /Groups/…`.
    pub fn group_patch() -> Self {
        Trigger {
            method: "PATCH",
            path: "/Groups/",
            user_name: None,
        }
    }
}

/// A proxy in front of a SCIM server that, right before forwarding the request `trigger`
/// names, sends its own requests (`actions`: method, path after the base, body) to the
/// server: someone else acting between the writer's lookups and its write, every time at the
/// same point. The answers to the actions are kept in `planted`.
#[derive(Debug)]
pub struct RaceProxy {
    pub base: String,
    pub planted: Arc<Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

type Actions = Vec<(&'static str, String, Option<Value>)>;

impl RaceProxy {
    /// Proxies `upstream` (a SCIM base URL); actions authenticate with `authorization`.
    pub fn start(upstream: &str, authorization: &str, trigger: Trigger, actions: Actions) -> Self {
        use axum::body::Bytes;
        use axum::extract::Request;
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.trim_end_matches('/').to_string();
        let upstream_path = url::Url::parse(&upstream).unwrap().path().to_string();
        let base = format!("http://{addr}{upstream_path}");
        let pending = Arc::new(Mutex::new(Some(actions)));
        let planted = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new((
            upstream,
            upstream_path,
            authorization.to_string(),
            trigger,
            pending,
            planted.clone(),
            reqwest::Client::new(),
        ));
        let app = axum::Router::new().fallback(move |req: Request| {
            let shared = shared.clone();
            async move {
                let (upstream, upstream_path, auth, trigger, pending, planted, client) = &*shared;
                let (parts, body) = req.into_parts();
                let body: Bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
                let path_and_query = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                let rest = path_and_query
                    .strip_prefix(upstream_path.as_str())
                    .unwrap_or(&path_and_query)
                    .to_string();
                let fires = parts.method.as_str() == trigger.method
                    && rest.starts_with(trigger.path)
                    && trigger.user_name.as_ref().is_none_or(|want| {
                        let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        sent["userName"].as_str().unwrap_or_default().to_lowercase() == *want
                    });
                let actions = if fires {
                    pending.lock().unwrap().take()
                } else {
                    None
                };
                for (method, path, action_body) in actions.unwrap_or_default() {
                    let mut r = client
                        .request(
                            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                            format!("{upstream}{path}"),
                        )
                        .header("authorization", auth.as_str());
                    if let Some(b) = action_body {
                        r = r
                            .header("content-type", "application/scim+json")
                            .body(b.to_string());
                    }
                    let r = r.send().await.unwrap();
                    assert!(
                        r.status().is_success(),
                        "{method} {path} failed: {}",
                        r.status()
                    );
                    let answer = r.json::<Value>().await.unwrap_or(Value::Null);
                    planted.lock().unwrap().push(answer);
                }
                let mut forward = client.request(
                    reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
                    format!("{upstream}{rest}"),
                );
                for (name, value) in &parts.headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name.as_str(), value.as_bytes());
                    }
                }
                let answer = forward.body(body.to_vec()).send().await.unwrap();
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                let mut headers = axum::http::HeaderMap::new();
                for (name, value) in answer.headers() {
                    if let (Ok(n), Ok(v)) = (
                        axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
                        axum::http::HeaderValue::from_bytes(value.as_bytes()),
                    ) && n != "content-length"
                        && n != "transfer-encoding"
                    {
                        headers.insert(n, v);
                    }
                }
                let bytes = answer.bytes().await.unwrap();
                let response: Response = (status, headers, bytes).into_response();
                response
            }
        });
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        RaceProxy {
            base,
            planted,
            _runtime: runtime,
        }
    }

    /// Plants users (POST /Users bodies) right before the first POST for `user_name`.
    pub fn plant_users(
        upstream: &str,
        authorization: &str,
        user_name: &str,
        users: Vec<Value>,
    ) -> Self {
        let actions = users
            .into_iter()
            .map(|u| ("POST", "/Users".to_string(), Some(u)))
            .collect();
        Self::start(
            upstream,
            authorization,
            Trigger::create_of(user_name),
            actions,
        )
    }
}
