use super::*;
use serde_json::json;

fn read_all(input: &str) -> Vec<Result<ReadMessage, ReadError>> {
    MessageReader::new(input.as_bytes()).collect()
}

#[test]
fn reads_every_message_type_case_insensitively() {
    let input = concat!(
        r#"{"type":"schema","stream":"users","schema":{"type":"object"},"key_properties":["id"]}"#,
        "\n",
        r#"{"type":"Record","stream":"users","record":{"id":"u1"},"time_extracted":"2026-01-01T00:00:00Z","version":3}"#,
        "\n",
        r#"{"type":"STATE","value":{"bookmarks":{}}}"#,
        "\r\n",
        "\n",
        r#"{"type":"activate_version","stream":"users","version":3}"#,
        "\n",
        r#"{"type":"BATCH","stream":"users","encoding":{"format":"jsonl"},"manifest":["file:///tmp/a"]}"#,
    );
    let messages: Vec<_> = read_all(input).into_iter().map(|m| m.unwrap()).collect();
    assert_eq!(messages.len(), 5);
    assert_eq!(messages[0].message.type_name(), "SCHEMA");
    let Message::Record(record) = &messages[1].message else {
        panic!()
    };
    assert_eq!(record.record["id"], "u1");
    assert_eq!(record.version, Some(3));
    assert_eq!(messages[2].line, 3);
    assert_eq!(messages[3].line, 5, "blank lines still count");
    assert_eq!(messages[4].message.type_name(), "BATCH");
}

#[test]
fn a_byte_order_mark_is_read_past_on_line_one_only() {
    let input =
        "\u{feff}{\"type\":\"STATE\",\"value\":1}\n\u{feff}{\"type\":\"STATE\",\"value\":2}\n";
    let messages = read_all(input);
    assert_eq!(messages[0].as_ref().unwrap().line, 1);
    let err = messages[1].as_ref().unwrap_err().to_string();
    assert!(err.starts_with("line 2"), "{err}");
}

#[test]
fn skips_unknown_types() {
    let input = "{\"type\":\"METRIC\",\"x\":1}\n{\"type\":\"STATE\",\"value\":1}\n";
    let messages: Vec<_> = read_all(input).into_iter().map(|m| m.unwrap()).collect();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].line, 2);
}

#[test]
fn state_keeps_an_explicit_null_value() {
    let messages = read_all(r#"{"type":"STATE","value":null}"#);
    let Message::State(state) = &messages[0].as_ref().unwrap().message else {
        panic!()
    };
    assert_eq!(state.value, Value::Null);
}

#[test]
fn malformed_json_names_the_line_and_shows_an_excerpt() {
    let input =
        "{\"type\":\"STATE\",\"value\":{}}\n{\"type\":\"RECORD\",\"stream\":\"users\",\"rec";
    let results = read_all(input);
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.line(), 2);
    let text = err.to_string();
    assert!(text.starts_with("line 2: invalid JSON at column"), "{text}");
    assert!(text.contains("{\"type\":\"RECORD\""), "{text}");
    assert!(!text.contains(" at line 1 "), "{text}");
}

#[test]
fn invalid_utf8_is_an_error_with_the_offset() {
    let mut input = b"{\"type\":\"RECORD\",\"stream\":\"u\",\"record\":{\"n\":\"".to_vec();
    input.extend_from_slice(&[0xff, 0xfe]);
    input.extend_from_slice(b"\"}}\n");
    let results: Vec<_> = MessageReader::new(&input[..]).collect();
    match results[0].as_ref().unwrap_err() {
        ReadError::Utf8 { line, offset, .. } => {
            assert_eq!((*line, *offset), (1, 45));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn missing_fields_are_named() {
    let cases = [
        (r#"{"stream":"u"}"#, "has no \"type\" field"),
        (
            r#"{"type":"RECORD","record":{}}"#,
            "has no \"stream\" field",
        ),
        (
            r#"{"type":"RECORD","stream":"u"}"#,
            "has no \"record\" field",
        ),
        (
            r#"{"type":"RECORD","stream":"u","record":[1]}"#,
            "\"record\" that is not a JSON object",
        ),
        (
            r#"{"type":"SCHEMA","stream":"u"}"#,
            "has no \"schema\" field",
        ),
        (
            r#"{"type":"SCHEMA","stream":"u","schema":{},"key_properties":"id"}"#,
            "\"key_properties\" that is not an array",
        ),
        (r#"{"type":"STATE"}"#, "has no \"value\" field"),
        (
            r#"{"type":"ACTIVATE_VERSION","stream":"u"}"#,
            "has no \"version\" field",
        ),
        (
            r#"{"type":"BATCH","stream":"u","encoding":{}}"#,
            "has no \"manifest\" field",
        ),
    ];
    for (line, expected) in cases {
        let err = parse_message(9, line.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("line 9: "), "{text}");
        assert!(text.contains(expected), "{line}: {text}");
    }
}

#[test]
fn over_long_lines_are_refused_without_buffering_them() {
    let long = format!(
        "{{\"type\":\"RECORD\",\"stream\":\"u\",\"record\":{{\"x\":\"{}\"}}}}\n{{\"type\":\"STATE\",\"value\":2}}\n",
        "a".repeat(10_000)
    );
    let mut reader =
        MessageReader::with_limit(std::io::BufReader::with_capacity(64, long.as_bytes()), 1000);
    match reader.read().unwrap().unwrap_err() {
        ReadError::TooLong {
            line,
            len,
            limit,
            excerpt,
        } => {
            assert_eq!((line, limit), (1, 1000));
            assert!(len > 10_000);
            assert!(excerpt.len() <= EXCERPT_BYTES + 3);
        }
        other => panic!("{other}"),
    }
    assert!(reader.buf.capacity() < 10_000, "the long line was buffered");
    let next = reader.read().unwrap().unwrap();
    assert_eq!(next.line, 2, "reading goes on after the long line");
}

#[test]
fn duplicate_keys_in_a_record_are_a_record_level_error() {
    let line = r#"{"type":"RECORD","stream":"users","record":{"id":"u1","attributes":{"plan":"a","plan":"b"}}}"#;
    let err = parse_message(4, line.as_bytes()).unwrap_err();
    assert!(err.is_record_level());
    match err {
        ReadError::DuplicateKey {
            line,
            stream,
            pointer,
            record,
        } => {
            assert_eq!(
                (line, stream.as_str(), pointer.as_str()),
                (4, "users", "/attributes/plan")
            );
            assert_eq!(record["attributes"]["plan"], "b");
        }
        other => panic!("{other}"),
    }
    let top = r#"{"type":"RECORD","stream":"users","record":{"id":"u1","id":"u2"}}"#;
    assert!(
        matches!(parse_message(1, top.as_bytes()), Err(ReadError::DuplicateKey { pointer, .. }) if pointer == "/id")
    );
    let envelope = r#"{"type":"RECORD","stream":"users","stream":"x","record":{}}"#;
    assert!(matches!(
        parse_message(1, envelope.as_bytes()),
        Err(ReadError::Json { .. })
    ));
}

#[test]
fn records_keep_numbers_and_key_order() {
    let line = r#"{"type":"RECORD","stream":"u","record":{"z":1,"a":-2,"m":0.1,"big":18446744073709551615,"n":null,"arr":[{"k":true}]}}"#;
    let Some(Message::Record(record)) = parse_message(1, line.as_bytes()).unwrap() else {
        panic!()
    };
    let keys: Vec<_> = record.record.keys().cloned().collect();
    assert_eq!(keys, ["z", "a", "m", "big", "n", "arr"]);
    assert_eq!(
        Value::Object(record.record),
        json!({"z":1,"a":-2,"m":0.1,"big":18446744073709551615u64,"n":null,"arr":[{"k":true}]})
    );
}

/// A seed that parses the record into a value (for [`parse_record_with`]'s tests).
struct AsValue;

impl<'de> DeserializeSeed<'de> for AsValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }
}

/// Reads `line` both ways; `Some` (and the same record as [`parse_raw`] keeps) when the
/// one-pass read took it.
fn one_pass(line: &str) -> Option<(RawRecord, Value)> {
    let fused = parse_record_with(7, line.as_bytes(), |stream: &str| {
        (stream != "unpublished").then_some(AsValue)
    });
    if let Some((raw, value)) = &fused {
        let Ok(ParsedLine::Record(usual)) = parse_raw(7, line.as_bytes()) else {
            panic!("the one-pass read took a line the usual read does not: {line}");
        };
        assert_eq!(raw.line, usual.line);
        assert_eq!(raw.bytes, usual.bytes);
        assert_eq!(raw.stream, usual.stream, "{line}");
        assert_eq!(raw.record.get(), usual.record.get(), "{line}");
        assert_eq!(raw.time_extracted, usual.time_extracted, "{line}");
        assert_eq!(raw.version, usual.version, "{line}");
        let parsed: Value = serde_json::from_str(usual.record.get()).unwrap();
        assert_eq!(*value, parsed, "{line}");
    }
    fused
}

#[test]
fn a_record_in_the_common_form_is_read_in_one_pass_with_its_text_kept() {
    for line in [
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1","a":{"b":[1,"}"]}},"time_extracted":"2026-01-01T00:00:00Z"}"#,
        r#"{"type":"record","stream":"users","record":{"id":"u1"}}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"},"version":3}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"},"version":3.0,"extra":[1,{"x":2}]}"#,
        " { \"type\" : \"RECORD\" ,\t\"stream\" : \"users\" , \"record\" :\r\n { \"id\" : \"u,}\\\"1\" } \n, \"time_extracted\" : null } \t",
        "{\"type\":\"RECORD\",\"stream\":\"users\",\"record\":{\"id\":\"u1\"}   }  ",
        r#"{"type":"RECORD","stream":"us\u0065rs","record":{"id":"u1\u0000","k\"ey":"\\"}}"#,
        r#"{"type":"RECORD","unknown":1,"stream":"users","unknown2":{"record":1},"record":{}}"#,
    ] {
        let (raw, _) = one_pass(line).unwrap_or_else(|| panic!("not read in one pass: {line}"));
        assert_eq!(raw.stream, "users");
    }
}

#[test]
fn anything_unusual_is_left_to_the_usual_read() {
    for line in [
        // Another order of the fields.
        r#"{"stream":"users","record":{"id":"u1"},"type":"RECORD"}"#,
        r#"{"type":"RECORD","record":{"id":"u1"},"stream":"users"}"#,
        // A stream not walked; not a RECORD.
        r#"{"type":"RECORD","stream":"unpublished","record":{"id":"u1"}}"#,
        r#"{"type":"STATE","value":{"stream":"users","record":{}}}"#,
        r#"{"type":"SCHEMA","stream":"users","schema":{"type":"object"},"record":{}}"#,
        // An escaped field name or type.
        r#"{"type":"RECORD","stream":"users","rec\u006frd":{"id":"u1"}}"#,
        r#"{"type":"RECORD","str\u0065am":"users","record":{"id":"u1"}}"#,
        r#"{"type":"RECOR\u0044","stream":"users","record":{"id":"u1"}}"#,
        // Repeated fields: the usual read says so.
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"},"record":{"id":"u2"}}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"},"version":1,"version":2}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"},"schema":1,"schema":2}"#,
        // Errors: the usual read names them.
        r#"{"type":"RECORD","stream":"","record":{"id":"u1"}}"#,
        r#"{"type":"RECORD","stream":5,"record":{"id":"u1"}}"#,
        r#"{"type":"RECORD","stream":"users","record":[1]}"#,
        r#"{"type":"RECORD","stream":"users","record":"x"}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"},"version":-1}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"}} trailing"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1",}}"#,
        r#"{"type":null,"stream":"users","record":{"id":"u1"}}"#,
        "{\"type\":\"RECORD\",\"stream\":\"users\",\"record\":{\"id\":\"\u{1}\"}}",
    ] {
        assert!(one_pass(line).is_none(), "read in one pass: {line}");
    }
    // Invalid UTF-8.
    assert!(
        parse_record_with(
            1,
            b"{\"type\":\"RECORD\",\"stream\":\"users\",\"record\":{\"id\":\"\xff\"}}",
            |_: &str| Some(AsValue)
        )
        .is_none()
    );
}

#[test]
fn the_kept_record_text_is_written_verbatim() {
    // The record's text is copied through serde_json's raw-value path: a change of its
    // private name would quote the text instead, and this would fail.
    let line = r#"{"type":"RECORD","stream":"users","record":{ "id" : "u1", "n":1.50 }}"#;
    let (raw, _) = one_pass(line).unwrap();
    assert_eq!(raw.record.get(), r#"{ "id" : "u1", "n":1.50 }"#);
}
