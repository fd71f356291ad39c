//! Stream schemas: each SCHEMA message is compiled once (jsonschema) and every RECORD of the
//! stream is checked against it.
//!
//! `format` is not asserted, as in the Meltano SDK (taps write date-times in many shapes and the
//! vendors take them as strings); everything else in the schema is.

use serde_json::Value;

use crate::singer::{Object, SchemaMessage};

/// How many validation failures one reject names.
const MAX_REPORTED_FAILURES: usize = 3;

/// A compiled stream schema.
#[derive(Debug)]
pub struct StreamSchema {
    validator: jsonschema::Validator,
    /// The SCHEMA message as received (the reject file repeats it so rejects replay).
    pub message: SchemaMessage,
}

impl StreamSchema {
    /// Compiles a SCHEMA message; the error names what is wrong with the schema.
    pub fn compile(message: SchemaMessage) -> Result<Self, String> {
        if !message.schema.is_object() && !message.schema.is_boolean() {
            return Err("the schema is not a JSON object".into());
        }
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&message.schema)
            .map_err(|err| format!("the schema is not a valid JSON Schema: {err}"))?;
        Ok(StreamSchema { validator, message })
    }

    /// Checks a record; the error names each failing field (up to three).
    pub fn check(&self, record: Object) -> (Object, Result<(), String>) {
        let value = Value::Object(record);
        let outcome = if self.validator.is_valid(&value) {
            Ok(())
        } else {
            let failures: Vec<String> = self
                .validator
                .iter_errors(&value)
                .take(MAX_REPORTED_FAILURES)
                .map(|err| {
                    let path = err.instance_path().to_string();
                    let at = if path.is_empty() {
                        "the record".to_string()
                    } else {
                        format!("field {}", path.trim_start_matches('/').replace('/', "."))
                    };
                    format!("{at}: {err}")
                })
                .collect();
            Err(format!(
                "does not match its SCHEMA: {}",
                failures.join("; ")
            ))
        };
        let Value::Object(record) = value else {
            return (Object::new(), outcome);
        };
        (record, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(schema: Value) -> Result<StreamSchema, String> {
        StreamSchema::compile(SchemaMessage {
            stream: "users".into(),
            schema,
            key_properties: vec!["id".into()],
            bookmark_properties: vec![],
        })
    }

    #[test]
    fn checks_records_and_names_the_field() {
        let s = schema(json!({"type": "object", "properties": {
            "id": {"type": "string"}, "email": {"type": ["string", "null"], "format": "email"},
            "seats": {"type": "integer"}}, "required": ["id"]}))
        .unwrap();
        let ok = json!({"id": "u1", "email": "not an email", "extra": [1]});
        let (back, outcome) = s.check(ok.as_object().cloned().unwrap());
        assert!(outcome.is_ok(), "formats are not asserted: {outcome:?}");
        assert_eq!(Value::Object(back), ok);
        let (_, outcome) = s.check(
            json!({"id": "u1", "seats": "many"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let err = outcome.unwrap_err();
        assert!(err.contains("field seats"), "{err}");
        let (_, outcome) = s.check(json!({"email": null}).as_object().cloned().unwrap());
        let err = outcome.unwrap_err();
        assert!(err.contains("the record") && err.contains("id"), "{err}");
    }

    #[test]
    fn invalid_schemas_are_refused() {
        let err =
            schema(json!({"type": "object", "properties": {"id": {"type": "strin"}}})).unwrap_err();
        assert!(err.contains("not a valid JSON Schema"), "{err}");
        assert!(schema(json!([1])).is_err());
    }
}
