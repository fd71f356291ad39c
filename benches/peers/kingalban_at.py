"""kingalban-tap-userflow pointed at roster-sandbox: the tap hard-codes
`url_base = "https://api.userflow.com"` on `tap_userflow.client.UserFlowStream`, so set it
from ROSTER_BENCH_USERFLOW_URL before its CLI runs."""

import os

import tap_userflow.client

tap_userflow.client.UserFlowStream.url_base = os.environ["ROSTER_BENCH_USERFLOW_URL"]

from tap_userflow.tap import TapUserFlow  # noqa: E402

TapUserFlow.cli()
