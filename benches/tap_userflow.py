#!/usr/bin/env python3
"""tap-roster vs kingalban-tap-userflow, side by side on the same sandbox data.

Reproduce (from the repository root):

    python3 benches/tap_userflow.py            # 100,000 users, 3 runs each
    python3 benches/tap_userflow.py --users 20000 --runs 1   # a quick look

What it does:
1. builds `tap-roster` and `roster-sandbox` in release mode;
2. creates `benches/.venv-kingalban` with `kingalban-tap-userflow==1.2.1` from PyPI (once);
3. starts one `roster-sandbox` with `--users N --groups G` (seed 1): both taps read the
   same Userflow data over the same loopback;
4. runs each tap `--runs` times, alternating, stdout to a file, and takes wall time and the
   child's own peak RSS (`wait4` rusage);
5. prints the medians and the ratios, and writes them to `benches/out/tap_userflow.json`.

kingalban-tap-userflow hard-codes `url_base = "https://api.userflow.com"` on
`tap_userflow.client.UserFlowStream`; a three-line wrapper sets it to the sandbox before calling
its CLI. Its catalog selects `users` and `groups` only (both read with `expand=memberships`),
the same listings tap-roster reads. tap-roster emits memberships as records of their own
(kingalban nests them in each user), so the comparison is given both as RECORD lines per
second and as users per second, the same work for both.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benches"
VENV = BENCH / ".venv-kingalban"
PEER = "kingalban-tap-userflow==1.2.1"
KEY = "sandbox-userflow-key"

WRAPPER = """\
import os
import tap_userflow.client
tap_userflow.client.UserFlowStream.url_base = os.environ["ROSTER_BENCH_USERFLOW_URL"]
from tap_userflow.tap import TapUserFlow
TapUserFlow.cli()
"""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def build():
    log("== cargo build --release (tap-roster, roster-sandbox)")
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--bin", "tap-roster", "--bin", "roster-sandbox"],
        cwd=ROOT,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    return target / "tap-roster", target / "roster-sandbox"


def venv():
    python = VENV / "bin" / "python"
    ready = VENV / ".ready"
    if not ready.exists():
        log(f"== creating {VENV} with {PEER}")
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER], check=True)
        ready.write_text(PEER + "\n")
    wrapper = VENV / "tap_userflow_at.py"
    wrapper.write_text(WRAPPER)
    return python, wrapper


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(binary, users, groups):
    port = free_port()
    log(f"== roster-sandbox on port {port}: {users} users, {groups} groups")
    proc = subprocess.Popen(
        [str(binary), "--port", str(port), "--users", str(users), "--groups", str(groups), "--seed", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            req = urllib.request.Request(f"{base}/userflow/users?limit=1", headers={"Authorization": f"Bearer {KEY}"})
            urllib.request.urlopen(req, timeout=2).read()
            return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the sandbox did not come up")


def measure(argv, env, out_path):
    """Runs argv with stdout to out_path; returns (wall seconds, peak RSS in MB, exit code)."""
    with open(out_path, "wb") as out, open(str(out_path) + ".err", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux.
    return wall, usage.ru_maxrss / 1024.0, proc.returncode


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    tap, sandbox_bin = build()
    python, wrapper = venv()
    sandbox, base = start_sandbox(sandbox_bin, args.users, args.groups)
    tmp = Path(tempfile.mkdtemp(prefix="roster-bench-"))
    try:
        (tmp / "roster.json").write_text(json.dumps({"vendor": "userflow", "base_url": f"{base}/userflow", "api_key": KEY}))
        (tmp / "peer.json").write_text(json.dumps({"auth_token": KEY}))
        env = dict(os.environ, ROSTER_BENCH_USERFLOW_URL=f"{base}/userflow")
        env.pop("RUST_LOG", None)
        catalog = peer_catalog(python, wrapper, env, tmp)
        commands = {
            "tap-roster": [str(tap), "--config", str(tmp / "roster.json")],
            "kingalban-tap-userflow": [str(python), str(wrapper), "--config", str(tmp / "peer.json"), "--catalog", str(catalog)],
        }
        results = {name: [] for name in commands}
        for run in range(args.runs):
            for name, argv in commands.items():
                out = tmp / f"{name}-{run}.jsonl"
                wall, rss, code = measure(argv, env, out)
                if code != 0:
                    log((tmp / f"{name}-{run}.jsonl.err").read_text()[-2000:])
                    raise SystemExit(f"{name} exited {code}")
                records, users = count(out)
                if users != args.users:
                    raise SystemExit(f"{name} emitted {users} users, expected {args.users}")
                results[name].append({"wall_s": wall, "peak_rss_mb": rss, "records": records, "users": users})
                log(f"   run {run + 1} {name}: {wall:.2f} s, {records} records, {rss:.1f} MB")
                out.unlink()
    finally:
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    for name, runs in results.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        summary[name] = {
            "runs": runs,
            "median_wall_s": wall,
            "records": runs[0]["records"],
            "records_per_s": runs[0]["records"] / wall,
            "users_per_s": args.users / wall,
            "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        }
    ours, peer = summary["tap-roster"], summary["kingalban-tap-userflow"]
    ratios = {
        "records_per_s": ours["records_per_s"] / peer["records_per_s"],
        "users_per_s": ours["users_per_s"] / peer["users_per_s"],
        "peak_rss": ours["median_peak_rss_mb"] / peer["median_peak_rss_mb"],
    }
    print(f"Userflow, {args.users:,} users with memberships, {args.groups} groups; median of {args.runs} runs, {os.cpu_count()} cores")
    print()
    print("| tap | RECORD lines | wall s | records/s | users/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, s in summary.items():
        print(f"| {name} | {s['records']:,} | {s['median_wall_s']:.2f} | {s['records_per_s']:,.0f} | {s['users_per_s']:,.0f} | {s['median_peak_rss_mb']:.1f} |")
    print()
    print(f"tap-roster / kingalban: {ratios['records_per_s']:.1f}x records/s, {ratios['users_per_s']:.1f}x users/s, "
          f"{ratios['peak_rss']:.2f}x peak RSS (goal: >= 20x, < 0.20x)")
    out_dir = BENCH / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "tap_userflow.json").write_text(json.dumps({"args": vars(args), "summary": summary, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
