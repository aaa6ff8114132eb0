//! The key -> JSON-text map under the prefix, and its document form: a YAML
//! (or JSON) mapping of the same keys to structured values.

use std::collections::BTreeMap;
use std::path::Path;

/// Keys relative to the prefix -> JSON text, in key order.
pub type Kv = BTreeMap<String, String>;

/// Why a topology document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a YAML/JSON mapping of key -> value: {message}")]
    Parse { path: String, message: String },
}

/// Parse a topology document (YAML; JSON is accepted as YAML).
pub fn parse_document(text: &str, origin: &str) -> Result<Kv, DocumentError> {
    let map: BTreeMap<String, serde_json::Value> =
        serde_yaml_ng::from_str(text).map_err(|e| DocumentError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k.trim_matches('/').to_owned(), v.to_string()))
        .collect())
}

/// Read and parse a topology document from disk.
pub fn read_document(path: &Path) -> Result<Kv, DocumentError> {
    let text = std::fs::read_to_string(path).map_err(|source| DocumentError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_document(&text, &path.display().to_string())
}

/// A document (YAML) holding `kv`, values as structures.
pub fn to_document(kv: &Kv) -> String {
    let map: BTreeMap<&str, serde_json::Value> = kv
        .iter()
        .map(|(k, v)| {
            let v =
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
            (k.as_str(), v)
        })
        .collect();
    serde_yaml_ng::to_string(&map).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_documents() {
        let kv = parse_document("cluster: {shards: 4}\n/routes/a/: {x: [1, 2]}\n", "t").unwrap();
        assert_eq!(kv["cluster"], r#"{"shards":4}"#);
        assert_eq!(kv["routes/a"], r#"{"x":[1,2]}"#);
        let kv2 = parse_document(r#"{"cluster": {"shards": 4}}"#, "t").unwrap();
        assert_eq!(kv2["cluster"], kv["cluster"]);
        let back = parse_document(&to_document(&kv), "t").unwrap();
        assert_eq!(back, kv);
        assert!(parse_document("- a\n- b\n", "t").is_err());
    }
}
