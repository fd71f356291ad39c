#!/usr/bin/env python3
"""roster's benchmarks in one table, side by side with the Python peers (issue 8).

Run through `benches/run.sh` (which builds first); see BENCHMARKS.md for the figures.

    benches/run.sh                         # everything, 3 runs each, full sizes
    benches/run.sh --quick                 # small sizes, 1 run: a check that it all works
    benches/run.sh --only protocol,rate    # some sections

Sections (each measured whole-process: wall time, CPU time, peak RSS from wait4's rusage):
- protocol: target-roster --dry-run vs a minimal singer-sdk target (validates, discards) vs
  target-jsonl, on the same 1,000,000-record Singer stream (benches/gen_input.py), fed on stdin;
  target-roster once more at a tenth of the input to show its memory is flat.
- tap: tap-roster vs kingalban-tap-userflow, 100,000 sandbox users (benches/tap_userflow.py);
  tap-roster once more at 5x the users to show its memory is flat.
- upserts: real Userflow upserts over loopback to roster-sandbox, target-roster vs a singer-sdk
  target making the same POST /users per record with `requests` (benches/peers/target_http.py).
- rate: rate-limit efficiency, target-roster writing Userpilot identifies to a sandbox capped at
  R = 50/s and at 600/min (token bucket, 429 without Retry-After, as Userpilot documents),
  5,000 upserts, not told R (requests_per_second: 0, adaptive discovery) and told it.
- bulk: benches/bulk.sh (1,000,000 users through Appcues and Userpilot bulk), when present.
- sandbox: benches/sandbox_upserts.rs against the release roster-sandbox process.
- ledger: the second run over N unchanged Userflow users (docs/sync.md): it must send no write;
  its time and peak RSS beside a dry run of the same input, and the ledger's size on disk.
- mirror: a sync_mode mirror run over N Userflow users of which 1% left the source (a
  start-only pass, docs/sync.md#mirror-deletes): its time, requests and deletes, beside the same
  pass under sync_mode upsert.

Every comparison is a ratio of figures measured in the same run.
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import tap_userflow  # noqa: E402
from common import BENCH, OUT, PEERS, ROOT, Sandbox, check, log, measure, median  # noqa: E402

SECTIONS = ["protocol", "tap", "upserts", "rate", "bulk", "sandbox", "ledger", "mirror"]
USERFLOW_KEY = "sandbox-userflow-key"
USERPILOT_KEY = "sandbox-userpilot-key"


class Table:
    """The one table: rows of (section, subject, work, median wall s, throughput, CPU s,
    peak RSS MB, comparison, goal)."""

    def __init__(self):
        self.rows = []
        self.lock = threading.Lock()

    def add(self, section, subject, work, wall="", rate="", cpu="", rss="", comparison="", goal=""):
        with self.lock:
            self.rows.append((SECTIONS.index(section), len(self.rows),
                              [section, subject, work, wall, rate, cpu, rss, comparison, goal]))

    def render(self):
        head = ["section", "program", "work", "median wall s", "throughput", "CPU s", "peak RSS MB",
                "comparison (same run)", "goal"]
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * len(head)) + " |"]
        for _, _, row in sorted(self.rows):
            lines.append("| " + " | ".join(str(c) for c in row) + " |")
        return "\n".join(lines)


def fmt(x, digits=0):
    return f"{x:,.{digits}f}"


# "Memory flat": the larger input's peak RSS is at most this multiple of the smaller input's
# (ten or five times the work may cost half as much memory again, not several times more).
FLAT_TOLERANCE = 1.5


def flat_verdict(big_mb, small_mb):
    """The memory verdict: the two sizes' peaks compared, and the absolute 100 MB goal."""
    ratio = big_mb / small_mb if small_mb else float("inf")
    return (f"flat (peak within {FLAT_TOLERANCE}x of the smaller run's, here {ratio:.2f}x): "
            f"{verdict(ratio <= FLAT_TOLERANCE)}; < 100 MB: {verdict(big_mb < 100)}")


def verdict(ok):
    return "met" if ok else "**missed**"


def runs_of(argv, n, out_dir, name, stdin_path=None, env=None, before=None, after=None):
    """Runs argv n times; returns the per-run results (after(out_path, result) may check and
    add to each)."""
    results = []
    for i in range(n):
        if before:
            before()
        out = out_dir / f"{name}-{i}.out"
        result = check(measure(argv, out, stdin_path=stdin_path, env=env), argv, out)
        result["load"] = common.load()
        if after:
            after(out, result)
        log(f"   {name} run {i + 1}/{n}: {result['wall_s']:.2f} s wall, {result['cpu_s']:.2f} CPU s, "
            f"{result['peak_rss_mb']:.1f} MB (load {result['load']:.1f})")
        results.append(result)
    return results


def summarize(results, records):
    wall = median(r["wall_s"] for r in results)
    return {
        "runs": results,
        "median_wall_s": wall,
        "median_cpu_s": median(r["cpu_s"] for r in results),
        "median_peak_rss_mb": median(r["peak_rss_mb"] for r in results),
        "records": records,
        "records_per_s": records / wall,
    }


# roster's default ledger lives in the user's state directory; every harness run gets a fresh
# one, so a row never depends on what earlier runs (or the user's own syncs) left there.
STATE_HOME = tempfile.mkdtemp(prefix="roster-bench-state-")


def roster_env():
    env = dict(os.environ)
    for var in ("RUST_LOG", "ROSTER_LOG", "ROSTER_ZERO_DELAYS"):
        env.pop(var, None)
    env["XDG_STATE_HOME"] = STATE_HOME
    return env


def input_file(n):
    """The Singer stream of n users (generated once per size)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"users-{n}.jsonl"
    if not path.exists():
        log(f"== generating {path.name}")
        tmp = path.with_suffix(".tmp")
        subprocess.run([sys.executable, str(BENCH / "gen_input.py"), str(n), str(tmp)], check=True)
        tmp.rename(path)
    return path


# --- protocol overhead ---------------------------------------------------------------------

def protocol(args, release, work, table, results):
    n = args.records
    path = input_file(n)
    mb = path.stat().st_size / 1e6
    sdk = common.venv("singer-sdk")
    jsonl = common.venv("target-jsonl")
    (work / "roster-dry.json").write_text(json.dumps(
        {"vendor": "userflow", "base_url": "http://127.0.0.1:9/userflow", "api_key": USERFLOW_KEY}))
    (work / "empty.json").write_text("{}")
    jsonl_dir = work / "jsonl"
    jsonl_dir.mkdir(exist_ok=True)
    (work / "jsonl.json").write_text(json.dumps({"destination_path": str(jsonl_dir), "do_timestamp_file": False}))
    roster_argv = [str(release / "target-roster"), "--config", str(work / "roster-dry.json"), "--dry-run",
                   "--dry-run-output", "/dev/null", "--report", str(work / "dry-report.json")]
    env = roster_env()

    def roster_check(out, result):
        report = json.loads((work / "dry-report.json").read_text())
        totals = report["totals"]
        if totals["records_in"] != n or totals["rejected"] != 0:
            raise SystemExit(f"target-roster --dry-run: {totals}")

    def clean_jsonl():
        for f in jsonl_dir.iterdir():
            f.unlink()

    def jsonl_check(out, result):
        lines = sum(1 for f in jsonl_dir.iterdir() for _ in open(f, "rb"))
        if lines != n:
            raise SystemExit(f"target-jsonl wrote {lines} lines, expected {n}")

    log(f"== protocol overhead: {n:,} records ({mb:.0f} MB)")
    programs = {
        "target-roster --dry-run": dict(argv=roster_argv, runs=args.runs, env=env, after=roster_check),
        "singer-sdk minimal target": dict(argv=[str(sdk), str(PEERS / "target_minimal.py"), "--config",
                                                str(work / "empty.json")], runs=args.peer_runs),
        "target-jsonl": dict(argv=[str(jsonl.parent / "target-jsonl"), "--config", str(work / "jsonl.json")],
                             runs=args.peer_runs, before=clean_jsonl, after=jsonl_check),
    }
    summary = {}
    def measure_program(name):
        p = programs[name]
        rs = runs_of(p["argv"], p["runs"], work, name.split()[0], stdin_path=path, env=p.get("env"),
                     before=p.get("before"), after=p.get("after"))
        summary[name] = summarize(rs, n)

    measure_program("target-roster --dry-run")
    peers = ["singer-sdk minimal target", "target-jsonl"]
    if args.parallel_peers:
        # Both peers are single-threaded Python: side by side, each has a core of its own.
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(peers)) as pool:
            for job in [pool.submit(measure_program, name) for name in peers]:
                job.result()
    else:
        for name in peers:
            measure_program(name)
    # Memory flat: the same dry run on a tenth of the input.
    small_n = max(n // 10, 1000)
    small = summarize(runs_of(roster_argv, 1, work, "roster-small", stdin_path=input_file(small_n), env=env), small_n)
    ours = summary["target-roster --dry-run"]
    sdk_s, jsonl_s = summary["singer-sdk minimal target"], summary["target-jsonl"]
    vs_sdk = ours["records_per_s"] / sdk_s["records_per_s"]
    vs_jsonl = ours["records_per_s"] / jsonl_s["records_per_s"]
    work_text = f"{n:,} records, {mb:.0f} MB, stdin"
    table.add("protocol", "target-roster --dry-run", work_text, fmt(ours["median_wall_s"], 2),
              f"{fmt(ours['records_per_s'])} rec/s", fmt(ours["median_cpu_s"], 1), fmt(ours["median_peak_rss_mb"], 1),
              f"{vs_sdk:.1f}x singer-sdk, {vs_jsonl:.1f}x target-jsonl",
              f">= 100x singer-sdk: {verdict(vs_sdk >= 100)}")
    table.add("protocol", "target-roster --dry-run", f"{small_n:,} records (memory flat?)", fmt(small["median_wall_s"], 2),
              f"{fmt(small['records_per_s'])} rec/s", fmt(small["median_cpu_s"], 1), fmt(small["median_peak_rss_mb"], 1),
              f"peak RSS at {n:,} / at {small_n:,}: {ours['median_peak_rss_mb'] / small['median_peak_rss_mb']:.2f}x",
              flat_verdict(ours['median_peak_rss_mb'], small['median_peak_rss_mb']))
    for name, s in (("singer-sdk minimal target", sdk_s), ("target-jsonl", jsonl_s)):
        table.add("protocol", name, work_text, fmt(s["median_wall_s"], 2), f"{fmt(s['records_per_s'])} rec/s",
                  fmt(s["median_cpu_s"], 1), fmt(s["median_peak_rss_mb"], 1), "", "")
    results["protocol"] = {"records": n, "input_mb": mb, "programs": summary, "small": small,
                           "ratios": {"vs_singer_sdk": vs_sdk, "vs_target_jsonl": vs_jsonl}}


# --- tap ------------------------------------------------------------------------------------

def tap(args, release, work, table, results):
    log(f"== tap: {args.users:,} users")
    summary, ratios = tap_userflow.bench(release, args.users, args.groups, args.runs)
    ours, peer = summary["tap-roster"], summary["kingalban-tap-userflow"]
    work_text = f"{args.users:,} Userflow users, {args.groups} groups"
    table.add("tap", "tap-roster", work_text + f" ({ours['records']:,} RECORDs)", fmt(ours["median_wall_s"], 2),
              f"{fmt(ours['records_per_s'])} rec/s, {fmt(ours['users_per_s'])} users/s", fmt(ours["median_cpu_s"], 1),
              fmt(ours["median_peak_rss_mb"], 1),
              f"{ratios['records_per_s']:.1f}x rec/s, {ratios['users_per_s']:.1f}x users/s, {ratios['peak_rss']:.2f}x RSS",
              f">= 20x rec/s: {verdict(ratios['records_per_s'] >= 20)}; < 0.2x RSS: {verdict(ratios['peak_rss'] < 0.2)}")
    table.add("tap", "kingalban-tap-userflow", work_text + f" ({peer['records']:,} RECORDs)", fmt(peer["median_wall_s"], 2),
              f"{fmt(peer['records_per_s'])} rec/s, {fmt(peer['users_per_s'])} users/s", fmt(peer["median_cpu_s"], 1),
              fmt(peer["median_peak_rss_mb"], 1), "", "")
    results["tap"] = {"users": args.users, "summary": summary, "ratios": ratios}
    if args.tap_big_users:
        big = args.tap_big_users
        log(f"== tap memory at {big:,} users")
        with Sandbox(release / "roster-sandbox", "--users", big, "--groups", args.groups, "--seed", 1) as sandbox:
            (work / "tap-big.json").write_text(json.dumps(
                {"vendor": "userflow", "base_url": f"{sandbox.base}/userflow", "api_key": USERFLOW_KEY}))
            argv = [str(release / "tap-roster"), "--config", str(work / "tap-big.json")]
            counted = {}

            def count(out, result):
                counted["records"], counted["users"] = tap_userflow.count(out)
                out.unlink()

            rs = runs_of(argv, 1, work, "tap-big", env=roster_env(), after=count)
        s = summarize(rs, counted["records"])
        table.add("tap", "tap-roster", f"{big:,} users ({counted['records']:,} RECORDs; memory flat?)",
                  fmt(s["median_wall_s"], 2), f"{fmt(s['records_per_s'])} rec/s", fmt(s["median_cpu_s"], 1),
                  fmt(s["median_peak_rss_mb"], 1),
                  f"peak RSS / at {args.users:,} users: {s['median_peak_rss_mb'] / ours['median_peak_rss_mb']:.2f}x",
                  flat_verdict(s['median_peak_rss_mb'], ours['median_peak_rss_mb']))
        results["tap"]["big"] = s


# --- real upserts ---------------------------------------------------------------------------

def upserts(args, release, work, table, results):
    n = args.upserts
    path = input_file(n)
    sdk = common.venv("singer-sdk")
    log(f"== real upserts over loopback: {n:,} Userflow users")
    summary = {}
    with Sandbox(release / "roster-sandbox", "--users", 0, "--groups", 0, "--log-capacity", 1000) as sandbox:
        userflow = f"{sandbox.base}/userflow"
        (work / "roster-up.json").write_text(json.dumps(
            {"vendor": "userflow", "base_url": userflow, "api_key": USERFLOW_KEY,
             "reject_file": str(work / "rejects.ndjson")}))
        (work / "sdk-up.json").write_text(json.dumps({"base_url": userflow, "api_key": USERFLOW_KEY}))
        sandbox_cpu = {}

        def reset():
            sandbox.admin("POST", "reset")
            sandbox_cpu["start"] = proc_cpu(sandbox.proc.pid)

        def verify(out, result):
            stats = sandbox.admin("GET", "stats")["vendors"].get("userflow", {})
            ok = stats.get("statuses", {}).get("200", 0)
            if ok < n:
                raise SystemExit(f"the sandbox answered {ok} upserts with 200, expected {n}: {stats}")
            result["requests"] = stats.get("requests", 0)
            result["sandbox_cpu_s"] = proc_cpu(sandbox.proc.pid) - sandbox_cpu["start"]

        programs = {
            "target-roster": [str(release / "target-roster"), "--config", str(work / "roster-up.json")],
            "singer-sdk HTTP target": [str(sdk), str(PEERS / "target_http.py"), "--config", str(work / "sdk-up.json")],
        }
        for name, argv in programs.items():
            runs = args.runs if name == "target-roster" else args.peer_runs
            rs = runs_of(argv, runs, work, name.split()[0] + "-up", stdin_path=path,
                         env=roster_env() if name == "target-roster" else None, before=reset, after=verify)
            s = summarize(rs, n)
            s["median_sandbox_cpu_s"] = median(r["sandbox_cpu_s"] for r in rs)
            summary[name] = s
    ours, peer = summary["target-roster"], summary["singer-sdk HTTP target"]
    ratio = ours["records_per_s"] / peer["records_per_s"]
    # Who is the bottleneck: the CPU each side burned per second of the run (2 cores = 2.0).
    ours_load = ours["median_cpu_s"] / ours["median_wall_s"]
    sandbox_load = ours["median_sandbox_cpu_s"] / ours["median_wall_s"]
    work_text = f"{n:,} POST /users, keep-alive"
    table.add("upserts", "target-roster", work_text, fmt(ours["median_wall_s"], 2), f"{fmt(ours['records_per_s'])} rec/s",
              fmt(ours["median_cpu_s"], 1), fmt(ours["median_peak_rss_mb"], 1),
              f"{ratio:.1f}x singer-sdk; cores busy: target {ours_load:.2f}, sandbox {sandbox_load:.2f}",
              "limited by the sandbox: " + verdict(sandbox_load >= ours_load))
    table.add("upserts", "singer-sdk HTTP target", work_text, fmt(peer["median_wall_s"], 2), f"{fmt(peer['records_per_s'])} rec/s",
              fmt(peer["median_cpu_s"], 1), fmt(peer["median_peak_rss_mb"], 1),
              f"cores busy: target {peer['median_cpu_s'] / peer['median_wall_s']:.2f}, sandbox {peer['median_sandbox_cpu_s'] / peer['median_wall_s']:.2f}", "")
    results["upserts"] = {"records": n, "summary": summary, "ratio": ratio}


def proc_cpu(pid):
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- rate-limit efficiency ------------------------------------------------------------------

def rate_case(release, work, path, n, limit, per_second, told, tag):
    """One run: a fresh sandbox capping Userpilot at `limit`, n identifies through target-roster."""
    with Sandbox(release / "roster-sandbox", "--users", 0, "--groups", 0, "--log-capacity", 1000,
                 "--rate-limit", f"userpilot={limit},retry_after=false") as sandbox:
        config = work / f"rate-{tag}.json"
        config.write_text(json.dumps({
            "vendor": "userpilot", "base_url": f"{sandbox.base}/userpilot", "api_key": USERPILOT_KEY,
            "requests_per_second": per_second if told else 0, "reject_file": str(work / f"rate-{tag}.rejects"),
        }))
        report = work / f"rate-{tag}-report.json"
        argv = [str(release / "target-roster"), "--config", str(config), "--report", str(report)]
        out = work / f"rate-{tag}.out"
        result = check(measure(argv, out, stdin_path=path, env=roster_env()), argv, out)
        stats = sandbox.admin("GET", "stats")["vendors"].get("userpilot", {})
    statuses = stats.get("statuses", {})
    accepted = sum(v for k, v in statuses.items() if k.startswith("2"))
    throttled = statuses.get("429", 0)
    attempts = stats.get("requests", 0)
    rep = json.loads(report.read_text())
    if rep["totals"]["sent"] != n or accepted < n:
        raise SystemExit(f"rate {tag}: sent {rep['totals']['sent']}, accepted {accepted}, expected {n}")
    wall = result["wall_s"]
    return {
        "wall_s": wall, "cpu_s": result["cpu_s"], "peak_rss_mb": result["peak_rss_mb"],
        "attempts": attempts, "accepted": accepted, "throttled": throttled,
        "share_of_r": accepted / wall / per_second, "share_429": throttled / attempts if attempts else 0.0,
        "vs_ideal": wall / (n / per_second), "roster_429s": rep["http"]["status_429"],
        "rate_wait_s": rep["http"]["rate_limit_wait_seconds"],
    }


def rate(args, release, work, table, results):
    n = args.rate_n
    path = input_file(n)
    cases = [(limit, per_second, told) for limit, per_second in args.rate_limits for told in (False, True)]
    log(f"== rate-limit efficiency: {n:,} Userpilot identifies; {len(cases)} cases x {args.rate_runs} runs, "
        f"{'all at once (each with its own sandbox)' if args.rate_parallel else 'one after another'}")
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(cases) * args.rate_runs if args.rate_parallel else 1) as pool:
        for limit, per_second, told in cases:
            for i in range(args.rate_runs):
                tag = f"{limit.replace('/', 'per')}-{'told' if told else 'untold'}-{i}"
                jobs[(limit, told, i)] = pool.submit(rate_case, release, work, path, n, limit, per_second, told, tag)
        out = {}
        for (limit, told, i), job in jobs.items():
            r = job.result()
            log(f"   rate {limit} {'told' if told else 'not told'} run {i + 1}: {100 * r['share_of_r']:.1f}% of R, "
                f"{100 * r['share_429']:.2f}% 429s, {r['wall_s']:.1f} s ({r['vs_ideal']:.3f}x ideal)")
            out.setdefault((limit, told), []).append(r)
    results["rate"] = {}
    for (limit, per_second, told) in cases:
        rs = out[(limit, told)]
        share = median(r["share_of_r"] for r in rs)
        share_429 = median(r["share_429"] for r in rs)
        wall = median(r["wall_s"] for r in rs)
        ideal = n / per_second
        goal = (share >= 0.95 and share_429 <= 0.02) if not told else share >= 0.99
        goal_text = ">= 95% of R, <= 2% 429s" if not told else ">= 99% of R"
        table.add("rate", f"target-roster, {'told R' if told else 'not told R (adaptive)'}",
                  f"{n:,} Userpilot identifies, R = {limit}", fmt(wall, 1),
                  f"{100 * share:.1f}% of R", fmt(median(r['cpu_s'] for r in rs), 1),
                  fmt(median(r['peak_rss_mb'] for r in rs), 1),
                  f"{100 * share_429:.2f}% 429s; {wall:.1f} s vs ideal {ideal:.0f} s ({wall / ideal:.3f}x)",
                  f"{goal_text}: {verdict(goal)}")
        results["rate"][f"{limit} {'told' if told else 'untold'}"] = {"runs": rs, "share_of_r": share, "share_429": share_429,
                                                                      "median_wall_s": wall, "ideal_s": ideal}


# --- bulk (benches/bulk.sh) -----------------------------------------------------------------

def bulk(args, release, work, table, results):
    script = BENCH / "bulk.sh"
    if not script.exists():
        log("== bulk: benches/bulk.sh is not in this checkout; skipped")
        table.add("bulk", "target-roster mode: bulk", "benches/bulk.sh missing", comparison="not measured")
        return
    env = dict(os.environ, USERS=str(args.bulk_users), RUNS=str(args.runs))
    log(f"== bulk: benches/bulk.sh, {args.bulk_users:,} users")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=ROOT)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        raise SystemExit(f"benches/bulk.sh exited {proc.returncode}")
    rows = parse_bulk(proc.stdout)
    if not rows:
        table.add("bulk", "target-roster mode: bulk", f"{args.bulk_users:,} users", comparison="see benches/bulk.sh output")
    for row in rows:
        table.add("bulk", f"target-roster mode: bulk, {row.get('vendor', '?')}", f"{args.bulk_users:,} users",
                  row.get("wall_s", ""), f"{row.get('mb_per_s', '?')} MB/s spooled, {row.get('records_per_s', '?')} rec/s",
                  row.get("cpu_s", ""), row.get("peak_rss_mb", ""),
                  f"peak RSS at a tenth of the users: {row.get('peak_rss_small_mb', '?')} MB",
                  flat_verdict(float(row.get("peak_rss_mb", 1e9)), float(row.get("peak_rss_small_mb", 0))))
    results["bulk"] = {"stdout": proc.stdout, "rows": rows}


def parse_bulk(text):
    """bulk.sh's `RESULT key=value …` lines, else the rows of its Markdown table."""
    rows = []
    for line in text.splitlines():
        if line.startswith("RESULT"):
            rows.append(dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv))
    if rows:
        return rows
    keys = ["vendor", "wall_s", "records_per_s", "jobs", "mb_spooled", "mb_per_s", "cpu_s", "records_per_cpu_s",
            "peak_rss_mb", "peak_rss_small_mb"]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(keys) and cells[0] in ("appcues", "userpilot"):
            rows.append(dict(zip(keys, cells)))
    return rows


# --- the ledger: a second run over unchanged users ------------------------------------------
# Its own section (issue 14's "Tests and figures"); the mirror row goes in a section of its own.

def ledger_fill(release, work, sandbox, path, n, db, env):
    """The first run: n real Userflow upserts to the sandbox with `ledger: db`, which fills the
    ledger the way a user's first run does (Userflow has no documented rate, so target-roster
    is not paced: this is the sandbox's fastest write path, about 17,000 upserts/s on 2 quiet
    cores). Returns the run's figures and the config for the later runs."""
    config = work / "roster-ledger.json"
    config.write_text(json.dumps(
        {"vendor": "userflow", "base_url": f"{sandbox.base}/userflow", "api_key": USERFLOW_KEY,
         "reject_file": str(work / "rejects-ledger.ndjson"), "ledger": str(db)}))
    argv = [str(release / "target-roster"), "--config", str(config)]
    out = work / "ledger-first.out"
    first = check(measure(argv, out, stdin_path=path, env=env), argv, out)
    first["load"] = common.load()
    held = sandbox.admin("GET", "stats")["vendors"].get("userflow", {}).get("statuses", {}).get("200", 0)
    if held < n:
        raise SystemExit(f"the first run had {held} upserts answered 200, expected {n}")
    log(f"   first run (fills the ledger): {first['wall_s']:.2f} s, {n / first['wall_s']:,.0f} upserts/s, "
        f"{first['peak_rss_mb']:.1f} MB (load {first['load']:.1f})")
    return first, argv


def ledger(args, release, work, table, results):
    """The second run over N unchanged users must send no write; its time and peak RSS are
    compared with a dry run of the same input without a ledger. The two alternate, run by
    run, so a machine shared with other work loads both alike."""
    n = args.ledger_users
    path = input_file(n)
    log(f"== ledger: {n:,} Userflow users, then the same again (unchanged)")
    db = work / "ledger.sqlite"
    env = roster_env()
    env.pop("ROSTER_NO_DEFAULT_LEDGER", None)
    with Sandbox(release / "roster-sandbox", "--users", 0, "--groups", 0, "--log-capacity", 1000) as sandbox:
        first, argv = ledger_fill(release, work, sandbox, path, n, db, env)
        counts = {}

        def writes_before():
            stats = sandbox.admin("GET", "stats")["vendors"].get("userflow", {})
            counts["before"] = stats.get("requests", 0)

        def no_writes(out, result):
            stats = sandbox.admin("GET", "stats")["vendors"].get("userflow", {})
            # The connection check is one GET; anything more would be a write.
            result["requests"] = stats.get("requests", 0) - counts["before"]
            if result["requests"] > 1:
                raise SystemExit(f"the second run sent {result['requests']} requests, expected the one connection check")

        plain = dict(env, ROSTER_NO_DEFAULT_LEDGER="1")
        dry_config = work / "roster-ledger-dry.json"
        dry_config.write_text(json.dumps(
            {"vendor": "userflow", "base_url": f"{sandbox.base}/userflow", "api_key": USERFLOW_KEY, "ledger": False}))
        dry_argv = [str(release / "target-roster"), "--config", str(dry_config), "--dry-run", "--dry-run-output", "/dev/null"]
        second_runs, dry_runs = [], []
        for i in range(args.runs):
            second_runs += runs_of(argv, 1, work, f"ledger-second-{i}", stdin_path=path, env=env,
                                   before=writes_before, after=no_writes)
            dry_runs += runs_of(dry_argv, 1, work, f"ledger-dry-{i}", stdin_path=path, env=plain)
        second = summarize(second_runs, n)
        dry = summarize(dry_runs, n)
    size = sum(f.stat().st_size for f in work.glob("ledger.sqlite*"))
    requests = max(r["requests"] for r in second["runs"])
    loads = [r["load"] for r in second_runs + dry_runs]
    table.add("ledger", "target-roster, second run", f"{n:,} unchanged Userflow users, ledger {size / 1e6:.0f} MB on disk "
              f"({size / n:.0f} B per user)", fmt(second["median_wall_s"], 2), f"{fmt(second['records_per_s'])} rec/s",
              fmt(second["median_cpu_s"], 1), fmt(second["median_peak_rss_mb"], 1),
              f"{requests} request(s) (the connection check), 0 writes; dry run of the same input without a ledger "
              f"(alternating with it): {dry['median_wall_s']:.2f} s, {dry['median_cpu_s']:.1f} CPU s, "
              f"{dry['median_peak_rss_mb']:.1f} MB; first run (1 upsert each, fills the ledger) {first['wall_s']:.0f} s; "
              f"load {min(loads):.1f} to {max(loads):.1f}",
              "0 writes, no slower than the dry run, RSS < 100 MB: "
              + verdict(requests <= 1 and second["median_wall_s"] <= dry["median_wall_s"] * 1.05
                        and second["median_peak_rss_mb"] < 100))
    results["ledger"] = {"users": n, "first": first, "second": second, "dry_run": dry, "ledger_bytes": size}


# --- mirror deletes (sync_mode: mirror) ----------------------------------------------------

def mirror_pass(n, version, drop_every=0):
    """The protocol input of n users as one start-only full pass (ACTIVATE_VERSION at the start,
    `version` on every RECORD), without every `drop_every`-th user (0: all of them)."""
    path = OUT / f"mirror-{n}-v{version}-drop{drop_every}.jsonl"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with open(input_file(n)) as src, open(tmp, "w") as out:
        i = 0
        for line in src:
            # Only the message type is needed: the generator writes it first, compact.
            message = {"type": "RECORD"} if line.startswith('{"type":"RECORD"') else json.loads(line)
            if message["type"] == "SCHEMA":
                out.write(line)
                out.write(json.dumps({"type": "ACTIVATE_VERSION", "stream": message["stream"], "version": version}) + "\n")
                continue
            if message["type"] == "RECORD":
                i += 1
                if drop_every and i % drop_every == 0:
                    continue
                # `version` appended to the message's own text: a million json.dumps would
                # take minutes of a loaded machine's CPU.
                line = line.rstrip("\n")
                if not line.endswith("}"):
                    raise SystemExit(f"{src.name}: a RECORD line that is not one JSON object")
                line = f'{line[:-1]},"version":{version}}}\n'
            out.write(line)
    tmp.rename(path)
    return path


def mirror(args, release, work, table, results):
    n = args.mirror_users
    full = mirror_pass(n, 1)
    # Every hundredth user left the source: 1% deletes, within max_delete_ratio's default 10%.
    less = mirror_pass(n, 2, drop_every=100)
    gone = n // 100
    log(f"== mirror: {n:,} Userflow users, then a pass without {gone:,} of them")
    env = roster_env()
    env.pop("ROSTER_NO_DEFAULT_LEDGER", None)
    with Sandbox(release / "roster-sandbox", "--users", 0, "--groups", 0, "--log-capacity", 1000) as sandbox:
        def config(name, mode):
            path = work / f"roster-{name}.json"
            path.write_text(json.dumps(
                {"vendor": "userflow", "base_url": f"{sandbox.base}/userflow", "api_key": USERFLOW_KEY,
                 "reject_file": str(work / f"rejects-{name}.ndjson"), "ledger": str(work / f"{name}.sqlite"),
                 "sync_mode": mode}))
            return path

        report = work / "mirror-report.json"
        mirror_argv = [str(release / "target-roster"), "--config", str(config("mirror", "mirror")), "--report", str(report)]
        upsert_argv = [str(release / "target-roster"), "--config", str(config("upsert", "upsert"))]
        counts = {}

        def requests():
            return sandbox.admin("GET", "stats")["vendors"].get("userflow", {}).get("requests", 0)

        def full_pass():
            # Every user back at the vendor and in the ledger (the 1% re-created), not measured.
            first = check(measure(mirror_argv, work / "mirror-full.out", stdin_path=full, env=env), mirror_argv,
                          work / "mirror-full.out")
            first["load"] = common.load()
            counts["first"] = first
            log(f"   mirror first pass (fills the ledger): {first['wall_s']:.2f} s, {first['cpu_s']:.1f} CPU s, "
                f"{first['peak_rss_mb']:.1f} MB (load {first['load']:.1f})")
            counts["before"] = requests()

        def deleted(out, result):
            result["requests"] = requests() - counts["before"]
            result["deleted"] = json.loads(report.read_text())["totals"]["deleted"]
            if result["deleted"] != gone:
                raise SystemExit(f"the mirror run deleted {result['deleted']}, expected {gone}")

        runs = summarize(runs_of(mirror_argv, args.runs, work, "mirror", stdin_path=less, env=env,
                                 before=full_pass, after=deleted), n - gone)
        check(measure(upsert_argv, work / "upsert-full.out", stdin_path=full, env=env), upsert_argv,
              work / "upsert-full.out")

        def upsert_before():
            counts["upsert_before"] = requests()

        def upsert_requests(out, result):
            result["requests"] = requests() - counts["upsert_before"]

        upsert = summarize(runs_of(upsert_argv, args.runs, work, "mirror-upsert", stdin_path=less, env=env,
                                   before=upsert_before, after=upsert_requests), n - gone)
    requests_made = max(r["requests"] for r in runs["runs"])
    upsert_requests_made = max(r["requests"] for r in upsert["runs"])
    loads = [r["load"] for r in runs["runs"] + upsert["runs"]]
    table.add("mirror", "target-roster, sync_mode mirror", f"{n:,} Userflow users, {gone:,} (1%) gone from the pass",
              fmt(runs["median_wall_s"], 2), f"{fmt(runs['records_per_s'])} rec/s", fmt(runs["median_cpu_s"], 1),
              fmt(runs["median_peak_rss_mb"], 1),
              f"{requests_made:,} requests (the connection check and {gone:,} DELETEs), {gone:,} deleted; "
              f"the same pass under sync_mode upsert (no deletes): {upsert['median_wall_s']:.2f} s, "
              f"{upsert['median_cpu_s']:.1f} CPU s, {upsert['median_peak_rss_mb']:.1f} MB, "
              f"{upsert_requests_made:,} request(s); first pass (fills the ledger) {counts['first']['wall_s']:.0f} s, "
              f"{counts['first']['peak_rss_mb']:.1f} MB; load {min(loads):.1f} to {max(loads):.1f}",
              f"deletes exactly the {gone:,} gone, RSS < 100 MB: "
              + verdict(runs["median_peak_rss_mb"] < 100))
    results["mirror"] = {"users": n, "gone": gone, "first": counts["first"], "mirror": runs, "upsert": upsert}


# --- sandbox throughput (benches/sandbox_upserts.rs) ----------------------------------------

def sandbox(args, release, work, table, results):
    log("== sandbox throughput: benches/sandbox_upserts.rs against the release roster-sandbox")
    figures = []
    with Sandbox(release / "roster-sandbox", "--users", 0, "--groups", 0, "--log-capacity", 1000) as sb:
        for i in range(args.runs):
            sb.admin("POST", "reset")
            proc = subprocess.run(["cargo", "bench", "--quiet", "--locked", "--bench", "sandbox_upserts", "--",
                                   "--url", sb.base, "--requests", str(args.sandbox_requests)],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"sandbox_upserts failed:\n{proc.stderr[-3000:]}")
            m = re.search(r"throughput=(\d+) upserts/s p50=(\S+) p99=(\S+)", proc.stdout)
            if not m:
                raise SystemExit(f"sandbox_upserts printed no throughput:\n{proc.stdout}")
            figures.append({"upserts_per_s": int(m.group(1)), "p50": m.group(2), "p99": m.group(3),
                            "load": common.load()})
            log(f"   sandbox run {i + 1}: {m.group(0)}")
    best = median(f["upserts_per_s"] for f in figures)
    table.add("sandbox", "roster-sandbox", f"{args.sandbox_requests:,} Userflow upserts, 32 keep-alive connections",
              "", f"{fmt(best)} upserts/s", "", "",
              f"p50 {figures[len(figures) // 2]['p50']}, p99 {figures[len(figures) // 2]['p99']} (load generator on the same 2 cores)",
              f">= 20,000/s: {verdict(best >= 20000)}")
    results["sandbox"] = figures


def parse_limits(text):
    out = []
    for item in text.split(","):
        count, unit = item.split("/")
        per_second = float(count) / {"s": 1, "min": 60}[unit]
        out.append((item, per_second))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and one run of each (development)")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ",".join(SECTIONS))
    p.add_argument("--runs", type=int, help="runs of each measurement (default 3; --quick 1)")
    p.add_argument("--peer-runs", type=int, help="runs of each Python peer (default: --runs)")
    p.add_argument("--rate-runs", type=int, help="runs of each rate-limit case (default: --runs)")
    p.add_argument("--records", type=int, help="protocol-overhead input (default 1,000,000)")
    p.add_argument("--users", type=int, help="tap users (default 100,000)")
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--tap-big-users", type=int, help="tap-roster alone at this many users for memory (default 500,000; 0 skips)")
    p.add_argument("--upserts", type=int, help="real upserts (default 50,000)")
    p.add_argument("--rate-n", type=int, help="rate-limit upserts (default 5,000)")
    p.add_argument("--rate-limits", default="50/s,600/min", help="sandbox limits R (default 50/s,600/min)")
    p.add_argument("--rate-serial", dest="rate_parallel", action="store_false",
                   help="run the rate cases one after another (default: all at once, each with its own sandbox)")
    p.add_argument("--bulk-users", type=int, help="bulk users (default 1,000,000)")
    p.add_argument("--sandbox-requests", type=int, help="sandbox throughput requests (default 200,000)")
    p.add_argument("--ledger-users", type=int, help="users of the ledger's second run (default 1,000,000)")
    p.add_argument("--mirror-users", type=int, help="users of the mirror run with 1%% deletes (default 1,000,000)")
    p.add_argument("--parallel-peers", action="store_true",
                   help="run the two single-threaded Python peers of the protocol section side by side "
                        "(one core each; halves the section's time on 2 cores)")
    p.add_argument("--release", default=str(common.release_dir()), help="where the release binaries are")
    args = p.parse_args()
    quick = args.quick
    defaults = dict(runs=1 if quick else 3, records=20_000 if quick else 1_000_000, users=2_000 if quick else 100_000,
                    tap_big_users=0 if quick else 500_000, upserts=2_000 if quick else 50_000,
                    rate_n=200 if quick else 5_000, bulk_users=20_000 if quick else 1_000_000,
                    sandbox_requests=20_000 if quick else 200_000, ledger_users=20_000 if quick else 1_000_000,
                    mirror_users=2_000 if quick else 1_000_000)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.peer_runs = args.peer_runs or args.runs
    args.rate_runs = args.rate_runs or args.runs
    args.rate_limits = parse_limits(args.rate_limits)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise SystemExit(f"unknown section {s!r}; the sections are {', '.join(SECTIONS)}")
    release = Path(args.release)
    table = Table()
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
               "load_at_start": os.getloadavg(), "args": {k: v for k, v in vars(args).items()}}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="roster-bench-") as tmp:
        work = Path(tmp)
        rate_thread = None
        if "rate" in sections and args.rate_parallel and len(sections) > 1:
            # Rate cases are paced by the sandbox's limit and use almost no CPU: run them beside
            # the other sections so the 600/min case (>= 500 s per run) does not add its length.
            rate_error = []

            def rate_bg():
                try:
                    rate(args, release, work, table, results)
                except BaseException as err:  # reported after the other sections
                    rate_error.append(err)

            rate_thread = threading.Thread(target=rate_bg)
            rate_thread.start()
        for section in sections:
            if section == "rate" and rate_thread is not None:
                continue
            try:
                globals()[section](args, release, work, table, results)
            except (Exception, SystemExit) as err:  # one failed section does not lose the others
                log(f"!! section {section} failed: {err}")
                table.add(section, "(failed)", str(err).splitlines()[0][:120] if str(err) else repr(err))
                results.setdefault("failed", {})[section] = str(err)
        if rate_thread is not None:
            rate_thread.join()
            if rate_error:
                raise rate_error[0]
    results["elapsed_s"] = time.time() - started
    results["load_at_end"] = os.getloadavg()
    results["table"] = table.render()
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    la = results["load_at_start"]
    print(f"roster benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} cores, "
          f"load average {la[0]:.1f} at the start, {results['load_at_end'][0]:.1f} at the end; "
          f"medians of {args.runs} run(s) (Python peers {args.peer_runs}"
          f"{', protocol peers side by side' if args.parallel_peers else ''}, rate cases {args.rate_runs}); "
          f"{results['elapsed_s'] / 60:.0f} min{' (--quick)' if quick else ''}")
    print()
    print(table.render())


if __name__ == "__main__":
    main()
