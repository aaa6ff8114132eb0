//! The admin listener's lock (`admin_token_file`): every endpoint but
//! `/healthz`, `/readyz` and `/gslb/dc/<dc>` (balancers and DNS checkers
//! call those) needs `Authorization: Bearer <token>` with one of the
//! file's tokens.
//!
//! The file holds one token a line (blank lines and `#` comments
//! skipped), so a token rotates with an overlap: add the new one, move the
//! scrapers to it, remove the old one. It is read again every second and
//! on SIGHUP; a file that does not load keeps the tokens in force (logged
//! once per change). Only SHA-256 digests of the tokens are kept, and a
//! presented token is compared with each in constant time.

use std::path::{Path, PathBuf};

use arc_swap::ArcSwap;
use openssl::sha::sha256;

/// Why the token file cannot be used (each message names the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("admin_token_file: {path}: {message}")]
    Read { path: String, message: String },
    #[error("admin_token_file: {path} line {line}: a token is at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces")]
    BadToken { path: String, line: usize },
    #[error("admin_token_file: {path} holds no token")]
    Empty { path: String },
}

/// Shortest token accepted: guessing one over the admin listener's
/// connection limits is out of reach.
const MIN_TOKEN_CHARS: usize = 16;

/// The tokens in force.
#[derive(Debug)]
pub struct AdminTokens {
    file: Option<PathBuf>,
    /// Digests of the tokens in force (empty: the listener is open).
    digests: ArcSwap<Vec<[u8; 32]>>,
    /// Digest of the file's text as last read, to act on changes only.
    seen: ArcSwap<[u8; 32]>,
}

/// Whether `path` is open to anyone: health and GSLB checks.
pub fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/gslb/dc/")
}

fn parse(path: &Path, text: &str) -> Result<Vec<[u8; 32]>, TokenError> {
    let mut digests = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.chars().count() < MIN_TOKEN_CHARS || !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err(TokenError::BadToken {
                path: path.display().to_string(),
                line: n + 1,
            });
        }
        digests.push(sha256(t.as_bytes()));
    }
    if digests.is_empty() {
        return Err(TokenError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(digests)
}

fn read(path: &Path) -> Result<String, TokenError> {
    std::fs::read_to_string(path).map_err(|e| TokenError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl AdminTokens {
    /// The lock at start: `None` leaves the listener open; a file that
    /// cannot be read or holds no valid token is an error.
    pub fn open(file: Option<&Path>) -> Result<Self, TokenError> {
        let (digests, seen) = match file {
            Some(p) => {
                let text = read(p)?;
                (parse(p, &text)?, sha256(text.as_bytes()))
            }
            None => (Vec::new(), [0; 32]),
        };
        Ok(AdminTokens {
            file: file.map(Path::to_owned),
            digests: ArcSwap::from_pointee(digests),
            seen: ArcSwap::from_pointee(seen),
        })
    }

    /// Whether a token is required.
    pub fn locked(&self) -> bool {
        self.file.is_some()
    }

    /// Read the file again; swap in its tokens if it changed and loads.
    pub fn reload(&self) {
        let Some(p) = &self.file else { return };
        let text = match read(p) {
            Ok(t) => t,
            Err(e) => {
                let gone = [0xff; 32];
                if **self.seen.load() != gone {
                    self.seen.store(gone.into());
                    tracing::warn!(error = %e, "admin tokens not reloaded; the tokens in force are kept");
                }
                return;
            }
        };
        let digest = sha256(text.as_bytes());
        if **self.seen.load() == digest {
            return;
        }
        self.seen.store(digest.into());
        match parse(p, &text) {
            Ok(d) => {
                let n = d.len();
                self.digests.store(d.into());
                tracing::info!(tokens = n, "admin tokens reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin tokens not reloaded; the tokens in force are kept")
            }
        }
    }

    /// Whether a request with this `Authorization` value may see `path`.
    pub fn allows(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        if !self.locked() || open_path(path) {
            return true;
        }
        let Some(token) = authorization.and_then(bearer) else {
            return false;
        };
        let presented = sha256(token);
        // Every digest is compared, each in constant time.
        self.digests
            .load()
            .iter()
            .fold(false, |ok, d| openssl::memcmp::eq(d, &presented) | ok)
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = v.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_bearer_token_opens_what_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(
            &f,
            "# ops\nfirst-token-0123456789\n\nsecond-token-0123456789\n",
        )
        .unwrap();
        let t = AdminTokens::open(Some(&f)).unwrap();
        assert!(t.allows("/healthz", None));
        assert!(t.allows("/readyz", None));
        assert!(t.allows("/gslb/dc/bj-a", None));
        assert!(!t.allows("/status", None));
        assert!(!t.allows("/metrics", Some(b"Bearer wrong-token-0123456789")));
        assert!(!t.allows("/metrics", Some(b"Basic first-token-0123456789")));
        assert!(t.allows("/metrics", Some(b"Bearer first-token-0123456789")));
        assert!(t.allows("/", Some(b"bearer second-token-0123456789")));
        assert!(!t.allows("/nope", Some(b"Bearer ")));

        // A bad file keeps the tokens in force; a good one replaces them.
        std::fs::write(&f, "short\n").unwrap();
        t.reload();
        assert!(t.allows("/status", Some(b"Bearer first-token-0123456789")));
        std::fs::write(&f, "third-token-0123456789\n").unwrap();
        t.reload();
        assert!(!t.allows("/status", Some(b"Bearer first-token-0123456789")));
        assert!(t.allows("/status", Some(b"Bearer third-token-0123456789")));

        let open = AdminTokens::open(None).unwrap();
        assert!(open.allows("/status", None));
        std::fs::write(&f, "# none\n").unwrap();
        let e = AdminTokens::open(Some(&f)).unwrap_err();
        assert!(e.to_string().contains("holds no token"), "{e}");
    }
}
