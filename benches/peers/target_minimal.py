"""The minimal singer-sdk target of the protocol-overhead benchmark: a RecordSink whose
process_record does nothing, default config, so the SDK validates every record against its
SCHEMA (and parses its date-times) and then discards it. As in
shared/reference/peer-baselines.md."""

from singer_sdk import RecordSink, Target
from singer_sdk import typing as th


class DiscardSink(RecordSink):
    def process_record(self, record, context):
        pass


class TargetDiscard(Target):
    name = "target-discard"
    config_jsonschema = th.PropertiesList().to_dict()
    default_sink_class = DiscardSink


if __name__ == "__main__":
    TargetDiscard.cli()
