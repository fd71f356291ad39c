#!/usr/bin/env python3
"""tap-roster vs kingalban-tap-userflow, side by side on the same sandbox data.

Reproduce (from the repository root):

    python3 benches/tap_userflow.py            # 100,000 users, 3 runs each
    python3 benches/tap_userflow.py --users 20000 --runs 1   # a quick look

What it does:
1. builds `tap-roster` and `roster-sandbox` in release mode;
2. creates `benches/.venv-kingalban` with `kingalban-tap-userflow==1.2.1` from PyPI (once,
   `common.venv`);
3. starts one `roster-sandbox` with `--users N --groups G` (seed 1): both taps read the
   same Userflow data over the same loopback;
4. runs each tap `--runs` times, alternating, stdout to a file, and takes wall time, CPU time
   and the child's own peak RSS (`wait4` rusage);
5. prints the medians and the ratios, and writes them to `benches/out/tap_userflow.json`.

kingalban-tap-userflow hard-codes `url_base = "https://api.userflow.com"` on
`tap_userflow.client.UserFlowStream`; a three-line wrapper sets it to the sandbox before calling
its CLI (`benches/peers/kingalban_at.py`). Its catalog selects `users` and `groups` only
(both read with `expand=memberships`), the same listings tap-roster reads. tap-roster emits memberships as records of their own
(kingalban nests them in each user), so the comparison is given both as RECORD lines per
second and as users per second, the same work for both.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import OUT, PEERS, Sandbox, log, measure  # noqa: E402

KEY = "sandbox-userflow-key"


def count(out_path):
    records = users = 0
    with open(out_path, "rb") as f:
        for line in f:
            if b'"type":"RECORD"' in line or b'"type": "RECORD"' in line:
                records += 1
                if b'"stream":"users"' in line or b'"stream": "users"' in line:
                    users += 1
    return records, users


def peer_catalog(python, wrapper, env, tmp):
    out = subprocess.run(
        [str(python), str(wrapper), "--config", str(tmp / "peer.json"), "--discover"],
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    catalog = json.loads(out)
    for stream in catalog["streams"]:
        chosen = stream["tap_stream_id"] in ("users", "groups")
        for meta in stream.get("metadata", []):
            meta["metadata"]["selected"] = chosen
    path = tmp / "peer-catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def bench(release, users, groups, runs):
    """Both taps `runs` times, alternating, on one sandbox of `users` users; returns the
    summary (per tap: runs, medians, records/s, users/s) and the ratios."""
    python = common.venv("kingalban")
    wrapper = PEERS / "kingalban_at.py"
    tap = release / "tap-roster"
    tmp = Path(tempfile.mkdtemp(prefix="roster-bench-"))
    log(f"== roster-sandbox: {users} users, {groups} groups")
    try:
        with Sandbox(release / "roster-sandbox", "--users", users, "--groups", groups, "--seed", 1) as sandbox:
            base = sandbox.base
            (tmp / "roster.json").write_text(json.dumps({"vendor": "userflow", "base_url": f"{base}/userflow", "api_key": KEY}))
            (tmp / "peer.json").write_text(json.dumps({"auth_token": KEY}))
            env = dict(os.environ, ROSTER_BENCH_USERFLOW_URL=f"{base}/userflow")
            env.pop("RUST_LOG", None)
            env.pop("ROSTER_LOG", None)
            catalog = peer_catalog(python, wrapper, env, tmp)
            commands = {
                "tap-roster": [str(tap), "--config", str(tmp / "roster.json")],
                "kingalban-tap-userflow": [str(python), str(wrapper), "--config", str(tmp / "peer.json"), "--catalog", str(catalog)],
            }
            results = {name: [] for name in commands}
            for run in range(runs):
                for name, argv in commands.items():
                    out = tmp / f"{name}-{run}.jsonl"
                    result = common.check(measure(argv, out, env=env), argv, out)
                    records, users_seen = count(out)
                    if users_seen != users:
                        raise SystemExit(f"{name} emitted {users_seen} users, expected {users}")
                    result.update(records=records, users=users_seen, load=common.load())
                    results[name].append(result)
                    log(f"   run {run + 1} {name}: {result['wall_s']:.2f} s, {records} records, "
                        f"{result['cpu_s']:.1f} CPU s, {result['peak_rss_mb']:.1f} MB")
                    out.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    for name, rs in results.items():
        wall = common.median(r["wall_s"] for r in rs)
        summary[name] = {
            "runs": rs,
            "median_wall_s": wall,
            "median_cpu_s": common.median(r["cpu_s"] for r in rs),
            "records": rs[0]["records"],
            "records_per_s": rs[0]["records"] / wall,
            "users_per_s": users / wall,
            "median_peak_rss_mb": common.median(r["peak_rss_mb"] for r in rs),
        }
    ours, peer = summary["tap-roster"], summary["kingalban-tap-userflow"]
    ratios = {
        "records_per_s": ours["records_per_s"] / peer["records_per_s"],
        "users_per_s": ours["users_per_s"] / peer["users_per_s"],
        "peak_rss": ours["median_peak_rss_mb"] / peer["median_peak_rss_mb"],
    }
    return summary, ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    release = common.build(("tap-roster", "roster-sandbox"))
    summary, ratios = bench(release, args.users, args.groups, args.runs)
    print(f"Userflow, {args.users:,} users with memberships, {args.groups} groups; median of {args.runs} runs, {os.cpu_count()} cores")
    print()
    print("| tap | RECORD lines | wall s | records/s | users/s | CPU s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in summary.items():
        print(f"| {name} | {s['records']:,} | {s['median_wall_s']:.2f} | {s['records_per_s']:,.0f} | {s['users_per_s']:,.0f} | {s['median_cpu_s']:.1f} | {s['median_peak_rss_mb']:.1f} |")
    print()
    print(f"tap-roster / kingalban: {ratios['records_per_s']:.1f}x records/s, {ratios['users_per_s']:.1f}x users/s, "
          f"{ratios['peak_rss']:.2f}x peak RSS (goal: >= 20x, < 0.20x)")
    OUT.mkdir(exist_ok=True)
    (OUT / "tap_userflow.json").write_text(json.dumps({"args": vars(args), "summary": summary, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
