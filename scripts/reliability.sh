#!/usr/bin/env bash
# Produces RELIABILITY.md: kill -9 trials (target and tap) at full size and the fault-storm
# matrix, with release binaries and fixed seeds. Rerunning it reproduces the table (see
# RELIABILITY.md for which columns are exact and which depend on where a kill lands).
#
#   scripts/reliability.sh            # 10,000 users, 20 trials per side, seed 7
#   USERS=2000 TRIALS=20 SEED=7 scripts/reliability.sh
#   REPORT_ONLY=1 scripts/reliability.sh   # rewrite RELIABILITY.md from the last run's figures
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-10000}
TRIALS=${TRIALS:-20}
SEED=${SEED:-7}
OUT=${OUT:-benches/out/reliability}
mkdir -p "$OUT"
figures="$OUT/trials.jsonl"

export ROSTER_CRASH_USERS=$USERS ROSTER_CRASH_TRIALS=$TRIALS ROSTER_CRASH_SEED=$SEED
export ROSTER_RELIABILITY_OUT=$PWD/$figures ROSTER_FULL_MATRIX=1

if [[ ${REPORT_ONLY:-} == 1 ]]; then
  # Rewrite RELIABILITY.md from the figures of the last run, without running the tests.
  elapsed=$(cat "$OUT/elapsed")
else
  : > "$figures"
  started=$(date +%s)
  # One test binary, built in release with release binaries of tap-roster and target-roster.
  cargo test --release --test integration -- --test-threads=1 crash:: faults:: 2>&1 \
    | tee "$OUT/test.log" | grep -E '^test |test result'
  elapsed=$(( $(date +%s) - started ))
  echo "$elapsed" > "$OUT/elapsed"
fi

python3 - "$figures" "$USERS" "$TRIALS" "$SEED" "$elapsed" > RELIABILITY.md <<'PY'
import json, sys
from collections import defaultdict

path, users, trials, seed, elapsed = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
crash = [r for r in rows if "trial" in r]
matrix = [r for r in rows if "fault" in r]

print(f"""# Reliability

Produced by `scripts/reliability.sh` (release build, seed {seed}, {users} users, {trials} trials
per side; this run took {elapsed} s including the build), except the fuzzing section, which is
copied from a hand-written file (see there). Rerun it to reproduce the figures; the
tests behind it are `tests/integration/crash.rs` and `tests/integration/faults.rs`, which also
run in `cargo test` at a smaller size (300 users, 20 trials; the matrix at its own size).

## kill -9 at seeded random points

Each trial starts a fresh sandbox that answers a seeded 5% of requests with 500 or 503, starts
the binary, and kills it with SIGKILL once the sandbox has counted a seeded random number of
requests ("kill at"). The rerun starts from the last STATE printed before the kill:
- **target**: target-roster writes every user to Userflow once, then every fifth user again with
  its final attributes; after the rerun every user must be in the sandbox with its final
  attributes. *Duplicates* are the writes the sandbox accepted beyond one per input record.
- **tap**: tap-roster reads users, groups and memberships from Userflow, Guru, Guru SCIM and SCIM
  in turn; the killed run and the resumed run together must hold everything the sandbox holds.
  *Duplicates* are records both runs emitted.

| side | vendor | trials | records per trial | faults injected | records lost | duplicates (total) | duplicates per trial (min–max) |
|---|---|---:|---:|---:|---:|---:|---|""")
groups = defaultdict(list)
for r in crash:
    groups[(r["side"], r["vendor"])].append(r)
for (side, vendor), rs in sorted(groups.items()):
    d = [r["duplicates"] for r in rs]
    recs = sorted({r["records"] for r in rs})
    recs = str(recs[0]) if len(recs) == 1 else f"{recs[0]}–{recs[-1]}"
    print(f"| {side} | {vendor} | {len(rs)} | {recs} | {sum(r['faults'] for r in rs)} | "
          f"{sum(r['lost'] for r in rs)} | {sum(d)} | {min(d)}–{max(d)} |")
print()
print("Per trial:")
print()
print("| side | trial | vendor | kill at request | resumed from | faults | lost | duplicates |")
print("|---|---:|---|---:|---|---:|---:|---:|")
for r in sorted(crash, key=lambda r: (r["side"], r["trial"])):
    resumed = r.get("resumed_from")
    if resumed is None:
        resumed = "its last STATE" if r.get("resumed") else "the start (no STATE yet)"
    print(f"| {r['side']} | {r['trial']} | {r['vendor']} | {r['kill_at_request']} | {resumed} | "
          f"{r['faults']} | {r['lost']} | {r['duplicates']} |")
print("""
Which figures a rerun reproduces exactly: the trials, the records, the kill points, and records
lost (always 0: the tests fail otherwise). Duplicates and faults injected depend on where in
flight the kill lands and on how many requests the killed run made, so they vary a little from
run to run. The target prints a STATE at most once a second (`STATE_MIN_INTERVAL`: Meltano
stores every STATE line it sees), so the records sent twice after a kill are at most about one
second of writes plus those in flight. Here that is up to ~10,000, because the trials write to a
loopback sandbox with retry delays zeroed (thousands of upserts a second); against a vendor
paced at its documented limit it is that limit's worth (Userpilot: 10, Appcues: 60). That is the
price of resuming from the last STATE, and the vendor ends the same either way (upserts). The tap's duplicates are the pages re-read after the last bookmark (Guru's
per-group member listings restart their group).

## Fault storms

Every vendor the target writes and every vendor the tap reads, under each fault class (a
token bucket answering 429 with and without `Retry-After`, three 500s, three 503s, a seeded mix
of 500/503, 150 ms latency, 15% dropped connections, UserGuiding's 50-per-10-s block shortened
to 2 s, and a vendor that is down). Checked per cell: what the vendor holds equals the input
(target) or the tap's output equals what the vendor holds; the `--report` counters equal the
sandbox's; every failure was retried within the budget (8); exit code, summary and last STATE.
"Faults" counts the failed answers (429, 5xx, dropped) the sandbox gave.

| side | vendor | fault | records | faults | retries | records lost | exit |
|---|---|---|---:|---:|---:|---:|---:|""")
for r in sorted(matrix, key=lambda r: (r["side"], r["vendor"])):
    print(f"| {r['side']} | {r['vendor']} | {r['fault']} | {r['records']} | {r['faults']} | "
          f"{r.get('retries', '–')} | {r['lost']} | {r['exit']} |")
lost = sum(r["lost"] for r in rows)
print("""
Found by these tests and fixed (each cell or trial above now checks it):
- a SCIM or Guru SCIM service answering 5xx to every request ended with every record rejected
  and exit 0; failed lookups now count towards the 20-in-a-row "unreachable" rule (exit 1), and
  the matrix runs those cells;
- a resumed tap re-read the listings the interrupted run had finished (all of Guru's users and
  groups again when the kill landed in the per-group member listings); a state now carries
  `sync_started_at` while its run is under way, and what finished after it is not read again;
- Guru invites and group creates that failed unconfirmed twice were rejected (the Mixed5xx cell
  failed about one run in six); invites are now retried like upserts (a repeat answers "already
  a part of the team") and a group create is sent again after a listing shows it missing.
""")
import os
if os.path.exists("fuzz/results.md"):
    # fuzz/results.md is written by hand after fuzzing runs; this script does not run the
    # fuzzers, so the section says where it comes from instead of passing as this run's output.
    text = open("fuzz/results.md").read().splitlines()
    if text and text[0].startswith("## "):
        text = text[1:]
    print("## Fuzzing (copied from fuzz/results.md: not produced by this script)")
    print()
    print("This script does not run the fuzzers. What follows is `fuzz/results.md`, written by hand")
    print("after the fuzzing runs it describes (their dates are in the text).")
    print("\n".join(text))
print(f"""
Totals: {len(crash)} kill -9 trials, {len(matrix)} fault cells, {sum(r['faults'] for r in rows)}
faults injected, **{lost} records lost**.
""")
PY
echo "wrote RELIABILITY.md ($elapsed s)"
