//! SCIM `ListResponse` paging over arbitrary bytes: the page decoder, the next `startIndex`, a
//! stored `startIndex` read back from state, and the tap's resource decoders.
//!
//! Oracles besides "never panics": the next `startIndex` is always beyond the one requested, so
//! a listing always makes progress (a server that ignores `startIndex` must not make the tap
//! loop for ever), and a listing ends on an empty page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::http::paginate::scim;
use roster::scim::list::start_index;
use roster::scim::types;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let requested = u64::from(u16::from_le_bytes(*head));
    if let Ok(page) = scim::parse(body) {
        match scim::next_start_index(requested, &page) {
            Some(next) => {
                assert!(!page.resources.is_empty(), "a next page after an empty one");
                assert!(
                    next > requested.max(scim::FIRST_INDEX),
                    "no progress: asked for {requested}, next is {next} ({page:?})"
                );
            }
            None => {}
        }
        for resource in page.resources.iter().take(50) {
            let _ = types::user_record(resource.clone());
            let parts = types::group_records(resource.clone(), true);
            let _ = parts;
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if let Some(n) = start_index(&value) {
            assert!(n >= scim::FIRST_INDEX);
        }
    }
});
