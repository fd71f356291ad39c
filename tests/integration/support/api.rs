//! An HTTP client for the sandbox tests that authenticates as the sandbox's default credentials
//! for a vendor, and multipart bodies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use reqwest::header::HeaderMap;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::Value;

/// One answer: status, headers, the body as JSON (or `Value::Null`) and as text.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A client for one vendor of one sandbox.
#[derive(Clone, Debug)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub vendor: Vendor,
    pub auth: Option<(String, Option<String>, &'static str)>,
}

pub fn api(sb: &Sandbox, vendor: Vendor) -> Api {
    let c = sb.config(vendor);
    let s = |k: &str| c[k].as_str().unwrap().to_owned();
    let auth = match vendor {
        Vendor::UserGuiding | Vendor::Userflow => Some((s("api_key"), None, "bearer")),
        Vendor::Userpilot => Some((s("api_key"), None, "token")),
        Vendor::Appcues => Some((s("api_key"), Some(s("api_secret")), "basic")),
        Vendor::Guru => Some((s("username"), Some(s("api_token")), "basic")),
        Vendor::GuruScim => Some((s("scim_username"), Some(s("scim_token")), "basic")),
        Vendor::Scim => Some((s("bearer_token"), None, "bearer")),
    };
    Api {
        http: reqwest::Client::new(),
        base: sb.base_url(vendor),
        vendor,
        auth,
    }
}

impl Api {
    pub fn without_auth(mut self) -> Self {
        self.auth = None;
        self
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut rb = self.http.request(method, url);
        match &self.auth {
            Some((k, _, "bearer")) => rb = rb.bearer_auth(k),
            Some((k, _, "token")) => rb = rb.header("Authorization", format!("Token {k}")),
            Some((u, p, _)) => rb = rb.basic_auth(u, p.as_deref()),
            None => {}
        }
        if self.vendor == Vendor::Userpilot {
            rb = rb.header("X-API-Version", "2020-09-22");
        }
        rb
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("request failed");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(reqwest::Method::PATCH, path).json(body))
            .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("Content-Type", content_type)
                .body(body),
        )
        .await
    }
}

/// A multipart/form-data body with one file field `file`.
pub fn multipart(filename: &str, content_type: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "roster-sandbox-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
