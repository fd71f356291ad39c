//! Writes the vendor never applied (issue 12, item 4).

use super::target_matrix::run_target;
use super::*;

/// A listener on another origin that answers `200 {}` to anything and counts connections: a
/// write re-sent there after a 307 would be counted as sent, and its personal data leaked.
struct Elsewhere {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Elsewhere {
    fn start() -> Elsewhere {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"success\":true}",
                );
            }
        });
        Elsewhere { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A write answered with a redirect, an HTML page or a body cut short is never counted as
/// sent: the record is rejected with a reason naming the Location or the shape, the vendor
/// holds nothing, a 302 is not followed as a GET, and a 307 to another origin re-sends nothing
/// there. Every answer repeats (`count` covers SCIM's look-up-and-resend of an unconfirmed
/// create), so the last word is the fault's. Fails on the old code, which followed redirects
/// and took any 2xx as applied.
#[test]
fn writes_answered_with_a_redirect_html_or_a_cut_body_are_not_counted_as_sent() {
    use roster_sandbox::FaultAnswer;
    let elsewhere = Elsewhere::start();
    let input = [
        json!({"type": "SCHEMA", "stream": "users", "schema": {"type": "object"}, "key_properties": ["id"]}),
        json!({"type": "RECORD", "stream": "users", "record": {"id": "u0001@example.com", "email": "u0001@example.com", "name": "User 1"}}),
        json!({"type": "STATE", "value": {"offset": 1}}),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect::<String>();
    for vendor in [
        Vendor::Userflow,
        Vendor::Scim,
        Vendor::UserGuiding,
        Vendor::Guru,
    ] {
        let (method, path) = write_path(vendor);
        let answers = [
            (
                FaultAnswer::Redirect {
                    status: 302,
                    location: path.to_string(),
                },
                "Location: ",
            ),
            (
                FaultAnswer::Redirect {
                    status: 307,
                    location: format!("http://127.0.0.1:{}{path}", elsewhere.port),
                },
                "Location: http://127.0.0.1:",
            ),
            (FaultAnswer::Html, "instead of JSON"),
            (FaultAnswer::Truncated, "cut short"),
        ];
        for (answer, says) in answers {
            let what = format!("{vendor} answered {answer:?}");
            let sb = Sandbox::builder()
                .users(0)
                .groups(0)
                .start_background()
                .unwrap();
            sb.faults().fail_next(
                FailRule::new(path, 50)
                    .method(method)
                    .answer(answer.clone()),
            );
            let dir = tempfile::tempdir().unwrap();
            let mut config = sb.config(vendor);
            config["reject_file"] = json!(dir.path().join("rejects.ndjson"));
            let run = run_target(&config, &input, dir.path(), true);
            let ctx = format!(
                "{what}\n--- stderr\n{}\n--- report\n{:#}\n--- requests\n{:#?}",
                run.stderr,
                run.report,
                sb.requests()
            );
            assert!(!run.stderr.contains("panicked"), "{ctx}");
            assert_eq!(run.code, Some(0), "{ctx}");
            assert_eq!(run.report["totals"]["sent"], 0, "{ctx}");
            assert_eq!(run.report["totals"]["rejected"], 1, "{ctx}");
            assert_eq!(run.rejects.len(), 1, "{ctx}");
            let reason = s(&run.rejects[0]["reject"]["reason"]);
            assert!(reason.contains(says), "{reason:?} lacks {says:?}: {ctx}");
            assert!(
                actual(&sb, vendor).users.is_empty(),
                "the vendor holds a user it never applied: {ctx}"
            );
            assert_eq!(elsewhere.hits(), 0, "a write went to another origin: {ctx}");
            if matches!(answer, FaultAnswer::Redirect { .. }) {
                let log = sb.requests();
                let redirected = log
                    .iter()
                    .find(|r| r.status / 100 == 3)
                    .map(|r| r.seq)
                    .unwrap_or_else(|| panic!("no redirect answered: {ctx}"));
                let followed: Vec<_> = log
                    .iter()
                    .filter(|r| r.seq > redirected && r.path == path && r.method != method)
                    .collect();
                assert!(followed.is_empty(), "the redirect was followed: {ctx}");
            }
        }
    }
}
