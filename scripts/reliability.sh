#!/usr/bin/env bash
# Produces RELIABILITY.md: kill -9 trials (the target against every writable vendor and mode,
# the tap against every listable vendor) at full size, the fault-storm matrix, and a soak run
# (a million real upserts under 5% faults and 429 storms, RSS and open fds sampled every
# second), with release binaries and fixed seeds. Rerunning it reproduces the tables (see
# RELIABILITY.md for which columns are exact and which depend on where a kill lands).
#
#   scripts/reliability.sh            # 10,000 users, 20 trials per vendor, seed 7, 1,000,000-record soak
#   USERS=2000 TRIALS=20 SEED=7 SOAK_RECORDS=200000 scripts/reliability.sh
#   THREADS=3 scripts/reliability.sh  # trials of different vendors side by side
#   REPORT_ONLY=1 scripts/reliability.sh   # rewrite RELIABILITY.md from the last run's figures
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-10000}
TRIALS=${TRIALS:-20}
SEED=${SEED:-7}
SOAK_RECORDS=${SOAK_RECORDS:-1000000}
SOAK_USERS=${SOAK_USERS:-100000}
THREADS=${THREADS:-1}
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
  cargo test --release --test integration -- --test-threads="$THREADS" crash:: faults:: ::fault_matrix 2>&1 \
    | tee "$OUT/test.log" | grep -E '^test |test result'
  # The soak: release target-roster and roster-sandbox, built by the test run above. SOAK=0
  # keeps the figures of a soak run made separately (scripts/soak.py --out "$OUT/soak").
  if [[ ${SOAK:-1} != 0 ]]; then
    python3 scripts/soak.py --records "$SOAK_RECORDS" --users "$SOAK_USERS" --out "$OUT/soak" \
      --svg docs/reliability-soak.svg 2>&1 | tee "$OUT/soak.log" | tail -3
  fi
  elapsed=$(( $(date +%s) - started ))
  echo "$elapsed" > "$OUT/elapsed"
fi

python3 - "$figures" "$USERS" "$TRIALS" "$SEED" "$elapsed" "$OUT/soak/soak.json" "${NOTE:-}" > RELIABILITY.md <<'PY'
import json, os, sys
from collections import defaultdict

path, users, trials, seed, elapsed, soak_path, note = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
crash = [r for r in rows if "trial" in r]
matrix = [r for r in rows if "fault" in r]

print(f"""# Reliability
{chr(10) + "**Note on this run:** " + note + chr(10) if note else ""}
Produced by `scripts/reliability.sh` (release build, seed {seed}, {users} users, {trials} trials
per target vendor and mode and {trials} tap trials taking the listable vendors in turn; this run
took {elapsed} s including the build), except the fuzzing section,
which is copied from a hand-written file (see there). Rerun it to reproduce the figures; the
tests behind it are `tests/integration/crash.rs` and `tests/integration/faults/`, which also
run in `cargo test` at a smaller size (300 users; 20 trials for Userflow and 3 for each other
vendor; the matrix at its own size), and `scripts/soak.py` for the soak.

## kill -9 at seeded random points

Each trial starts a fresh sandbox that answers a seeded 5% of requests with 500 or 503, starts
the binary, and kills it with SIGKILL once the sandbox has counted a seeded random number of
requests ("kill at"). The rerun starts from the last STATE printed before the kill:
- **target**: target-roster writes every user once, then every fifth user again with its final
  name, to every vendor it can write (UserGuiding, Userflow, Userpilot and Appcues in real time
  and in bulk mode, Guru, Guru SCIM, SCIM); after the rerun the vendor must hold every user
  exactly once (counted, not merged by key) with its final name (Guru keeps no name: presence
  only). *Duplicates* are the records the rerun sent although the vendor already held them from
  the killed run (a second revision only when the vendor already had that revision).
- **tap**: tap-roster reads users, groups and memberships from Userflow, Guru, Guru SCIM and SCIM
  in turn; the killed run and the resumed run together must hold everything the sandbox holds.
  *Duplicates* are records both runs emitted.

| side | vendor | trials | records per trial | faults injected | records lost | duplicates (total) | duplicates per trial (min–max) |
|---|---|---:|---:|---:|---:|---:|---|""")
if not crash:
    print("| – | (no trials in this run's figures) | | | | | | |")
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
run to run.

Why the duplicates, vendor by vendor. The target prints a STATE at most once a second
(`STATE_MIN_INTERVAL`: Meltano stores every STATE line it sees) and only once every record
before it is answered, so a resume re-sends what the killed run delivered after its last
printed STATE: about one second of writes plus those in flight. The trials turn pacing off
(`requests_per_second: 0`) and zero the retry delays against a loopback sandbox, so one second
is thousands of records here. Against the real vendors, paced at their documented limits, one
second is:
- **UserGuiding**: 5 requests (50 per 10 s), so at most ~5 records plus those in flight;
- **Userflow**: no documented limit; as many as the adaptive limiter lets through in a second;
- **Userpilot** (real time): 10 identify requests (600/min);
- **Appcues** (real time): 60 profile updates (60/s);
- **Guru**: invites go in batches (one request for many emails), so a kill between a batch's
  answer and the next STATE repeats the batch; a repeated invite answers "already a part of the
  team" and changes nothing;
- **Guru SCIM, SCIM**: a re-sent user is looked up first, found unchanged and skipped, so the
  "duplicate" is a lookup, not a write;
- **bulk modes** (Appcues, Userpilot): the unit is a job of up to 10,000 rows; a kill after a job
  was submitted but before the STATE covering it re-sends that job's rows (Userpilot processes
  ~1,200 rows a minute, one job at a time).

Upserts make every re-send harmless to the end state (the checks above: every user once, at its
final revision). The tap's duplicates are the pages re-read after the last bookmark (Guru's
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

The LostAnswers column uses the sandbox's `apply_then_fail` fault: the vendor applies the write,
then the answer is a 500/503 or a dropped connection. It is the case where a blind retry
duplicates a create; each cell counts what the vendor holds (a second SCIM group or user of the
same key, or a second Guru group of the same name, fails the cell).
""")
print("""
## Soak

Real upserts (the table gives how many: each user upserted once per revision, the last revision
must win) through a release target-roster into a release roster-sandbox's Userflow that answers a seeded 5% of requests with 500 or 503 and, every
20 s, throttles Userflow to 20 requests a second for 4 s (a 429 storm, no `Retry-After`, as
Userflow documents none). `scripts/soak.py` samples target-roster's RSS and open file
descriptors from `/proc` every second, then asks the sandbox what it holds (the user count and
200 sampled users at their last revision), and checks the exit code, the last STATE, the reject
file and the `--report` totals. *Flat RSS*: the peak of the second half of the run within 1.1x
(+1 MB) of the first half's; *no fd growth*: the most fds open in the last quarter at most the
first quarter's plus two.
""")
if os.path.exists(soak_path):
    k = json.load(open(soak_path))
    print("| records (covered of planned) | users | wall s | records/s | requests | 5xx | 429 | storms | records lost | rejected | peak RSS MB, 1st half / 2nd half | RSS flat | max fds, 1st / last quarter | fds flat |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
    print(f"| {k.get('covered', k['records']):,} of {k['records']:,} | {k['users']:,} | {k['wall_s']} | {k['records_per_s']:,} | {k['requests']:,} | "
          f"{k['status_5xx']:,} | {k['status_429']:,} | {k['storms']} | {k['lost']} | {k['rejected']} | "
          f"{k['peak_rss_mb_first_half']} / {k['peak_rss_mb_second_half']} | {'yes' if k['rss_flat'] else '**no**'} | "
          f"{k['max_fds_first_quarter']} / {k['max_fds_last_quarter']} | {'yes' if k['fds_flat'] else '**no**'} |")
    if k.get("cut_short_after_s"):
        print()
        print(f"The run was stopped (SIGTERM) after {k['cut_short_after_s']:.0f} s, at the STATE covering "
              f"{k['covered']:,} of {k['records']:,} records (exit {k['exit']}); records lost counts what "
              "that STATE covers: the users missing or behind the revision it covers, and the rejects.")
    if k.get("storms_judged"):
        rec = k["storm_recovery"]
        slow = [x for x in rec if not x["recovered"]]
        print()
        print(f"Recovery after the storms: the sandbox's accepted upserts per second from 8 s after a storm "
              f"ended to the next one, against the 10 s before it: back to at least 80% after "
              f"{k['storms_recovered']} of {k['storms_judged']} storms (median before "
              f"{sorted(x['before_per_s'] for x in rec)[len(rec) // 2]}/s, after "
              f"{sorted(x['after_per_s'] for x in rec)[len(rec) // 2]}/s)"
              + (": not after the storms at " + ", ".join(f"{x['storm_at_s']} s ({x['before_per_s']}/s before, "
                                                       f"{x['after_per_s']}/s after)" for x in slow[:8])
                 + (" and more" if len(slow) > 8 else "") if slow else "") + ".")
    print()
    print(f"![target-roster RSS and open fds over the soak]({k['svg']})")
    if k["problems"]:
        print()
        print("Problems: " + "; ".join(k["problems"]))
else:
    print("(No soak figures in this run.)")
print()

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
