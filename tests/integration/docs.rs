//! Generated docs stay in step with the code: `docs/configuration.md` is the `--about
//! --format markdown` output of both binaries. Regenerate with
//! `ROSTER_REGENERATE_DOCS=1 cargo test --test integration docs::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use roster::cli::about;
use roster::config::Applies;

fn generated() -> String {
    format!(
        "<!-- generated from `tap-roster --about --format markdown` and `target-roster --about --format markdown`; regenerate with ROSTER_REGENERATE_DOCS=1 cargo test --test integration docs:: -->\n\n{}\n\n{}",
        about::markdown(Applies::Tap).replacen("# ", "# Configuration: ", 1),
        about::markdown(Applies::Target).replacen("# ", "# Configuration: ", 1),
    )
}

#[test]
fn configuration_reference_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let expected = generated();
    if std::env::var_os("ROSTER_REGENERATE_DOCS").is_some() {
        std::fs::write(path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/configuration.md is stale: run ROSTER_REGENERATE_DOCS=1 cargo test --test integration docs::"
    );
}
