//! Userflow list pages over arbitrary bytes: the generic cursor envelope (`cursor::parse`, used
//! for groups), the tap's streaming `UsersPage` decoding with the record builders behind it, and
//! the `starting_after` extraction from `next_page_url`.
//!
//! Oracles besides "never panics": a page that says `has_more` always yields a non-empty
//! cursor (or an error), so the tap can never loop on one page; a cursor taken from
//! `next_page_url` is non-empty; every record the builders make carries its key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::http::paginate::cursor;
use roster::vendors::userflow::model::{self, UsersPage, WireUser};

fuzz_target!(|data: &[u8]| {
    match cursor::parse(data) {
        Ok(page) => {
            if page.has_more {
                let next = page.next_cursor.as_deref().expect("has_more without a cursor");
                assert!(!next.is_empty());
            } else {
                assert!(page.next_cursor.is_none());
            }
            for value in page.records {
                if let Ok(group) = model::group(value) {
                    assert!(group.get("id").is_some_and(|id| id.is_string()), "{group:?}");
                }
            }
        }
        Err(err) => assert!(!err.0.is_empty()),
    }

    let text = String::from_utf8_lossy(data);
    if let Some(after) = cursor::starting_after(&text) {
        assert!(!after.is_empty());
    }

    if let Ok(page) = serde_json::from_slice::<UsersPage>(data) {
        let _ = page.has_more();
        for wire in page.data.unwrap_or_default() {
            if let WireUser::User { fields, .. } = &wire {
                let _ = model::id_of(fields);
            }
            let parts = model::user(wire, true);
            if let Some(user) = &parts.user {
                assert!(user.get("id").is_some_and(|id| id.is_string()), "{user:?}");
            }
            for m in &parts.memberships {
                assert!(m.get("group_id").is_some_and(|id| id.is_string()), "{m:?}");
                assert!(m.get("user_id").is_some_and(|id| id.is_string()), "{m:?}");
            }
        }
    }
});
