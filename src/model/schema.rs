//! Validation of structured replies against the JSON Schema subset our tool
//! definitions use: `type` (one or several), `properties`, `required`, `enum`,
//! `items`, `minimum`, `maximum`, `additionalProperties: false`. Hand-written on
//! purpose: a general JSON Schema crate would cost more build time than this subset
//! is worth, and the error text goes back to the model, so we want it short.

use serde_json::Value;

/// Check `value` against `schema`; the error names the path and what was expected.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| type_ok(t, v)) {
            return Err(format!(
                "{path}: expected {}, got {}",
                types.join(" or "),
                short(v)
            ));
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(v)
    {
        let opts: Vec<String> = options.iter().map(Value::to_string).collect();
        return Err(format!(
            "{path}: {} is not one of {}",
            short(v),
            opts.join(", ")
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!("{path}: {n} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!("{path}: {n} is above the maximum {max}"));
        }
    }
    if let Value::Object(map) = v {
        if let Some(Value::Array(required)) = schema.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    return Err(format!("{path}: missing required property `{r}`"));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, child) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, child, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}: unexpected property `{k}`"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(s, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..crate::triage::text::floor_char_boundary(&s, 60)]
        )
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset() {
        let s = json!({"type": "object", "required": ["kind"], "additionalProperties": false,
            "properties": {"kind": {"type": "string", "enum": ["bug", "feature"]}, "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "labels": {"type": "array", "items": {"type": "string"}}}});
        assert!(
            validate(
                &s,
                &json!({"kind": "bug", "confidence": 0.5, "labels": ["x"]})
            )
            .is_ok()
        );
        assert_eq!(
            validate(&s, &json!({"confidence": 0.5})).unwrap_err(),
            "$: missing required property `kind`"
        );
        assert!(
            validate(&s, &json!({"kind": "docs"}))
                .unwrap_err()
                .contains("is not one of")
        );
        assert!(
            validate(&s, &json!({"kind": "bug", "confidence": 2}))
                .unwrap_err()
                .contains("above the maximum")
        );
        assert!(
            validate(&s, &json!({"kind": "bug", "labels": [1]}))
                .unwrap_err()
                .starts_with("$.labels[0]: expected string")
        );
        assert!(
            validate(&s, &json!({"kind": "bug", "x": 1}))
                .unwrap_err()
                .contains("unexpected property `x`")
        );
    }
}
