//! The part of JSON Schema that tool parameters use, checked by hand: `type`, `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `minItems`/`maxItems`. Other keywords (`description`, `format`,
//! `pattern`, …) are passed to the model and not enforced, as JSON Schema treats unknown
//! keywords. A schema is compiled once at start-up, where a malformed keyword is an error
//! naming its place; arguments are then checked against it on every call.

use serde_json::{Map, Value};

/// A compiled schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schema {
    /// Accepted types; empty accepts any.
    types: Vec<Kind>,
    /// Schemas of named properties, in the file's order.
    properties: Vec<(String, Schema)>,
    /// Properties that must be present.
    required: Vec<String>,
    /// What other properties may be.
    additional: Additional,
    /// Schema of every array item.
    items: Option<Box<Schema>>,
    /// The only values allowed.
    allowed: Option<Vec<Value>>,
    /// Bounds of a number.
    minimum: Option<f64>,
    maximum: Option<f64>,
    /// Bounds of a string's length in characters.
    min_length: Option<u64>,
    max_length: Option<u64>,
    /// Bounds of an array's length.
    min_items: Option<u64>,
    max_items: Option<u64>,
}

/// A JSON Schema type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    Integer,
    Boolean,
    Null,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "object" => Self::Object,
            "array" => Self::Array,
            "string" => Self::String,
            "number" => Self::Number,
            "integer" => Self::Integer,
            "boolean" => Self::Boolean,
            "null" => Self::Null,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Object => "an object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::Boolean => "true or false",
            Self::Null => "null",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match self {
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Integer => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            Self::Boolean => value.is_boolean(),
            Self::Null => value.is_null(),
        }
    }
}

/// `additionalProperties`.
#[derive(Debug, Clone, PartialEq, Default)]
enum Additional {
    /// Absent or `true`.
    #[default]
    Any,
    /// `false`.
    None,
    /// A schema every other property must match.
    Schema(Box<Schema>),
}

impl Schema {
    /// The schema of a tool's `parameters`: an object schema (`"type": "object"`), or a message
    /// naming the keyword at fault.
    pub fn parameters(value: &Value) -> Result<Self, String> {
        let schema = Self::compile(value, "parameters")?;
        if schema.types != [Kind::Object] {
            return Err("parameters must be an object schema (\"type\": \"object\")".into());
        }
        Ok(schema)
    }

    fn compile(value: &Value, at: &str) -> Result<Self, String> {
        let Some(map) = value.as_object() else {
            return Err(format!("{at} must be a JSON Schema object"));
        };
        let mut schema = Self {
            types: types(map.get("type"), at)?,
            ..Self::default()
        };
        if let Some(props) = map.get("properties") {
            let props = props
                .as_object()
                .ok_or_else(|| format!("{at}.properties must be an object"))?;
            for (name, sub) in props {
                let sub = Self::compile(sub, &format!("{at}.properties.{name}"))?;
                schema.properties.push((name.clone(), sub));
            }
        }
        if let Some(required) = map.get("required") {
            let names = required.as_array().and_then(|names| {
                names
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            });
            schema.required =
                names.ok_or_else(|| format!("{at}.required must be an array of names"))?;
        }
        schema.additional = match map.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Additional::Any,
            Some(Value::Bool(false)) => Additional::None,
            Some(sub) => Additional::Schema(Box::new(Self::compile(
                sub,
                &format!("{at}.additionalProperties"),
            )?)),
        };
        if let Some(items) = map.get("items") {
            schema.items = Some(Box::new(Self::compile(items, &format!("{at}.items"))?));
        }
        if let Some(allowed) = map.get("enum") {
            let allowed = allowed
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("{at}.enum must be a non-empty array"))?;
            schema.allowed = Some(allowed.clone());
        }
        let number = |key: &str| match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("{at}.{key} must be a number")),
        };
        schema.minimum = number("minimum")?;
        schema.maximum = number("maximum")?;
        let count = |key: &str| match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{at}.{key} must be a whole number")),
        };
        schema.min_length = count("minLength")?;
        schema.max_length = count("maxLength")?;
        schema.min_items = count("minItems")?;
        schema.max_items = count("maxItems")?;
        Ok(schema)
    }

    /// Checks a call's arguments; the error says, for the model, what is wrong.
    pub fn check_arguments(&self, arguments: &Map<String, Value>) -> Result<(), String> {
        self.check_object(arguments, "")
    }

    fn check(&self, value: &Value, at: &str) -> Result<(), String> {
        let name = if at.is_empty() { "the arguments" } else { at };
        if !self.types.is_empty() && !self.types.iter().any(|k| k.admits(value)) {
            let wanted: Vec<&str> = self.types.iter().map(|k| k.name()).collect();
            return Err(format!("{name} must be {}", wanted.join(" or ")));
        }
        if let Some(allowed) = &self.allowed {
            if !allowed.contains(value) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(format!("{name} must be one of {}", list.join(", ")));
            }
        }
        match value {
            Value::Object(map) => self.check_object(map, at),
            Value::Array(items) => self.check_array(items, at),
            Value::String(text) => self.check_length(text, name),
            Value::Number(n) => self.check_number(n.as_f64().unwrap_or_default(), name),
            _ => Ok(()),
        }
    }

    fn check_object(&self, map: &Map<String, Value>, at: &str) -> Result<(), String> {
        let path = |key: &str| match at {
            "" => key.to_owned(),
            _ => format!("{at}.{key}"),
        };
        if let Some(missing) = self.required.iter().find(|r| !map.contains_key(*r)) {
            return Err(format!("{} is required", path(missing)));
        }
        for (key, value) in map {
            match self.properties.iter().find(|(name, _)| name == key) {
                Some((_, schema)) => schema.check(value, &path(key))?,
                None => match &self.additional {
                    Additional::Any => {}
                    Additional::None => return Err(format!("{} is not a parameter", path(key))),
                    Additional::Schema(schema) => schema.check(value, &path(key))?,
                },
            }
        }
        Ok(())
    }

    fn check_array(&self, items: &[Value], at: &str) -> Result<(), String> {
        let len = items.len() as u64;
        if self.min_items.is_some_and(|min| len < min) || self.max_items.is_some_and(|m| len > m) {
            return Err(format!(
                "{at} has {len} items, {}",
                bounds(self.min_items, self.max_items)
            ));
        }
        match &self.items {
            Some(schema) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| schema.check(item, &format!("{at}[{i}]"))),
            None => Ok(()),
        }
    }

    fn check_length(&self, text: &str, name: &str) -> Result<(), String> {
        let len = text.chars().count() as u64;
        let (min, max) = (self.min_length, self.max_length);
        if min.is_some_and(|min| len < min) || max.is_some_and(|max| len > max) {
            return Err(format!("{name} has {len} characters, {}", bounds(min, max)));
        }
        Ok(())
    }

    fn check_number(&self, n: f64, name: &str) -> Result<(), String> {
        if let Some(min) = self.minimum.filter(|min| n < *min) {
            return Err(format!("{name} must be at least {min}"));
        }
        if let Some(max) = self.maximum.filter(|max| n > *max) {
            return Err(format!("{name} must be at most {max}"));
        }
        Ok(())
    }
}

/// `type`: a name or an array of names.
fn types(value: Option<&Value>, at: &str) -> Result<Vec<Kind>, String> {
    let bad = || {
        format!("{at}.type must be one of object, array, string, number, integer, boolean, null (or an array of them)")
    };
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(name)) => Kind::parse(name).map(|k| vec![k]).ok_or_else(bad),
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| n.as_str().and_then(Kind::parse).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

fn bounds(min: Option<u64>, max: Option<u64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("expected {min} to {max}"),
        (Some(min), None) => format!("expected at least {min}"),
        (None, Some(max)) => format!("expected at most {max}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parameters(&json!({
            "type": "object",
            "properties": {
                "date": {"type": "string", "description": "YYYY-MM-DD", "minLength": 10, "maxLength": 10},
                "party": {"type": "integer", "minimum": 1, "maximum": 12},
                "kind": {"enum": ["checkup", "dental"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "note": {"type": ["string", "null"]}
            },
            "required": ["date"],
            "additionalProperties": false
        }))
        .expect("a valid schema")
    }

    fn check(args: Value) -> Result<(), String> {
        schema().check_arguments(args.as_object().expect("an object"))
    }

    #[test]
    fn good_arguments_pass() {
        assert_eq!(check(json!({"date": "2026-12-07"})), Ok(()));
        let all = json!({"date": "2026-12-07", "party": 3.0, "kind": "dental",
            "tags": ["a", "b"], "note": null});
        assert_eq!(check(all), Ok(()));
    }

    #[test]
    fn each_mismatch_is_named() {
        for (args, error) in [
            (json!({}), "date is required"),
            (json!({"date": 7}), "date must be a string"),
            (
                json!({"date": "soon"}),
                "date has 4 characters, expected 10 to 10",
            ),
            (
                json!({"date": "2026-12-07", "party": 0}),
                "party must be at least 1",
            ),
            (
                json!({"date": "2026-12-07", "party": 13}),
                "party must be at most 12",
            ),
            (
                json!({"date": "2026-12-07", "party": 1.5}),
                "party must be an integer",
            ),
            (
                json!({"date": "2026-12-07", "kind": "x"}),
                "kind must be one of \"checkup\", \"dental\"",
            ),
            (
                json!({"date": "2026-12-07", "tags": [1]}),
                "tags[0] must be a string",
            ),
            (
                json!({"date": "2026-12-07", "tags": ["a", "b", "c"]}),
                "tags has 3 items, expected at most 2",
            ),
            (
                json!({"date": "2026-12-07", "note": 1}),
                "note must be a string or null",
            ),
            (
                json!({"date": "2026-12-07", "who": "me"}),
                "who is not a parameter",
            ),
        ] {
            assert_eq!(check(args.clone()), Err(error.to_owned()), "{args}");
        }
    }

    #[test]
    fn malformed_schemas_are_refused_naming_the_place() {
        for (schema, error) in [
            (json!([]), "parameters must be a JSON Schema object"),
            (
                json!({"type": "string"}),
                "parameters must be an object schema",
            ),
            (json!({}), "parameters must be an object schema"),
            (
                json!({"type": "object", "properties": []}),
                "parameters.properties must be",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "text"}}}),
                "parameters.properties.a.type must be one of",
            ),
            (
                json!({"type": "object", "required": "a"}),
                "parameters.required must be",
            ),
            (
                json!({"type": "object", "properties": {"a": {"maxLength": -1}}}),
                "parameters.properties.a.maxLength must be a whole number",
            ),
            (
                json!({"type": "object", "properties": {"a": {"enum": []}}}),
                "parameters.properties.a.enum",
            ),
        ] {
            let err = Schema::parameters(&schema).expect_err("malformed");
            assert!(err.starts_with(error), "{schema}: {err}");
        }
    }
}
