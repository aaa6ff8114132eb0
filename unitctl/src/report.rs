//! What `explain` says, field by field: printed as aligned text lines
//! (`route     orders (policy shard, ...)`), or with `-o json` as one JSON
//! object whose keys are the fields (a field said more than once, such as
//! `quota`, is a list).

use serde_json::{Map, Value};

use crate::cli::Output;

/// The fields said so far, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// (field, value, whether it continues the line before).
    fields: Vec<(&'static str, String, bool)>,
}

impl Report {
    /// Say `value` under `field` (`""`: one more line of the field before).
    pub fn add(&mut self, field: &'static str, value: impl Into<String>) {
        let (field, continued) = match field {
            "" => (self.fields.last().map_or("note", |(f, ..)| *f), true),
            f => (f, false),
        };
        self.fields.push((field, value.into(), continued));
    }

    /// Print it as `output` says.
    pub fn print(&self, output: Output) {
        match output {
            Output::Text => {
                for (field, value, continued) in &self.fields {
                    let shown = if *continued { "" } else { field };
                    println!("{shown:<9} {value}");
                }
            }
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&self.json()).unwrap_or_default()
            ),
        }
    }

    fn json(&self) -> Value {
        let mut out = Map::new();
        for (field, value, _) in &self.fields {
            let v = Value::String(value.clone());
            match out.get_mut(*field) {
                None => {
                    out.insert((*field).to_owned(), v);
                }
                Some(Value::Array(list)) => list.push(v),
                Some(first) => *first = Value::Array(vec![first.take(), v]),
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_lists_and_continuations_join_their_field() {
        let mut r = Report::default();
        r.add("route", "orders");
        r.add("auth", "required");
        r.add("", "requires claim scope");
        r.add("quota", "a");
        r.add("quota", "b");
        assert_eq!(
            r.json(),
            serde_json::json!({
                "route": "orders",
                "auth": ["required", "requires claim scope"],
                "quota": ["a", "b"],
            })
        );
    }
}
