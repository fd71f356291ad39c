"""Shared pieces of the benchmark scripts: release builds, the peers' virtualenvs, a sandbox
process, whole-process measurement (wall time, CPU time, peak RSS) and medians.

Used by `benches/harness.py` (the one table, driven by `benches/run.sh`) and by
`benches/tap_userflow.py` (runnable alone). Standard library only.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benches"
OUT = BENCH / "out"
PEERS = BENCH / "peers"

# Each peer in its own virtualenv: their pins conflict (target-jsonl pins jsonschema 2.6.0,
# singer-sdk needs >= 4.16), see shared/reference/peer-baselines.md.
VENVS = {
    "singer-sdk": ["singer-sdk==0.54.9", "requests"],
    "target-jsonl": ["target-jsonl==0.1.4"],
    "kingalban": ["kingalban-tap-userflow==1.2.1"],
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def release_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"


def build(bins=("tap-roster", "target-roster", "roster-sandbox")):
    """`cargo build --release` of the binaries; returns the release directory."""
    argv = ["cargo", "build", "--release", "--locked"]
    for b in bins:
        argv += ["--bin", b]
    log("== " + " ".join(argv))
    subprocess.run(argv, cwd=ROOT, check=True)
    return release_dir()


def venv(name):
    """The virtualenv for peer `name` (a key of VENVS), created from PyPI once per package
    list; returns its python."""
    packages = VENVS[name]
    fingerprint = hashlib.sha1("\n".join(packages).encode()).hexdigest()[:12]
    root = BENCH / f".venv-{name}"
    python = root / "bin" / "python"
    ready = root / ".ready"
    if ready.exists() and ready.read_text().strip() == fingerprint:
        return python
    log(f"== creating {root}: {' '.join(packages)}")
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
    ready.write_text(fingerprint + "\n")
    return python


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox:
    """A `roster-sandbox` process on a free port; `base` is its origin."""

    def __init__(self, binary, *args):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [str(binary), "--port", str(self.port), *map(str, args)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"roster-sandbox exited {self.proc.returncode}: {' '.join(argv)}")
            try:
                urllib.request.urlopen(f"{self.base}/_sandbox/stats", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("roster-sandbox did not come up")

    def admin(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}/_sandbox/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def measure(argv, out_path, stdin_path=None, env=None, cwd=None):
    """Runs argv (stdin from a file, stdout to out_path, stderr beside it). Returns a dict:
    wall_s, cpu_s (user + system of the process and the children it waited for), peak_rss_mb
    (the largest of them, from wait4's rusage), code."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        with open(out_path, "wb") as out, open(str(out_path) + ".err", "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, env=env, cwd=cwd)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
    finally:
        if stdin_path:
            stdin.close()
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        # ru_maxrss is in kilobytes on Linux.
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "code": os.waitstatus_to_exitcode(status),
    }


def check(result, argv, out_path):
    if result["code"] != 0:
        err = Path(str(out_path) + ".err")
        tail = err.read_text(errors="replace")[-3000:] if err.exists() else ""
        raise SystemExit(f"{argv[0]} exited {result['code']}:\n{tail}")
    return result


def median(values):
    return statistics.median(list(values))


def load():
    """The 1-minute load average (the machine is shared: reported beside every figure)."""
    return os.getloadavg()[0]
