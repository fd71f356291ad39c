use super::*;

#[test]
fn idempotency_follows_rfc_9110() {
    for m in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        assert!(method_is_idempotent(&m), "{m}");
    }
    for m in [Method::POST, Method::PATCH] {
        assert!(!method_is_idempotent(&m), "{m}");
    }
}
