//! Settings as data: one declaration per key drives validation, `--config ENV` casting, the
//! settings JSON Schema in `--about`, and the README's configuration table.

use serde_json::{Map, Value, json};

use super::ConfigError;

/// The type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Any string.
    String,
    /// A URL (validated as one).
    Url,
    /// A file path.
    Path,
    /// A whole number ≥ 0.
    Integer,
    /// A number ≥ 0.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of these strings.
    Options(&'static [&'static str]),
    /// A JSON object.
    Object,
}

/// Which binary reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Both the tap and the target.
    Both,
    /// Only tap-roster.
    Tap,
    /// Only target-roster.
    Target,
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// One line for `--about` and the README.
    pub description: &'static str,
    /// A credential: redacted everywhere, marked `secret`/`writeOnly` in the schema.
    pub secret: bool,
    /// Must be given for a sync or a target run.
    pub required: bool,
    /// The default, as JSON text, for documentation.
    pub default: Option<&'static str>,
    /// Which binary reads it.
    pub applies: Applies,
}

impl Setting {
    /// An optional setting read by both binaries.
    pub const fn new(name: &'static str, kind: Kind, description: &'static str) -> Self {
        Self {
            name,
            kind,
            description,
            secret: false,
            required: false,
            default: None,
            applies: Applies::Both,
        }
    }

    /// Marks the setting as a credential.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Marks the setting as required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Documents its default.
    pub const fn default(mut self, json: &'static str) -> Self {
        self.default = Some(json);
        self
    }

    /// Limits it to one binary.
    pub const fn only(mut self, applies: Applies) -> Self {
        self.applies = applies;
        self
    }

    /// True when `binary` reads this setting.
    pub fn applies_to(&self, binary: Applies) -> bool {
        self.applies == Applies::Both || binary == Applies::Both || self.applies == binary
    }

    /// This setting's JSON Schema.
    pub fn schema(&self) -> Value {
        let mut schema = match self.kind {
            Kind::String | Kind::Path => json!({"type": "string"}),
            Kind::Url => json!({"type": "string", "format": "uri"}),
            Kind::Integer => json!({"type": "integer", "minimum": 0}),
            Kind::Number => json!({"type": "number", "minimum": 0}),
            Kind::Boolean => json!({"type": "boolean"}),
            Kind::Options(options) => json!({"type": "string", "enum": options}),
            Kind::Object => json!({"type": "object"}),
        };
        if let Value::Object(map) = &mut schema {
            map.insert("description".into(), Value::from(self.description));
            if let Some(default) = self
                .default
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
            {
                map.insert("default".into(), default);
            }
            if self.secret {
                map.insert("secret".into(), Value::Bool(true));
                map.insert("writeOnly".into(), Value::Bool(true));
            }
        }
        schema
    }

    /// Casts a value read from the environment to this setting's type.
    pub fn cast_env(&self, raw: &str) -> Result<Value, ConfigError> {
        let bad = |expected: &str| ConfigError::Invalid {
            key: self.name.to_string(),
            problem: if self.secret {
                format!("must be {expected}")
            } else {
                format!("must be {expected}, got {raw:?}")
            },
        };
        match self.kind {
            Kind::Integer => raw
                .trim()
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| bad("a whole number")),
            Kind::Number => raw
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number")),
            Kind::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
                _ => Err(bad("true or false")),
            },
            Kind::Object => serde_json::from_str::<Value>(raw)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| bad("a JSON object")),
            Kind::String | Kind::Url | Kind::Path | Kind::Options(_) => {
                Ok(Value::String(raw.to_string()))
            }
        }
    }

    /// Checks a value's type. Error messages never show a secret's value.
    pub fn check(&self, value: &Value) -> Result<(), ConfigError> {
        let problem = |expected: String| ConfigError::Invalid {
            key: self.name.to_string(),
            problem: if self.secret {
                format!("must be {expected}")
            } else {
                format!("must be {expected}, got {value}")
            },
        };
        match self.kind {
            Kind::String | Kind::Path => value
                .is_string()
                .then_some(())
                .ok_or_else(|| problem("a string".into())),
            Kind::Url => match value.as_str() {
                Some(text) => url::Url::parse(text)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .map(|_| ())
                    .ok_or_else(|| problem("an http or https URL".into())),
                None => Err(problem("a URL string".into())),
            },
            Kind::Integer => value
                .as_u64()
                .map(|_| ())
                .ok_or_else(|| problem("a whole number ≥ 0".into())),
            Kind::Number => value
                .as_f64()
                .filter(|n| *n >= 0.0)
                .map(|_| ())
                .ok_or_else(|| problem("a number ≥ 0".into())),
            Kind::Boolean => value
                .is_boolean()
                .then_some(())
                .ok_or_else(|| problem("true or false".into())),
            Kind::Options(options) => match value.as_str() {
                Some(text) if options.contains(&text) => Ok(()),
                _ => Err(problem(format!("one of {}", options.join(", ")))),
            },
            Kind::Object => value
                .is_object()
                .then_some(())
                .ok_or_else(|| problem("a JSON object".into())),
        }
    }
}

/// A JSON Schema (draft 2020-12) for a list of settings.
pub fn schema_for<'a>(settings: impl IntoIterator<Item = &'a Setting>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for setting in settings {
        properties.insert(setting.name.to_string(), setting.schema());
        if setting.required {
            required.push(Value::from(setting.name));
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// A markdown table of settings, for `--about --format markdown` and the README.
pub fn markdown_table<'a>(settings: impl IntoIterator<Item = &'a Setting>) -> String {
    let mut out = String::from(
        "| Setting | Type | Required | Default | Description |\n| --- | --- | --- | --- | --- |\n",
    );
    for s in settings {
        let kind = match s.kind {
            Kind::String => "string".to_string(),
            Kind::Url => "URL".into(),
            Kind::Path => "path".into(),
            Kind::Integer => "integer".into(),
            Kind::Number => "number".into(),
            Kind::Boolean => "boolean".into(),
            Kind::Options(o) => o.join(" \\| "),
            Kind::Object => "object".into(),
        };
        let description = if s.secret {
            format!("{} (secret)", s.description)
        } else {
            s.description.to_string()
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            s.name,
            kind,
            if s.required { "yes" } else { "no" },
            s.default.map(|d| format!("`{d}`")).unwrap_or_default(),
            description
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Setting = Setting::new("api_key", Kind::String, "the key")
        .secret()
        .required();
    const RETRIES: Setting = Setting::new("max_retries", Kind::Integer, "retries").default("8");

    #[test]
    fn schema_marks_secrets_and_defaults() {
        let schema = schema_for([&KEY, &RETRIES]);
        assert_eq!(schema["properties"]["api_key"]["secret"], true);
        assert_eq!(schema["properties"]["api_key"]["writeOnly"], true);
        assert_eq!(schema["properties"]["max_retries"]["default"], 8);
        assert_eq!(schema["required"], json!(["api_key"]));
    }

    #[test]
    fn type_errors_never_show_a_secret() {
        let err = KEY.check(&json!(12345)).unwrap_err().to_string();
        assert!(!err.contains("12345"), "{err}");
        assert!(err.contains("api_key"), "{err}");
        let err = RETRIES.check(&json!("lots")).unwrap_err().to_string();
        assert!(err.contains("\"lots\""), "{err}");
    }

    #[test]
    fn casts_environment_values() {
        assert_eq!(RETRIES.cast_env("3").unwrap(), json!(3));
        assert!(RETRIES.cast_env("x").is_err());
        let flag = Setting::new("hard_delete", Kind::Boolean, "");
        assert_eq!(flag.cast_env("TRUE").unwrap(), json!(true));
        let streams = Setting::new("streams", Kind::Object, "");
        assert_eq!(streams.cast_env(r#"{"a":{}}"#).unwrap(), json!({"a":{}}));
        assert!(streams.cast_env("[1]").is_err());
    }
}
