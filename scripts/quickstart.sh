#!/usr/bin/env bash
# roster's quickstart: the README's first command. On a machine with only Rust (and bash), it
#   1. builds roster (release),
#   2. starts roster-sandbox on a free port,
#   3. runs tap-roster (the sandbox's Userflow) | target-roster (the sandbox's Appcues),
#   4. prints the target's summary and final state, saves what Appcues now holds, and says where
#      to look,
# and stops the sandbox on the way out, however the script ends.
#
# Usage: scripts/quickstart.sh [--keep]
#   --keep   leave the sandbox running after the run (until Ctrl-C) to explore its admin API
# Environment:
#   ROSTER_QUICKSTART_OUT  where the run's files go (default: ./quickstart-out)
#   ROSTER_BIN_DIR         use the binaries in this directory instead of building (tests use
#                          the debug build this way)
#   ROSTER_LOG             log level of tap and target on stderr (default: warn)
set -euo pipefail

keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "quickstart: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${ROSTER_QUICKSTART_OUT:-$PWD/quickstart-out}
export ROSTER_LOG=${ROSTER_LOG:-warn}

say() { printf '\n==> %s\n' "$*" >&2; }

# 1. Build.
if [[ -n ${ROSTER_BIN_DIR:-} ]]; then
  bin=$ROSTER_BIN_DIR
  say "using the binaries in $bin"
else
  say "building roster (release; the first build takes a few minutes)"
  cargo build --release --locked --manifest-path "$root/Cargo.toml" \
    --bin tap-roster --bin target-roster --bin roster-sandbox
  bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
for b in tap-roster target-roster roster-sandbox; do
  [[ -x $bin/$b ]] || { echo "quickstart: $bin/$b is missing" >&2; exit 1; }
done

mkdir -p "$out"
rm -f "$out"/{sandbox.out,sandbox.log,tap-userflow.json,target-appcues.json,pipeline.singer,state.json,report.json,rejects.ndjson,appcues-dump.json}

# 2. Start the sandbox on a free port; its banner (stdout) names the port.
"$bin/roster-sandbox" --port 0 >"$out/sandbox.out" 2>"$out/sandbox.log" &
sandbox_pid=$!
stop_sandbox() {
  if kill -0 "$sandbox_pid" 2>/dev/null; then
    kill -TERM "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
  fi
}
trap stop_sandbox EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

origin=
for _ in $(seq 1 200); do
  origin=$(sed -n 's/^roster-sandbox listening on \([^ ]*\).*/\1/p' "$out/sandbox.out")
  [[ -n $origin ]] && break
  if ! kill -0 "$sandbox_pid" 2>/dev/null; then
    echo "quickstart: roster-sandbox did not start:" >&2
    cat "$out/sandbox.log" >&2
    exit 1
  fi
  sleep 0.05
done
[[ -n $origin ]] || { echo "quickstart: roster-sandbox printed no address" >&2; exit 1; }
say "roster-sandbox is listening on $origin (seeded Userflow: 100 users, 8 groups; Appcues starts empty)"

# GET a sandbox admin path: curl when there is one, else bash's own /dev/tcp.
http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS "$origin$1"
    return
  fi
  local hostport=${origin#http://}
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" "$hostport" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

# The sandbox's credentials (docs/sandbox.md, "Prefixes and credentials"): the same as samples/*.json, on this port.
cat >"$out/tap-userflow.json" <<EOF
{
  "vendor": "userflow",
  "base_url": "$origin/userflow",
  "api_key": "sandbox-userflow-key"
}
EOF
cat >"$out/target-appcues.json" <<EOF
{
  "vendor": "appcues",
  "base_url": "$origin/appcues",
  "account_id": "10001",
  "api_key": "sandbox-appcues-key",
  "api_secret": "sandbox-appcues-secret",
  "reject_file": "$out/rejects.ndjson"
}
EOF

# 3. The pipeline. The target prints its summary on stderr and each safe state on stdout.
say "tap-roster (Userflow) | target-roster (Appcues)"
"$bin/tap-roster" --config "$out/tap-userflow.json" \
  | tee "$out/pipeline.singer" \
  | "$bin/target-roster" --config "$out/target-appcues.json" --report "$out/report.json" \
    >"$out/state.json"

# 4. What happened, and where to look.
state=$(tail -n 1 "$out/state.json")
say "final state (the target's last stdout line, what Meltano would store):"
printf '%s\n' "$state"

http_get /_sandbox/dump/appcues >"$out/appcues-dump.json"
profiles=$(grep -o '"user_id":"[^"]*"' "$out/appcues-dump.json" | sort -u | wc -l | tr -d ' ')
say "Appcues now holds $profiles user profiles (and the groups with their members)"

cat >&2 <<EOF
Where to look (in $out):
  appcues-dump.json   everything the sandbox's Appcues held at the end (its GET /_sandbox/dump/appcues;
                      run with --keep to query the sandbox yourself)
  report.json         the target's report: per stream in/sent/rejected/skipped, requests, retries, 429s
  state.json          every state the target printed, the last one is the one to resume from
  pipeline.singer     the Singer messages tap-roster wrote
  rejects.ndjson      records the vendor refused, with the reason (created only when there were some)
  sandbox.log         the sandbox's own log
EOF

if ((keep)); then
  say "the sandbox keeps running: try curl $origin/_sandbox/ (Ctrl-C stops it)"
  wait "$sandbox_pid" || true
fi
