#!/usr/bin/env python3
"""Soak run: RECORDS real upserts through a release target-roster into a release roster-sandbox
(Userflow) that answers a seeded 5% of requests with 500/503 and, every STORM_EVERY seconds,
throttles Userflow for STORM_SECONDS (a 429 storm). Samples the target's RSS and open file
descriptors every second from /proc, checks that nothing was lost, and writes:

  OUT/soak.json   the figures (scripts/reliability.sh puts them in RELIABILITY.md)
  OUT/soak.csv    one line per second: seconds, RSS MB, open fds, Userflow answers that second
                  that were 2xx (what the sandbox accepted), and whether a storm was on
  SVG             the RSS and fd curves as a small SVG (default docs/reliability-soak.svg)

The records are USERS distinct users, each upserted RECORDS / USERS times with a revision
counter, so the vendor must end with every user at its last revision. Standard library only.

  scripts/soak.py --records 1000000 --users 100000
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from common import Sandbox, log, release_dir  # noqa: E402

USERFLOW_KEY = "sandbox-userflow-key"
# Flat: the peak RSS of the second half of the run is at most this multiple of the first half's
# peak (plus a megabyte of allocator noise); no growth: the most fds open in the last quarter is
# at most the most open in the first quarter (plus two, for a connection being replaced).
RSS_TOLERANCE = 1.10
FD_SLACK = 2


def generate(path, records, users, state_every):
    revs = records // users
    with open(path, "w") as f:
        f.write(json.dumps({"type": "SCHEMA", "stream": "users", "key_properties": ["id"],
                            "schema": {"type": "object"}}) + "\n")
        n = 0
        for rev in range(1, revs + 1):
            for i in range(users):
                f.write(json.dumps({"type": "RECORD", "stream": "users", "record": {
                    "id": f"s{i:07d}", "email": f"s{i}@example.com",
                    "attributes": {"rev": rev, "plan": ["free", "pro", "team"][(i + rev) % 3]}}}) + "\n")
                n += 1
                if n % state_every == 0 or n == revs * users:
                    f.write(json.dumps({"type": "STATE", "value": {"offset": n}}) + "\n")
    return revs * users, revs


def accepted_so_far(sb):
    """Userflow answers with a 2xx status so far (the sandbox's counters), or None."""
    try:
        statuses = sb.admin("GET", "stats")["vendors"].get("userflow", {}).get("statuses", {})
    except (OSError, ValueError, KeyError):
        return None
    return sum(v for k, v in statuses.items() if k.startswith("2"))


def sample(pid, stop, rows, started, sb, storm_on):
    last = accepted_so_far(sb) or 0
    while not stop.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss_kb = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            break
        now = accepted_so_far(sb)
        accepted = None if now is None else now - last
        last = last if now is None else now
        rows.append((round(time.time() - started, 1), rss_kb / 1024, fds, accepted, storm_on[0]))
        stop.wait(1.0)


def storms(sb, stop, every, seconds, rate, count, storm_on, started, spans):
    while not stop.wait(every):
        sb.admin("POST", "faults", {"rate_limit": {"userflow": rate}})
        count[0] += 1
        storm_on[0] = 1
        begun = time.time() - started
        if stop.wait(seconds):
            break
        sb.admin("POST", "faults", {"rate_limit": {"userflow": None}})
        storm_on[0] = 0
        spans.append((begun, time.time() - started))


def recovery(rows, spans, every, settle=8.0):
    """Per storm: the accepted rate over the 10 s before it and from `settle` s after it ends to
    the next storm. A storm is recovered from when the rate after is at least 80% of the rate
    before (a window with fewer than 3 samples is left out)."""
    out = []
    for begun, ended in spans:
        def rate(a, b):
            xs = [r[3] for r in rows if a <= r[0] < b and r[3] is not None]
            return (sum(xs) / len(xs)) if len(xs) >= 3 else None
        before = rate(begun - 10, begun)
        after = rate(ended + settle, begun + every)
        if before is None or after is None:
            continue
        out.append({"storm_at_s": round(begun), "before_per_s": round(before), "after_per_s": round(after),
                    "recovered": after >= 0.8 * before})
    return out


def svg(rows, path, title):
    w, h, pad = 640, 240, 40
    t_max = max(r[0] for r in rows) or 1
    rss_max = max(r[1] for r in rows) * 1.2 or 1
    fd_max = max(max(r[2] for r in rows) * 1.2, 10)
    x = lambda t: pad + (w - 2 * pad) * t / t_max
    y_rss = lambda m: h - pad - (h - 2 * pad) * m / rss_max
    y_fd = lambda n: h - pad - (h - 2 * pad) * n / fd_max
    rss_pts = " ".join(f"{x(r[0]):.1f},{y_rss(r[1]):.1f}" for r in rows)
    fd_pts = " ".join(f"{x(r[0]):.1f},{y_fd(r[2]):.1f}" for r in rows)
    # Accepted answers per second, scaled to the plot's height (grey, no axis: its peak is named).
    acc = [(r[0], r[3]) for r in rows if r[3] is not None]
    acc_max = max((a for _, a in acc), default=0) or 1
    acc_pts = " ".join(f"{x(t):.1f},{h - pad - (h - 2 * pad) * a / acc_max:.1f}" for t, a in acc)
    Path(path).write_text(f"""<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{pad}" y="16">{title}</text>
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>
<line x1="{w - pad}" y1="{pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>
<text x="{pad - 4}" y="{pad}" text-anchor="end" fill="#1f5fbf">{rss_max:.0f}</text>
<text x="{pad - 4}" y="{h - pad}" text-anchor="end" fill="#1f5fbf">0</text>
<text x="{w - pad + 4}" y="{pad}" fill="#c0392b">{fd_max:.0f}</text>
<text x="{w - pad + 4}" y="{h - pad}" fill="#c0392b">0</text>
<text x="{w / 2}" y="{h - 8}" text-anchor="middle">seconds (0 to {t_max:.0f})</text>
<polyline fill="none" stroke="#bbbbbb" stroke-width="0.6" points="{acc_pts}"/>
<polyline fill="none" stroke="#1f5fbf" stroke-width="1.5" points="{rss_pts}"/>
<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{fd_pts}"/>
<text x="{pad + 8}" y="{pad + 12}" fill="#1f5fbf">target-roster RSS, MB (left axis)</text>
<text x="{pad + 8}" y="{pad + 26}" fill="#c0392b">open file descriptors (right axis)</text>
<text x="{pad + 8}" y="{pad + 40}" fill="#888888">upserts accepted per second (grey, peak {acc_max:.0f}/s)</text>
</svg>
""")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--error-rate", type=float, default=0.05)
    p.add_argument("--storm-every", type=float, default=20.0)
    p.add_argument("--storm-seconds", type=float, default=4.0)
    p.add_argument("--storm-rate", default="20/s")
    p.add_argument("--out", default=str(ROOT / "benches" / "out" / "soak"))
    p.add_argument("--svg", default=str(ROOT / "docs" / "reliability-soak.svg"))
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after which the run is stopped (SIGTERM) and judged on what its last STATE covers")
    p.add_argument("--bin-dir", default=None, help="where target-roster and roster-sandbox are (default: the release build)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    release = Path(args.bin_dir) if args.bin_dir else release_dir()
    for b in ("target-roster", "roster-sandbox"):
        if not (release / b).exists():
            raise SystemExit(f"{release / b} is missing: build the release binaries first")
    users = min(args.users, args.records)
    log(f"soak: generating {args.records:,} upserts of {users:,} users")
    total, revs = generate(out / "input.singer", args.records, users, 1000)
    with Sandbox(release / "roster-sandbox", "--users", 0, "--groups", 0, "--log-capacity", 1000,
                 "--seed", 7, "--error-rate", f"userflow={args.error_rate}") as sb:
        (out / "config.json").write_text(json.dumps({
            "vendor": "userflow", "base_url": f"{sb.base}/userflow", "api_key": USERFLOW_KEY,
            "max_retries": 50, "reject_file": str(out / "rejects.ndjson"),
            # Its own ledger, so a previous run's (the same records) cannot turn sends into skips.
            "ledger": str(out / "ledger.sqlite")}))
        for f in ("rejects.ndjson", "report.json", "ledger.sqlite"):
            (out / f).unlink(missing_ok=True)
        argv = [str(release / "target-roster"), "--config", str(out / "config.json"),
                "--input", str(out / "input.singer"), "--report", str(out / "report.json")]
        started = time.time()
        with open(out / "stdout", "w") as so, open(out / "stderr", "w") as se:
            proc = subprocess.Popen(argv, stdout=so, stderr=se, env=dict(os.environ, ROSTER_LOG="warn"))
        stop, rows, storm_count, storm_on, spans = threading.Event(), [], [0], [0], []
        threads = [threading.Thread(target=sample, args=(proc.pid, stop, rows, started, sb, storm_on)),
                   threading.Thread(target=storms, args=(sb, stop, args.storm_every, args.storm_seconds,
                                                         args.storm_rate, storm_count, storm_on, started,
                                                         spans))]
        for t in threads:
            t.start()
        cut = False
        try:
            code = proc.wait(timeout=args.deadline)
        except subprocess.TimeoutExpired:
            # Out of time: stop it as an orchestrator would, and judge what its last STATE covers.
            cut = True
            proc.terminate()
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        stop.set()
        for t in threads:
            t.join()
        wall = time.time() - started
        sb.admin("POST", "faults", {"rate_limit": {"userflow": None}})
        stats = sb.admin("GET", "stats")
        ids = [f"s{i:07d}" for i in range(0, users, max(users // 200, 1))]
        with urllib.request.urlopen(f"{sb.base}/_sandbox/users/userflow?ids={','.join(ids)}", timeout=120) as r:
            held = json.loads(r.read())
    problems = []
    lines = (out / "stdout").read_text().strip().splitlines()
    covered = json.loads(lines[-1])["offset"] if lines else 0
    if cut:
        # Every record up to the last STATE must be in: each sampled user at least at the
        # revision of its last record before that offset.
        log(f"soak: stopped after {args.deadline:.0f} s at offset {covered:,} of {total:,}")
    elif code != 0:
        problems.append(f"target-roster exited {code}: {(out / 'stderr').read_text()[-2000:]}")
    elif covered != total:
        problems.append(f"last STATE {lines[-1:]}, expected offset {total}")
    rejects = (out / "rejects.ndjson").read_text().splitlines() if (out / "rejects.ndjson").exists() else []
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    sent = report.get("totals", {}).get("sent")
    want_users = min(covered, users)
    if held["count"] < want_users:
        problems.append(f"the sandbox holds {held['count']} users, expected at least {want_users}")

    def want_rev(i):
        return (covered - 1 - i) // users + 1 if covered > i else 0

    stale = [k for k, u in held["users"].items()
             if want_rev(int(k[1:])) and (not u or u.get("attributes", {}).get("rev", 0) < want_rev(int(k[1:])))]
    if stale:
        problems.append(f"{len(stale)} sampled users behind the revision the last STATE covers: {stale[:5]}")
    lost = max(want_users - held["count"], 0) + len(stale) + len(rejects)
    uf = stats["vendors"].get("userflow", {})
    statuses = uf.get("statuses", {})
    n429 = statuses.get("429", 0)
    n5xx = sum(v for k, v in statuses.items() if k.startswith("5"))
    half = len(rows) // 2
    q = max(len(rows) // 4, 1)
    peak1 = max((r[1] for r in rows[:half]), default=0)
    peak2 = max((r[1] for r in rows[half:]), default=0)
    fd1 = max((r[2] for r in rows[:q]), default=0)
    fd4 = max((r[2] for r in rows[-q:]), default=0)
    flat = peak2 <= peak1 * RSS_TOLERANCE + 1
    fd_ok = fd4 <= fd1 + FD_SLACK
    with open(out / "soak.csv", "w") as f:
        f.write("seconds,rss_mb,open_fds,accepted,storm\n")
        for t, m, n, a, st in rows:
            f.write(f"{t},{m:.1f},{n},{'' if a is None else a},{st}\n")
    storms_judged = recovery(rows, spans, args.storm_every)
    svg(rows, args.svg, f"soak: {covered:,} of {total:,} upserts, {args.error_rate:.0%} 5xx, {storm_count[0]} 429 storms")
    figures = {"records": total, "covered": covered, "cut_short_after_s": args.deadline if cut else None,
               "users": users, "revisions": revs, "wall_s": round(wall, 1),
               "records_per_s": round(covered / wall), "exit": code, "sent": sent, "rejected": len(rejects),
               "lost": lost, "sampled_users": len(ids), "requests": uf.get("requests", 0),
               "status_429": n429, "status_5xx": n5xx, "storms": storm_count[0],
               "peak_rss_mb_first_half": round(peak1, 1), "peak_rss_mb_second_half": round(peak2, 1),
               "rss_flat": flat, "max_fds_first_quarter": fd1, "max_fds_last_quarter": fd4,
               "fds_flat": fd_ok, "samples": len(rows), "svg": os.path.relpath(args.svg, ROOT),
               "storms_recovered": sum(1 for x in storms_judged if x["recovered"]),
               "storms_judged": len(storms_judged), "storm_recovery": storms_judged,
               "problems": problems}
    (out / "soak.json").write_text(json.dumps(figures, indent=1))
    log(json.dumps(figures))
    if problems or not flat or not fd_ok:
        raise SystemExit("soak failed: " + "; ".join(problems + ([] if flat else ["RSS grew"]) +
                                                     ([] if fd_ok else ["open fds grew"])))


if __name__ == "__main__":
    main()
