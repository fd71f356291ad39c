#!/usr/bin/env bash
# Bulk mode end to end: USERS users (default 1,000,000) through target-roster `mode: bulk` to
# Appcues (NDJSON imports) and Userpilot (bulk identify) on a release roster-sandbox, RUNS runs
# each (default 3). Prints a Markdown table of medians: wall time, records/s, MB spooled and MB/s
# spooled (upload bytes written to spool files / wall time), target-roster's CPU time (user +
# system: the figure to trust on a machine shared with other work, where wall time mostly
# measures waiting for a core) and records per CPU second, its peak RSS, and the peak RSS of a
# run with a tenth of the users, to show memory stays flat as the input grows (flat: the full
# run's peak within FLAT_TOLERANCE, default 1.5x, of the small run's). After every run the
# sandbox itself is asked what it holds (GET /_sandbox/users/VENDOR): the user count and three
# sampled users with their email and plan, rather than trusting the target's final STATE.
#
#   benches/bulk.sh                     # 1,000,000 users, 3 runs per vendor
#   USERS=200000 RUNS=1 benches/bulk.sh # a quick look
#   VENDORS=userpilot benches/bulk.sh    # one vendor
#
# The last lines are machine-readable, one per vendor (benches/run.sh reads them):
#   RESULT appcues_bulk records_per_s=… mb_per_s=… peak_rss_mb=… vendor=… users=… wall_s=… cpu_s=… mb_spooled=… jobs=… peak_rss_small_mb=…
#
# Needs: cargo, python3 (to generate the input), /usr/bin/time (GNU, for peak RSS), curl.
# The sandbox processes jobs as fast as it can (--job-rows-per-sec 100000000), so the figures
# measure roster, not the emulator; the real Userpilot processes ~1,200 rows/min, which makes a
# million users about 14 hours of job time whatever the client does.
set -euo pipefail

USERS=${USERS:-1000000}
RUNS=${RUNS:-3}
VENDORS=${VENDORS:-appcues userpilot}
STATE_EVERY=${STATE_EVERY:-10000}
# "Memory flat": the full run's peak RSS is at most this multiple of the peak at a tenth of the
# users (ten times the input may cost half as much memory again, not ten times more).
FLAT_TOLERANCE=${FLAT_TOLERANCE:-1.5}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/roster-bulk-bench.XXXXXX")
sandbox_pid=
cleanup() {
    if [[ -n $sandbox_pid ]]; then kill "$sandbox_pid" 2>/dev/null || true; wait "$sandbox_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

for tool in python3 curl /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bulk bench: $tool is required" >&2; exit 2; }
done

echo "building release binaries…" >&2
(cd "$root" && cargo build --release --quiet --bin target-roster --bin roster-sandbox)
bin="$root/target/release"

generate() { # generate N FILE: N users as a Singer stream, a STATE every STATE_EVERY records
    python3 - "$1" "$2" "$STATE_EVERY" <<'EOF'
import json, sys
n, path, every = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
plans = ["free", "starter", "pro", "enterprise"]
with open(path, "w") as f:
    f.write(json.dumps({"type": "SCHEMA", "stream": "users", "key_properties": ["id"], "schema": {
        "type": "object", "properties": {
            "id": {"type": "string"}, "email": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]}, "created_at": {"type": ["string", "null"], "format": "date-time"},
            "plan": {"type": ["string", "null"]}, "seats": {"type": ["integer", "null"]},
            "active": {"type": ["boolean", "null"]}, "country": {"type": ["string", "null"]}}}}) + "\n")
    for i in range(n):
        f.write(json.dumps({"type": "RECORD", "stream": "users", "record": {
            "id": f"user-{i:07d}", "email": f"user{i}@example.com", "name": f"User Number {i}",
            "created_at": f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T10:{i % 60:02d}:00Z",
            "plan": plans[i % 4], "seats": i % 250, "active": i % 7 != 0, "country": "DE"}}) + "\n")
        if (i + 1) % every == 0 or i + 1 == n:
            f.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"users": {"next_page": i + 1}}}}) + "\n")
EOF
}

echo "generating $USERS users…" >&2
generate "$USERS" "$work/users.jsonl"
small=$((USERS / 10))
generate "$small" "$work/small.jsonl"
input_mb=$(python3 -c "import os;print(f'{os.path.getsize(\"$work/users.jsonl\")/1e6:.0f}')")

"$bin/roster-sandbox" --port 0 --users 0 --groups 0 --log-capacity 1000 \
    --job-rows-per-sec 100000000 --job-step-ms 2 >"$work/sandbox.out" 2>"$work/sandbox.err" &
sandbox_pid=$!
for _ in $(seq 100); do grep -q listening "$work/sandbox.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$work/sandbox.out" || { echo "roster-sandbox did not start" >&2; cat "$work/sandbox.err" >&2; exit 1; }
# --port 0: the sandbox picks a free port and prints it in its banner.
origin=$(sed -nE 's/^roster-sandbox listening on (http:[^ ]+).*/\1/p' "$work/sandbox.out" | head -1)
[[ -n $origin ]] || { echo "cannot read the sandbox's address" >&2; cat "$work/sandbox.out" >&2; exit 1; }

config() { # config VENDOR
    case $1 in
        appcues) echo "{\"vendor\":\"appcues\",\"mode\":\"bulk\",\"base_url\":\"$origin/appcues\",\"account_id\":\"10001\",\"api_key\":\"sandbox-appcues-key\",\"api_secret\":\"sandbox-appcues-secret\",\"reject_file\":\"$work/rejects.ndjson\",\"ledger\":\"$work/ledger.sqlite\"}" ;;
        userpilot) echo "{\"vendor\":\"userpilot\",\"mode\":\"bulk\",\"base_url\":\"$origin/userpilot\",\"api_key\":\"sandbox-userpilot-key\",\"reject_file\":\"$work/rejects.ndjson\",\"ledger\":\"$work/ledger.sqlite\"}" ;;
    esac
}

run() { # run VENDOR INPUT EXPECTED_ROWS: prints "seconds peak_kb user_s sys_s bytes jobs"
    local vendor=$1 input=$2 rows=$3
    curl -fsS -X POST "$origin/_sandbox/reset" >/dev/null
    # A fresh ledger each run: every run is a first sync (with the default ledger the second
    # run would find every user unchanged and send nothing).
    rm -f "$work"/ledger.sqlite*
    config "$vendor" >"$work/config.json"
    /usr/bin/time -f '%e %M %U %S' -o "$work/time.txt" \
        env ROSTER_LOG=info "$bin/target-roster" --config "$work/config.json" --input "$input" \
        >"$work/state.out" 2>"$work/target.err" || { echo "target-roster failed ($vendor):" >&2; tail -5 "$work/target.err" >&2; exit 1; }
    local last; last=$(tail -1 "$work/state.out")
    [[ $last == *"\"next_page\":$rows}"* ]] || { echo "$vendor: the final state is $last, expected next_page $rows" >&2; exit 1; }
    [[ ! -s $work/rejects.ndjson ]] || { echo "$vendor: records were rejected" >&2; exit 1; }
    local line; line=$(grep 'every job ended' "$work/target.err" | tail -1)
    local spooled; spooled=$(sed -E 's/.* rows=([0-9]+).*/\1/' <<<"$line")
    [[ $spooled == "$rows" ]] || { echo "$vendor: $spooled rows spooled, expected $rows" >&2; exit 1; }
    check_held "$vendor" "$rows"
    echo "$(cat "$work/time.txt") $(sed -E 's/.* bytes=([0-9]+).*/\1/' <<<"$line") $(sed -E 's/.* jobs=([0-9]+).*/\1/' <<<"$line")"
}

check_held() { # check_held VENDOR ROWS: what the sandbox holds, not what the target says
    local vendor=$1 rows=$2
    local ids="user-0000000,user-$(printf '%07d' $((rows / 2))),user-$(printf '%07d' $((rows - 1)))"
    curl -fsS "$origin/_sandbox/users/$vendor?ids=$ids" >"$work/held.json"
    python3 - "$work/held.json" "$rows" "$vendor" <<'EOF' >&2 || exit 1
import json, sys
held, rows, vendor = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
plans = ["free", "starter", "pro", "enterprise"]
if held["count"] != rows:
    sys.exit(f"{vendor}: the sandbox holds {held['count']} users, expected {rows}")
for key, user in held["users"].items():
    i = int(key.split("-")[1])
    text = json.dumps(user)
    for want in (f'"user{i}@example.com"', f'"{plans[i % 4]}"'):
        if want not in text:
            sys.exit(f"{vendor}: the sandbox's {key} lacks {want}: {text}")
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo
echo "target-roster mode: bulk, $USERS users ($input_mb MB of Singer input), $RUNS run(s) per vendor, medians; $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg) at the start"
echo
echo "| vendor | wall s | records/s | jobs | MB spooled | MB/s spooled | CPU s | records/CPU s | peak RSS MB | peak RSS MB at $small users | memory flat (peak within ${FLAT_TOLERANCE}x of the small run's) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
results=()
for vendor in $VENDORS; do
    : >"$work/runs.txt"
    for _ in $(seq "$RUNS"); do
        run "$vendor" "$work/users.jsonl" "$USERS" >>"$work/runs.txt"
        echo "  $vendor run: $(tail -1 "$work/runs.txt") (seconds peak_kb user_s sys_s bytes jobs)" >&2
    done
    secs=$(awk '{print $1}' "$work/runs.txt" | median)
    rss=$(awk '{print $2}' "$work/runs.txt" | median)
    cpu=$(awk '{print $3 + $4}' "$work/runs.txt" | median)
    bytes=$(awk '{print $5}' "$work/runs.txt" | median)
    jobs=$(awk '{print $6}' "$work/runs.txt" | median)
    small_rss=$(run "$vendor" "$work/small.jsonl" "$small" | awk '{print $2}')
    awk -v v="$vendor" -v s="$secs" -v r="$rss" -v c="$cpu" -v b="$bytes" -v j="$jobs" -v n="$USERS" -v sr="$small_rss" -v t="$FLAT_TOLERANCE" 'BEGIN {
        flat = (r <= t * sr) ? "yes" : "NO"
        printf "| %s | %.1f | %.0f | %d | %.0f | %.1f | %.1f | %.0f | %.0f | %.0f | %s (%.2fx) |\n", v, s, n / s, j, b / 1e6, b / 1e6 / s, c, n / c, r / 1024, sr / 1024, flat, r / sr }'
    results+=("$(awk -v v="$vendor" -v s="$secs" -v r="$rss" -v c="$cpu" -v b="$bytes" -v j="$jobs" -v n="$USERS" -v sr="$small_rss" -v t="$FLAT_TOLERANCE" 'BEGIN {
        printf "RESULT %s_bulk records_per_s=%.0f mb_per_s=%.1f peak_rss_mb=%.0f vendor=%s users=%d wall_s=%.1f cpu_s=%.1f mb_spooled=%.0f jobs=%d peak_rss_small_mb=%.0f flat=%s", v, n / s, b / 1e6 / s, r / 1024, v, n, s, c, b / 1e6, j, sr / 1024, (r <= t * sr) ? "yes" : "no" }')")
done
echo
printf '%s\n' "${results[@]}"
