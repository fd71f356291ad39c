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

/// The user-facing docs: the README and every page under docs/.
fn user_docs() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(root).unwrap().display().to_string();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// Issue 11 items 16 to 18: the docs stand on their own. They cite nothing outside the project
/// (the contract is docs/contract.md; the research notes and the vendor documents it was
/// specified from are not shipped), and call a vendor's API document by that name, never "the
/// seed". The sandbox's random seed (`--seed`, `/_sandbox/seed`, "random seed") is fine.
#[test]
fn docs_cite_nothing_outside_the_project() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut shipped = user_docs();
    for extra in [
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "RELIABILITY.md",
        "samples/meltano/.env.example",
        "samples/meltano/meltano.yml",
    ] {
        shipped.push((
            extra.to_string(),
            std::fs::read_to_string(root.join(extra)).unwrap(),
        ));
    }
    let mut problems = Vec::new();
    for (name, text) in &shipped {
        for (number, line) in text.lines().enumerate() {
            for outside in [
                "CONTRACT.md",
                "reference/",
                "../shared",
                "shared/",
                "/work/",
            ] {
                if line.contains(outside) {
                    problems.push(format!("{name}:{}: cites {outside}: {line}", number + 1));
                }
            }
        }
    }
    // .env.example is read by people setting up Meltano: it points at docs, not source files.
    let env_example = std::fs::read_to_string(root.join("samples/meltano/.env.example")).unwrap();
    if env_example.contains("src/") || env_example.contains(".rs") {
        problems.push("samples/meltano/.env.example points at a source file".into());
    }
    for (name, text) in user_docs() {
        for (number, line) in text.lines().enumerate() {
            if mentions_the_seed(line) {
                problems.push(format!("{name}:{}: says \"seed\": {line}", number + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// True when `line` uses "seed" for anything but the sandbox's random seed.
fn mentions_the_seed(line: &str) -> bool {
    let mut text = line.to_ascii_lowercase();
    for allowed in [
        "--seed",
        ".seed(",
        "_sandbox/seed",
        "\"seed\"",
        "random seed",
        "rng seed",
        "`seed`",
    ] {
        text = text.replace(allowed, "");
    }
    let bytes = text.as_bytes();
    text.match_indices("seed").any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + 4).copied();
        !before.is_some_and(|b| b.is_ascii_alphabetic())
            && !after.is_some_and(|b| b.is_ascii_alphabetic())
    })
}

#[test]
fn the_seed_check_tells_a_random_seed_from_the_vendor_document() {
    assert!(mentions_the_seed("the seed's `/import/users` also works"));
    assert!(mentions_the_seed(
        "Vendor over seed: the id goes in the body"
    ));
    assert!(mentions_the_seed("(the seed: in the path)"));
    assert!(!mentions_the_seed("roster-sandbox --port 0 --seed 7"));
    assert!(!mentions_the_seed(
        "back to the start: the initial random seed"
    ));
    assert!(!mentions_the_seed(
        "| `POST /_sandbox/seed {\"seed\",\"users\"}` |"
    ));
    assert!(!mentions_the_seed("draw from an RNG seeded with it"));
    assert!(!mentions_the_seed(
        "(`USERS`, `TRIALS`, `SEED` override the sizes)"
    ));
}

/// Every relative link in the README and docs/ leads to a file of the project (the README was
/// cut down and its sections moved to docs/, so links are easy to break).
#[test]
fn relative_links_lead_to_project_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for (name, text) in user_docs() {
        let dir = root.join(&name).parent().unwrap().to_path_buf();
        for (number, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.starts_with("http") || target.starts_with('#') || target.is_empty() {
                    continue;
                }
                let path = target.split('#').next().unwrap();
                if !dir.join(path).exists() {
                    broken.push(format!("{name}:{}: {target}", number + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
