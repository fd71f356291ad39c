//! What the client sends and keeps: auth schemes and headers, secret-free errors, URLs that
//! stay on the origin, keep-alive and gzip.

use super::*;

#[tokio::test]
async fn auth_schemes_fixed_headers_and_user_agent() {
    let server = Server::start(|_, _| reply(200, "{}")).await;
    let schemes = [
        (
            Auth::Bearer(Secret::new("tok-bearer-1")),
            "Bearer tok-bearer-1",
        ),
        (
            Auth::Basic {
                username: "me@acme.io".into(),
                password: Secret::new("pw-basic-2"),
            },
            "Basic bWVAYWNtZS5pbzpwdy1iYXNpYy0y",
        ),
        (Auth::Token(Secret::new("tok-token-3")), "Token tok-token-3"),
    ];
    for (auth, want) in schemes {
        let mut cfg = ClientConfig::new("acme", server.base.clone(), auth);
        cfg.headers.push((
            HeaderName::from_static("x-api-version"),
            HeaderValue::from_static("2020-09-22"),
        ));
        cfg.headers.push((
            HeaderName::from_static("userflow-version"),
            HeaderValue::from_static("2020-01-03"),
        ));
        let c = HttpClient::new(cfg.clone()).unwrap();
        c.get("/me").send().await.unwrap();
        let seen = server.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.header("authorization"), Some(want));
        assert_eq!(last.header("x-api-version"), Some("2020-09-22"));
        assert_eq!(last.header("userflow-version"), Some("2020-01-03"));
        assert_eq!(
            last.header("user-agent"),
            Some(format!("roster/{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert!(
            last.header("accept-encoding")
                .unwrap_or("")
                .contains("gzip")
        );
        for text in [format!("{c:?}"), format!("{cfg:?}")] {
            for secret in [
                "tok-bearer-1",
                "pw-basic-2",
                "tok-token-3",
                "bWVAYWNtZS5pbzpwdy1iYXNpYy0y",
            ] {
                assert!(!text.contains(secret), "{secret} leaked: {text}");
            }
        }
    }
    let none = HttpClient::new(ClientConfig::new("acme", server.base.clone(), Auth::None)).unwrap();
    none.get("/me").send().await.unwrap();
    assert_eq!(server.seen().last().unwrap().header("authorization"), None);
}

#[tokio::test]
async fn errors_never_carry_secrets() {
    // A server that echoes the Authorization header back in an error body.
    let server = Server::start(|req, _| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        reply(401, &format!("{{\"error\":\"bad credentials: {auth}\"}}"))
    })
    .await;
    for auth in [
        Auth::Bearer(Secret::new("sekrit-bearer-123")),
        Auth::Token(Secret::new("sekrit-token-456")),
        Auth::Basic {
            username: "api-key-789".into(),
            password: Secret::new("sekrit-basic-000"),
        },
    ] {
        let mut cfg = ClientConfig::new("acme", server.base.clone(), auth);
        cfg.zero_delays = true;
        let c = HttpClient::new(cfg).unwrap();
        let err = c.get("/me").send().await.unwrap_err();
        assert!(err.is_auth());
        for text in [err.to_string(), format!("{err:?}")] {
            for secret in [
                "sekrit-bearer-123",
                "sekrit-token-456",
                "api-key-789",
                "sekrit-basic-000",
                "YXBpLWtleS03ODk6c2Vrcml0LWJhc2ljLTAwMA==",
            ] {
                assert!(!text.contains(secret), "{secret} leaked: {text}");
            }
            assert!(text.contains("**redacted**"), "{text}");
        }
    }
    // Credentials in the base URL never show either.
    let mut with_userinfo = server.base.clone();
    with_userinfo.set_username("user").unwrap();
    with_userinfo.set_password(Some("url-pass-xyz")).unwrap();
    let mut cfg = ClientConfig::new("acme", with_userinfo, Auth::None);
    cfg.zero_delays = true;
    let c = HttpClient::new(cfg.clone()).unwrap();
    let err = c.get("/me").send().await.unwrap_err();
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{c:?}"),
        format!("{cfg:?}"),
    ] {
        assert!(!text.contains("url-pass-xyz"), "{text}");
    }
}

#[tokio::test]
async fn urls_keep_the_prefix_and_stay_on_the_origin() {
    let server = Server::start(|req, _| {
        if req.path.contains("token=2") {
            reply(200, "[3]")
        } else {
            reply_with(
                200,
                &[("link", "</api/v1/members?token=2>; rel=\"next-page\"")],
                "[1,2]",
            )
        }
    })
    .await;
    let c = client(&server);
    let page1 = c
        .get("/members")
        .query("search", "a b&c")
        .send()
        .await
        .unwrap();
    assert_eq!(server.seen()[0].path, "/api/v1/members?search=a+b%26c");
    let next = page1.next_link().unwrap();
    assert_eq!(
        roster::http::paginate::link::token(&next).as_deref(),
        Some("2")
    );
    let page2 = c.get(next.as_str()).send().await.unwrap();
    assert_eq!(page2.json::<Vec<u32>>().unwrap(), vec![3]);
    assert_eq!(page2.next_link(), None);
    let err = c
        .get("https://elsewhere.example.com/api/v1/members")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::InvalidUrl { .. }), "{err}");
    assert_eq!(server.count(), 2);
    // Decode errors name the vendor and URL and show the body.
    let err = page2.json::<Vec<String>>().unwrap_err();
    assert!(
        err.to_string().starts_with("acme: http://127.0.0.1:"),
        "{err}"
    );
    assert_eq!(err.body_excerpt(), Some("[3]"));
}

#[tokio::test]
async fn keep_alive_reuses_one_connection_and_gzip_is_decoded() {
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"{\"zipped\":true}").unwrap();
        e.finish().unwrap()
    };
    let server = Server::start(move |_, _| Action::Reply {
        status: 200,
        headers: vec![
            ("content-encoding".into(), "gzip".into()),
            ("content-type".into(), "application/json".into()),
        ],
        body: gz.clone(),
    })
    .await;
    let c = client(&server);
    for _ in 0..10 {
        let r = c.get("/x").send().await.unwrap();
        assert_eq!(r.json::<serde_json::Value>().unwrap()["zipped"], true);
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn writes_carry_the_same_headers_never_ask_for_compression_and_reuse_one_connection() {
    // Writes go through hyper's client directly (not reqwest's stack): the same auth, fixed
    // headers, user agent and keep-alive as reads, a body sent as it is, and no compressed
    // answer asked for (writes decompress nothing).
    let server = Server::start(|req, _| {
        if req.path.ends_with("/big") {
            // An answer larger than one read: put together from several chunks.
            return reply(200, &format!("[\"{}\"]", "x".repeat(3_000_000)));
        }
        reply(
            200,
            &format!("{{\"got\":{}}}", String::from_utf8_lossy(&req.body)),
        )
    })
    .await;
    let mut cfg = ClientConfig::new(
        "acme",
        server.base.clone(),
        Auth::Bearer(Secret::new("tok-write-1")),
    );
    cfg.headers.push((
        HeaderName::from_static("userflow-version"),
        HeaderValue::from_static("2020-01-03"),
    ));
    let c = HttpClient::new(cfg).unwrap();
    for n in 0..10 {
        let r = c
            .post("/users")
            .json_bytes(format!("{{\"n\":{n}}}").into())
            .idempotent(true)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json::<serde_json::Value>().unwrap(),
            serde_json::json!({"got": {"n": n}})
        );
        assert!(r.url.path().ends_with("/users"), "{}", r.url);
    }
    let big = c.put("/big").send().await.unwrap();
    assert_eq!(big.body.len(), 3_000_004);
    assert!(big.body.starts_with(b"[\"xxx") && big.body.ends_with(b"xxx\"]"));
    let seen = server.seen();
    assert_eq!(seen.len(), 11);
    let last = &seen[9];
    assert!(last.path.ends_with("/users"), "{}", last.path);
    assert_eq!(last.header("authorization"), Some("Bearer tok-write-1"));
    assert_eq!(last.header("userflow-version"), Some("2020-01-03"));
    assert_eq!(last.header("content-type"), Some("application/json"));
    assert_eq!(
        last.header("user-agent"),
        Some(format!("roster/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(last.header("accept-encoding"), Some("identity"));
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}
