//! `roster-sandbox`: serves every vendor API roster talks to on 127.0.0.1, with a seeded
//! in-memory store, an admin API under `/_sandbox/` and faults on demand. See docs/sandbox.md.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use roster_sandbox::{
    DEFAULT_GURU_PAGE_SIZE, DEFAULT_JOB_ROWS_PER_SEC, DEFAULT_LOG_CAPACITY, DEFAULT_PORT,
    DEFAULT_SCIM_COUNT, DEFAULT_SCIM_PAGE_CAP, FailRule, RateLimit, Sandbox, SeedSpec, Settings,
    Vendor, VendorFaults,
};

/// mimalloc instead of glibc's malloc, as in tap-roster and target-roster: every request is
/// parsed into many small maps and strings (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "roster-sandbox",
    version,
    about = "A local emulator of the UserGuiding, Userflow, Userpilot, Appcues, Guru, Guru SCIM and SCIM 2.0 APIs",
    after_help = "Vendors are served under fixed prefixes (printed at start); the admin API is at /_sandbox/.\nSee docs/sandbox.md for every endpoint, credential and fault."
)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT, env = "ROSTER_SANDBOX_PORT")]
    port: u16,
    /// Seed of the generated data (same seed, same data).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// People seeded into each listable vendor.
    #[arg(long, default_value_t = roster_sandbox::DEFAULT_USERS)]
    users: usize,
    /// Groups seeded into each listable vendor.
    #[arg(long, default_value_t = roster_sandbox::DEFAULT_GROUPS)]
    groups: usize,

    /// Token-bucket rate limit VENDOR=RATE[,burst=B][,retry_after=true|false], e.g.
    /// userflow=50/s or userpilot=600/min (repeatable).
    #[arg(long = "rate-limit", value_name = "VENDOR=RATE")]
    rate_limits: Vec<String>,
    /// Turn on UserGuiding's documented block: 50 requests per 10 s, then blocked for 60 s.
    #[arg(long)]
    userguiding_block: bool,
    /// Length of UserGuiding's block in seconds (implies --userguiding-block); shorten for tests.
    #[arg(long, value_name = "SECS")]
    userguiding_block_secs: Option<f64>,
    /// Each vendor's documented limits: Userpilot 600/min and 1 delete per 2 s, Appcues 60/s,
    /// UserGuiding's block.
    #[arg(long)]
    realistic_limits: bool,
    /// Fraction of requests answered 500/503: F for every vendor or VENDOR=F (repeatable).
    #[arg(long = "error-rate", value_name = "[VENDOR=]F")]
    error_rates: Vec<String>,
    /// Fraction of requests whose connection is dropped without an answer (repeatable).
    #[arg(long = "drop-rate", value_name = "[VENDOR=]F")]
    drop_rates: Vec<String>,
    /// Fraction of requests the vendor applies before the answer is lost (500, 503 or a
    /// dropped connection): F for every vendor or VENDOR=F (repeatable).
    #[arg(long = "apply-then-fail-rate", value_name = "[VENDOR=]F")]
    apply_then_fail_rates: Vec<String>,
    /// Milliseconds added to every answer: MS or VENDOR=MS (repeatable).
    #[arg(long = "latency-ms", value_name = "[VENDOR=]MS")]
    latencies: Vec<String>,
    /// Fail the next requests to a path: PATH[,count=N][,status=S][,method=M][,drop][,retry_after=SECS][,apply_then_fail]
    /// (repeatable; PATH includes the vendor prefix, a trailing * matches a prefix;
    /// apply_then_fail lets the vendor apply the request before the answer is replaced).
    #[arg(long = "fail-next", value_name = "RULE")]
    fail_next: Vec<String>,
    /// Every bulk job (Userpilot, Appcues) ends `failed`.
    #[arg(long)]
    fail_jobs: bool,

    /// Guru REST page size (chosen by the server).
    #[arg(long, default_value_t = DEFAULT_GURU_PAGE_SIZE)]
    guru_page_size: usize,
    /// Lifetime of a Guru page token in seconds.
    #[arg(long, default_value_t = 3600)]
    guru_token_ttl_secs: u64,
    /// Guru page tokens carry a position ("skip n") instead of the last email served, so
    /// members removed during a listing shift the rest past the token.
    #[arg(long)]
    guru_offset_tokens: bool,
    /// SCIM server-side page cap (count above it is silently lowered).
    #[arg(long, default_value_t = DEFAULT_SCIM_PAGE_CAP)]
    scim_page_cap: usize,
    /// SCIM count when the client sends none.
    #[arg(long, default_value_t = DEFAULT_SCIM_COUNT)]
    scim_default_count: usize,
    /// Serve SCIM numbers and booleans as strings ("True", "5"), a quirk seen in the wild.
    #[arg(long)]
    scim_stringly: bool,
    /// Answer successful SCIM PATCHes with 204 and no body.
    #[arg(long)]
    scim_patch_204: bool,
    /// Bulk-job rows processed per second (Userpilot documents ~1,200/min: use 20).
    #[arg(long, default_value_t = DEFAULT_JOB_ROWS_PER_SEC)]
    job_rows_per_sec: u64,
    /// Milliseconds a bulk job spends in each status.
    #[arg(long, default_value_t = 25)]
    job_step_ms: u64,
    /// Entries kept in the request log (a ring buffer).
    #[arg(long, default_value_t = DEFAULT_LOG_CAPACITY)]
    log_capacity: usize,
}

fn split_vendor(s: &str) -> Result<(Option<Vendor>, &str)> {
    match s.split_once('=') {
        Some((v, rest)) => Ok((Some(Vendor::from_name(v.trim())?), rest)),
        None => Ok((None, s)),
    }
}

fn parse_fail_rule(s: &str) -> Result<FailRule> {
    let mut parts = s.split(',');
    let path = parts.next().unwrap_or_default().trim();
    if !path.starts_with('/') {
        bail!("--fail-next {s}: the rule must start with a path such as /userflow/users");
    }
    let mut rule = FailRule::new(path, 1);
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        match k.trim() {
            "count" => {
                rule.count = v
                    .parse()
                    .with_context(|| format!("--fail-next {s}: count"))?
            }
            "status" => {
                rule.status = v
                    .parse()
                    .with_context(|| format!("--fail-next {s}: status"))?
            }
            "method" => rule = rule.method(v),
            "drop" => rule.drop = true,
            "apply_then_fail" | "after_apply" => rule.apply_then_fail = true,
            "retry_after" => {
                rule = rule.retry_after(
                    v.parse()
                        .with_context(|| format!("--fail-next {s}: retry_after"))?,
                )
            }
            other => bail!("--fail-next {s}: unknown option '{other}'"),
        }
    }
    Ok(rule)
}

fn settings(a: &Args) -> Result<Settings> {
    let mut s = Settings {
        seed: SeedSpec {
            seed: a.seed,
            users: a.users,
            groups: a.groups,
        },
        port: a.port,
        guru_page_size: a.guru_page_size.max(1),
        guru_token_ttl: Duration::from_secs(a.guru_token_ttl_secs),
        guru_offset_tokens: a.guru_offset_tokens,
        scim_page_cap: a.scim_page_cap.max(1),
        scim_default_count: a.scim_default_count,
        scim_stringly: a.scim_stringly,
        scim_patch_no_content: a.scim_patch_204,
        log_capacity: a.log_capacity.max(1),
        job_rows_per_sec: a.job_rows_per_sec.max(1),
        job_step: Duration::from_millis(a.job_step_ms),
        ..Settings::default()
    };
    let f = &mut s.faults;
    if a.realistic_limits {
        f.apply_realistic();
    }
    for r in &a.rate_limits {
        let (v, rate) = split_vendor(r)?;
        let v = v.with_context(|| format!("--rate-limit {r}: expected VENDOR=RATE"))?;
        f.vendors.entry(v).or_default().rate_limit = Some(RateLimit::parse(rate)?);
    }
    if a.userguiding_block || a.userguiding_block_secs.is_some() {
        let mut b = f.userguiding_block.clone().unwrap_or_default();
        if let Some(secs) = a.userguiding_block_secs {
            b.block_secs = secs;
        }
        f.userguiding_block = Some(b);
    }
    let mut per_vendor = |list: &[String],
                          flag: &str,
                          set: &dyn Fn(&mut VendorFaults, &str) -> Result<()>|
     -> Result<()> {
        for item in list {
            let (v, x) = split_vendor(item)?;
            let targets: Vec<Vendor> = v.map_or_else(|| Vendor::ALL.to_vec(), |v| vec![v]);
            for t in targets {
                set(f.vendors.entry(t).or_default(), x)
                    .with_context(|| format!("{flag} {item}"))?;
            }
        }
        Ok(())
    };
    per_vendor(&a.error_rates, "--error-rate", &|vf, x| {
        vf.error_rate = x.parse()?;
        Ok(())
    })?;
    per_vendor(&a.drop_rates, "--drop-rate", &|vf, x| {
        vf.drop_rate = x.parse()?;
        Ok(())
    })?;
    per_vendor(
        &a.apply_then_fail_rates,
        "--apply-then-fail-rate",
        &|vf, x| {
            vf.apply_then_fail_rate = x.parse()?;
            Ok(())
        },
    )?;
    per_vendor(&a.latencies, "--latency-ms", &|vf, x| {
        vf.latency_ms = x.parse()?;
        Ok(())
    })?;
    for r in &a.fail_next {
        f.fail_next.push(parse_fail_rule(r)?);
    }
    f.fail_jobs = a.fail_jobs;
    Ok(s)
}

#[tokio::main]
async fn main() -> Result<()> {
    // Plain text when stderr is a file or a pipe (a CI log, `2> sandbox.log`).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(roster::cli::logging::use_colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let settings = settings(&args)?;
    // Listen for signals before the banner: a script may send SIGTERM as soon as it reads it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for SIGINT")?;
    let seed = settings.seed;
    let sb = Sandbox::builder()
        .settings(settings)
        .spawn()
        .await
        .context("cannot start roster-sandbox")?;
    let mut banner = format!(
        "roster-sandbox listening on {} (seed {}, {} users, {} groups)\n",
        sb.origin(),
        seed.seed,
        seed.users,
        seed.groups
    );
    for v in Vendor::ALL {
        banner.push_str(&format!("  {:<12} {}\n", v.name(), sb.base_url(v)));
    }
    banner.push_str(&format!("  {:<12} {}/_sandbox/\n", "admin", sb.origin()));
    // The sandbox is not a Singer program: its stdout is free for the banner, which scripts
    // read to learn the port.
    #[allow(clippy::print_stdout)]
    {
        print!("{banner}");
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    sb.shutdown_gracefully().await;
    Ok(())
}
