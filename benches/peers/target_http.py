"""The singer-sdk peer of the real-upsert benchmark: validate each record (the SDK's default),
then make the same HTTP call target-roster makes for it (a Userflow user upsert, POST /users
with the id and the attributes, over one keep-alive `requests` session), one request per
record. Config: base_url, api_key."""

import datetime
import decimal
import json

import requests
from singer_sdk import RecordSink, Target
from singer_sdk import typing as th

# The standard fields target-roster places among Userflow's attributes (shared/CONTRACT.md).
STANDARD = ("email", "name", "first_name", "last_name", "created_at")


def plain(value):
    # The SDK parses date-time strings into datetime objects and numbers into Decimal; send
    # them back as the JSON they came in as.
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    raise TypeError(f"not JSON: {value!r}")


class UpsertSink(RecordSink):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = requests.Session()
        self.session.headers.update({
            "Authorization": f"Bearer {self.config['api_key']}",
            "Userflow-Version": "2020-01-03",
            "Content-Type": "application/json",
        })
        self.url = self.config["base_url"].rstrip("/") + "/users"

    def process_record(self, record, context):
        attributes = {k: record[k] for k in STANDARD if k in record}
        attributes.update(record.get("attributes") or {})
        for flag in ("active", "status"):
            if flag in record:
                attributes[flag] = record[flag]
        body = json.dumps({"id": record["id"], "attributes": attributes}, default=plain)
        response = self.session.post(self.url, data=body, timeout=30)
        response.raise_for_status()


class TargetUpsert(Target):
    name = "target-upsert"
    config_jsonschema = th.PropertiesList(
        th.Property("base_url", th.StringType, required=True),
        th.Property("api_key", th.StringType, required=True),
    ).to_dict()
    default_sink_class = UpsertSink


if __name__ == "__main__":
    TargetUpsert.cli()
