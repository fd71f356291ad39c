#!/usr/bin/env python3
"""Writes the benchmarks' Singer input: N `users` RECORDs with a STATE every 1,000.

    python3 benches/gen_input.py 1000000 benches/out/users-1m.jsonl

Like the input of `shared/reference/peer-baselines.md`: about 490 bytes per RECORD line, a
nested `attributes` object of scalars, `format: date-time` fields (`created_at`,
`last_seen_at`, and `time_extracted` on the message), deterministic (same N, same bytes). The
schema declares every field with its type, so a validating target checks all of them.
"""

import json
import sys

SCHEMA = {
    "type": "SCHEMA",
    "stream": "users",
    "key_properties": ["id"],
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "email": {"type": ["string", "null"], "format": "email"},
            "name": {"type": ["string", "null"]},
            "first_name": {"type": ["string", "null"]},
            "last_name": {"type": ["string", "null"]},
            "active": {"type": ["boolean", "null"]},
            "status": {"type": ["string", "null"]},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "attributes": {
                "type": ["object", "null"],
                "properties": {
                    "plan": {"type": ["string", "null"]},
                    "seats": {"type": ["integer", "null"]},
                    "mrr": {"type": ["number", "null"]},
                    "country": {"type": ["string", "null"]},
                    "company": {"type": ["string", "null"]},
                    "role": {"type": ["string", "null"]},
                    "beta": {"type": ["boolean", "null"]},
                    "last_seen_at": {"type": ["string", "null"], "format": "date-time"},
                    "signup_source": {"type": ["string", "null"]},
                },
            },
        },
        "required": ["id"],
    },
}

PLANS = ["free", "starter", "pro", "enterprise"]
COUNTRIES = ["DE", "FR", "US", "GB", "NL", "SE", "ES", "IT", "PL", "CA"]
ROLES = ["admin", "editor", "viewer", "owner"]
SOURCES = ["organic", "paid-search", "referral", "partner", "newsletter"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Wirth"]


def record(i):
    first, last = FIRST[i % 10], LAST[(i // 10) % 10]
    return {
        "type": "RECORD",
        "stream": "users",
        "record": {
            "id": f"user-{i:08d}",
            "email": f"{first.lower()}.{last.lower()}.{i}@example-company-{i % 997}.com",
            "name": f"{first} {last}",
            "first_name": first,
            "last_name": last,
            "active": i % 7 != 0,
            "status": "active" if i % 7 else "invited",
            "created_at": f"20{20 + i % 6}-{i % 12 + 1:02d}-{i % 28 + 1:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}Z",
            "attributes": {
                "plan": PLANS[i % 4],
                "seats": i % 250,
                "mrr": round((i % 5000) * 1.25, 2),
                "country": COUNTRIES[i % 10],
                "company": f"Example Company {i % 997}",
                "role": ROLES[i % 4],
                "beta": i % 3 == 0,
                "last_seen_at": f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}T{(i * 3) % 24:02d}:{(i * 11) % 60:02d}:00Z",
                "signup_source": SOURCES[i % 5],
            },
        },
        "time_extracted": f"2026-11-23T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z",
    }


def write(n, out, state_every=1000):
    dump = json.JSONEncoder(separators=(",", ":")).encode
    out.write(dump(SCHEMA) + "\n")
    for i in range(n):
        out.write(dump(record(i)) + "\n")
        if (i + 1) % state_every == 0 or i + 1 == n:
            state = {"type": "STATE", "value": {"bookmarks": {"users": {"replication_key_value": i + 1}}}}
            out.write(dump(state) + "\n")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    path = sys.argv[2] if len(sys.argv) > 2 else "-"
    if path == "-":
        write(n, sys.stdout)
    else:
        with open(path, "w", buffering=1 << 20) as out:
            write(n, out)


if __name__ == "__main__":
    main()
