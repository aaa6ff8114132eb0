//! The routing-token and dye keys in force, reloaded without a restart:
//! the secrets file is read again when its contents change (checked every
//! second) and on SIGHUP. A file that does not load keeps the keys in
//! force; the error is logged and shown in `/status` until a good file
//! replaces it. Keys from the environment are fixed for the process.
//! Tokens and dyes are checked against every accepted kid, so keys rotate
//! with an overlap: add the new key, make it active, drop the old one once
//! the tokens it signed have expired.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use unit_router::Keyring;

/// The keys in force, and where they come from.
#[derive(Debug)]
pub struct LiveKeys {
    current: ArcSwap<Keyring>,
    /// The secrets file (`None`: the environment, never reloaded).
    source: Option<PathBuf>,
    /// What was last read of the file, and the error it gave if it did
    /// not load (what `/status` shows).
    read: ArcSwap<Read>,
    /// A reload is running (the ticker's and SIGHUP's never overlap, so
    /// an older read never replaces a newer one).
    reloading: AtomicBool,
}

/// The last read of the secrets file.
#[derive(Default)]
struct Read {
    /// The file as last read (`None`: it could not be read).
    text: Option<String>,
    error: Option<String>,
    /// When the keys in force were loaded (Unix seconds).
    loaded_at: i64,
}

impl std::fmt::Debug for Read {
    // Never the file's text: it is key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read")
            .field("bytes", &self.text.as_ref().map(String::len))
            .field("error", &self.error)
            .field("loaded_at", &self.loaded_at)
            .finish()
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file is as it was: nothing to do.
    Unchanged,
    /// New keys in force.
    Swapped,
    /// The file changed but does not load: the keys in force are kept.
    Refused(String),
}

impl LiveKeys {
    /// The keys at start: from the file at `path` (read once), else from
    /// the environment.
    pub fn start(
        path: Option<&Path>,
        env: &HashMap<String, String>,
        now: i64,
    ) -> Result<Self, String> {
        let Some(p) = path else {
            return Ok(Self::with(super::load(None, env)?, None, None, now));
        };
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("--secrets {}: {e}", p.display()))?;
        let keys = super::parse(p, &text)?;
        Ok(Self::with(keys, Some(p.to_owned()), Some(text), now))
    }

    /// Keys that are never reloaded.
    pub fn fixed(keys: Keyring) -> Self {
        Self::with(keys, None, None, 0)
    }

    fn with(keys: Keyring, source: Option<PathBuf>, text: Option<String>, now: i64) -> Self {
        LiveKeys {
            current: ArcSwap::from_pointee(keys),
            source,
            read: ArcSwap::from_pointee(Read {
                text,
                error: None,
                loaded_at: now,
            }),
            reloading: AtomicBool::new(false),
        }
    }

    /// The keys in force (cheap: no lock, no copy).
    pub fn load(&self) -> Guard<Arc<Keyring>> {
        self.current.load()
    }

    /// Read the secrets file again; swap the keys if it changed and loads.
    pub fn reload(&self, now: i64) -> Reloaded {
        let Some(path) = &self.source else {
            return Reloaded::Unchanged;
        };
        if self.reloading.swap(true, Ordering::SeqCst) {
            // The other reload reads the file too.
            return Reloaded::Unchanged;
        }
        let r = self.reload_from(path, now);
        self.reloading.store(false, Ordering::SeqCst);
        r
    }

    fn reload_from(&self, path: &Path, now: i64) -> Reloaded {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("--secrets {}: {e}", path.display()));
        let last = self.read.load();
        if let Ok(t) = &text {
            if last.text.as_deref() == Some(t.as_str()) {
                return Reloaded::Unchanged;
            }
        }
        let loaded = text.clone().and_then(|t| super::parse(path, &t));
        match loaded {
            Ok(keys) => {
                tracing::info!(
                    active = keys.active_kid(),
                    accepted = ?keys.kids().collect::<Vec<_>>(),
                    "routing-token and dye keys reloaded"
                );
                self.current.store(Arc::new(keys));
                self.read.store(Arc::new(Read {
                    text: text.ok(),
                    error: None,
                    loaded_at: now,
                }));
                Reloaded::Swapped
            }
            Err(e) => {
                // Said once per content of the file, not every second.
                let said = last.error.as_deref() == Some(e.as_str());
                if !said {
                    tracing::error!(error = %e, "secrets file not loaded; the keys in force are kept");
                }
                self.read.store(Arc::new(Read {
                    // An unreadable file reads as nothing: the same text
                    // coming back is a change, and clears the error.
                    text: text.ok(),
                    error: Some(e.clone()),
                    loaded_at: last.loaded_at,
                }));
                Reloaded::Refused(e)
            }
        }
    }

    /// For `/status`: the kids, never key material.
    pub fn status(&self) -> serde_json::Value {
        let keys = self.load();
        let read = self.read.load();
        serde_json::json!({
            "active_kid": keys.active_kid(),
            "accepted_kids": keys.kids().collect::<Vec<_>>(),
            "source": self.source.as_ref().map_or("environment".to_owned(), |p| p.display().to_string()),
            "loaded_at": read.loaded_at,
            "reload_error": read.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn file(active: &str, kids: &[(&str, u8)]) -> String {
        let mut s = format!("active = \"{active}\"\n[keys]\n");
        for (kid, seed) in kids {
            let k = base64::engine::general_purpose::STANDARD.encode([*seed; 32]);
            s.push_str(&format!("{kid} = \"{k}\"\n"));
        }
        s
    }

    #[test]
    fn a_changed_file_swaps_the_keys_and_a_bad_one_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.toml");
        std::fs::write(&p, file("k1", &[("k1", 1)])).unwrap();
        let live = LiveKeys::start(Some(&p), &Default::default(), 100).unwrap();
        assert_eq!(live.reload(101), Reloaded::Unchanged);
        let id = live.load().id();

        std::fs::write(&p, file("k2", &[("k1", 1), ("k2", 2)])).unwrap();
        assert_eq!(live.reload(102), Reloaded::Swapped);
        assert_eq!(live.load().active_kid(), "k2");
        assert_ne!(
            live.load().id(),
            id,
            "a new keyring: cached tokens are checked again"
        );
        let s = live.status();
        assert_eq!(s["accepted_kids"], serde_json::json!(["k1", "k2"]));
        assert_eq!(s["loaded_at"], 102);
        assert!(!s
            .to_string()
            .contains(&base64::engine::general_purpose::STANDARD.encode([2u8; 32])));

        std::fs::write(&p, "active = \"k3\"\n[keys]\nk3 = \"c2hvcnQ=\"\n").unwrap();
        assert!(
            matches!(live.reload(103), Reloaded::Refused(e) if e.contains("shorter than 32 bytes"))
        );
        assert_eq!(live.load().active_kid(), "k2", "kept");
        assert!(live.status()["reload_error"]
            .as_str()
            .unwrap()
            .contains("shorter"));
        // Fixed: loads, and the error is gone.
        std::fs::write(&p, file("k3", &[("k2", 2), ("k3", 3)])).unwrap();
        assert_eq!(live.reload(104), Reloaded::Swapped);
        assert!(live.status()["reload_error"].is_null());
        // Gone: the keys in force stay; back as it was: the error clears.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(live.reload(105), Reloaded::Refused(_)));
        assert_eq!(live.load().active_kid(), "k3");
        std::fs::write(&p, text).unwrap();
        assert_eq!(live.reload(106), Reloaded::Swapped);
        assert!(live.status()["reload_error"].is_null());
        assert!(
            !format!("{live:?}").contains("base64:")
                && !format!("{live:?}")
                    .contains(&base64::engine::general_purpose::STANDARD.encode([3u8; 32]))
        );
    }
}
