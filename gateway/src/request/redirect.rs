//! The plain HTTP listener beside an HTTPS public one: requests for the
//! hosts listed in `https_redirect` are answered with a 308 to the same
//! path over HTTPS (method and body kept by the client); others are served
//! as on the public listener.

/// Which hosts go to HTTPS, and where it listens.
#[derive(Debug, Clone)]
pub struct HttpsRedirect {
    hosts: Vec<String>,
    /// The HTTPS port (left out of the URL when 443).
    port: u16,
}

impl HttpsRedirect {
    pub fn new(hosts: Vec<String>, port: u16) -> Self {
        HttpsRedirect {
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            port,
        }
    }

    /// `*`, or a name as a certificate's names cover hosts.
    fn covers(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|p| p == "*" || crate::tls::store::name_covers(p, host))
    }

    /// The `Location` for a request to `host` (a checked Host value, maybe
    /// with a port) and `path_and_query`, if it is redirected.
    pub fn location(&self, host: &str, path_and_query: &str) -> Option<String> {
        if self.hosts.is_empty() {
            return None;
        }
        let name = if host.starts_with('[') {
            // An IPv6 literal, with or without a port.
            match host.find(']') {
                Some(end) => &host[..=end],
                None => return None,
            }
        } else {
            host.rsplit_once(':').map_or(host, |(n, _)| n)
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || !self.covers(&name) {
            return None;
        }
        Some(match self.port {
            443 => format!("https://{name}{path_and_query}"),
            p => format!("https://{name}:{p}{path_and_query}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_hosts_are_redirected_with_their_path() {
        let r = HttpsRedirect::new(vec!["api.example.com".into(), "*.shop.test".into()], 443);
        assert_eq!(
            r.location("API.example.com:80", "/a?b=1").as_deref(),
            Some("https://api.example.com/a?b=1")
        );
        assert_eq!(
            r.location("eu.shop.test", "/").as_deref(),
            Some("https://eu.shop.test/")
        );
        assert_eq!(r.location("shop.test", "/"), None);
        assert_eq!(r.location("other.example.com", "/"), None);
        let all = HttpsRedirect::new(vec!["*".into()], 8443);
        assert_eq!(
            all.location("x.test", "/p").as_deref(),
            Some("https://x.test:8443/p")
        );
        assert_eq!(
            all.location("[::1]:80", "/").as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(
            all.location("[::1]", "/").as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(
            r.location("api.example.com.", "/").as_deref(),
            Some("https://api.example.com/")
        );
    }
}
