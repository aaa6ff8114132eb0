//! Routing-token and dye HMAC keys, from a local TOML file or the
//! environment, never from etcd.
//!
//! ```toml
//! active = "k2"            # the signing kid
//! [keys]                   # every kid accepted for verification
//! k1 = "base64:..."        # >= 32 bytes, base64 (standard) or hex:
//! k2 = "hex:..."
//! ```
//! Environment: `UNITGATE_KEYS="k1=base64:...,k2=hex:..."` and
//! `UNITGATE_ACTIVE_KID=k2`. The file is reloaded while the gateway runs
//! ([`live`]).

pub mod live;

pub use live::LiveKeys;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use unit_router::Keyring;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    active: String,
    keys: BTreeMap<String, String>,
}

fn decode_key(kid: &str, v: &str) -> Result<Vec<u8>, String> {
    let v = v.trim();
    let bytes = if let Some(h) = v.strip_prefix("hex:") {
        if h.len() % 2 != 0 {
            return Err(format!("key {kid}: odd-length hex"));
        }
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| format!("key {kid}: not hex"))?
    } else {
        let b = v.strip_prefix("base64:").unwrap_or(v);
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| format!("key {kid}: not base64 (prefix hex: for hex keys)"))?
    };
    Ok(bytes)
}

fn keyring(active: &str, keys: BTreeMap<String, String>) -> Result<Keyring, String> {
    let mut out = BTreeMap::new();
    for (kid, v) in keys {
        out.insert(kid.clone(), decode_key(&kid, &v)?);
    }
    Keyring::new(active, out).map_err(|e| e.to_string())
}

/// The keyring of a secrets file's `text` (read from `path`).
fn parse(path: &Path, text: &str) -> Result<Keyring, String> {
    let f: SecretsFile = toml::from_str(text)
        .map_err(|e| format!("--secrets {}: {}", path.display(), e.message()))?;
    keyring(&f.active, f.keys).map_err(|e| format!("--secrets {}: {e}", path.display()))
}

/// Load the keyring from `path`, else from the environment.
pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Keyring, String> {
    if let Some(p) = path {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("--secrets {}: {e}", p.display()))?;
        return parse(p, &text);
    }
    let Some(list) = env.get("UNITGATE_KEYS") else {
        return Err("no routing-token keys: give --secrets PATH or set UNITGATE_KEYS and UNITGATE_ACTIVE_KID".into());
    };
    let mut keys = BTreeMap::new();
    for item in list.split(',').filter(|s| !s.trim().is_empty()) {
        let (kid, v) = item
            .split_once('=')
            .ok_or_else(|| format!("UNITGATE_KEYS: {item:?} is not kid=key"))?;
        keys.insert(kid.trim().to_owned(), v.to_owned());
    }
    let active = env
        .get("UNITGATE_ACTIVE_KID")
        .cloned()
        .or_else(|| {
            (keys.len() == 1)
                .then(|| keys.keys().next().cloned())
                .flatten()
        })
        .ok_or("UNITGATE_ACTIVE_KID is not set")?;
    keyring(&active, keys).map_err(|e| format!("UNITGATE_KEYS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        std::fs::write(
            &p,
            format!(
                "active = \"k2\"\n[keys]\nk1 = \"{k}\"\nk2 = \"hex:{}\"\n",
                "ab".repeat(32)
            ),
        )
        .unwrap();
        assert_eq!(load(Some(&p), &HashMap::new()).unwrap().active_kid(), "k2");
        std::fs::write(&p, "active = \"k1\"\n[keys]\nk1 = \"c2hvcnQ=\"\n").unwrap();
        assert!(load(Some(&p), &HashMap::new())
            .unwrap_err()
            .contains("shorter than 32 bytes"));
        let env: HashMap<_, _> = [("UNITGATE_KEYS".to_owned(), format!("a={k}"))].into();
        assert_eq!(load(None, &env).unwrap().active_kid(), "a");
        assert!(load(None, &HashMap::new())
            .unwrap_err()
            .contains("no routing-token keys"));
    }
}
