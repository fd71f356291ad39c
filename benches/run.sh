#!/usr/bin/env bash
# roster's benchmarks from a clean clone, in one table (see BENCHMARKS.md for the figures).
#
#   benches/run.sh                        # everything: 3 runs each, full sizes (about 45 min)
#   benches/run.sh --quick                # small sizes, 1 run (a few minutes): does it all work?
#   benches/run.sh --only protocol,tap    # some sections: protocol tap upserts rate bulk sandbox
#                                         # ledger mirror
#   benches/run.sh --only ledger          # the ledger row: 1,000,000 users written once, then unchanged
#   benches/run.sh --only mirror          # the mirror row: 1,000,000 users, then a pass with 1% gone
#   benches/run.sh --help                 # every option (benches/harness.py)
#
# 1. builds the release binaries (tap-roster, target-roster, roster-sandbox) and the
#    sandbox_upserts load generator;
# 2. installs the Python peers from PyPI, each in its own virtualenv under benches/.venv-*
#    (singer-sdk 0.54.9 for the minimal and the HTTP targets, target-jsonl 0.1.4,
#    kingalban-tap-userflow 1.2.1), once;
# 3. generates the inputs (benches/gen_input.py, into benches/out/);
# 4. starts roster-sandbox processes, runs every measurement, and prints the table (also in
#    benches/out/results.json).
#
# Needs: cargo, python3 (3.9+, with venv), network access to PyPI the first time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then exec python3 benches/harness.py --help; fi
done
command -v python3 >/dev/null || { echo "benches/run.sh: python3 is required" >&2; exit 2; }
python3 -c 'import venv' 2>/dev/null || { echo "benches/run.sh: python3 needs the venv module (apt-get install python3-venv)" >&2; exit 2; }

echo "== cargo build --release" >&2
cargo build --release --locked --bin tap-roster --bin target-roster --bin roster-sandbox
cargo bench --locked --bench sandbox_upserts --no-run

echo "== Python peers (PyPI, one virtualenv each)" >&2
python3 - <<'PY'
import sys
sys.path.insert(0, "benches")
import common
for name in common.VENVS:
    common.venv(name)
PY

exec python3 benches/harness.py "$@"
