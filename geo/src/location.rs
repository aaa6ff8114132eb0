//! A location held inline (no allocation): `CN` and `CN-SH`.

/// ISO 3166-1 alpha-2 country and ISO 3166-2 subdivision of an address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Location {
    country: [u8; 2],
    has_country: bool,
    /// `CC-XXX`, up to 6 bytes.
    sub: [u8; 6],
    sub_len: u8,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("country", &self.country())
            .field("subdivision", &self.subdivision())
            .finish()
    }
}

fn code(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Location {
    /// A location from a country code and a subdivision code (either
    /// `SH` or `CN-SH`); malformed codes are dropped.
    pub fn new(country: Option<&str>, subdivision: Option<&str>) -> Self {
        let mut l = Location::default();
        if let Some(c) = country.filter(|c| c.len() == 2 && code(c, 2)) {
            l.country.copy_from_slice(c.to_ascii_uppercase().as_bytes());
            l.has_country = true;
        }
        if let (true, Some(s)) = (l.has_country, subdivision) {
            let s = s.split_once('-').map_or(s, |(_, tail)| tail);
            if code(s, 3) {
                l.sub[..2].copy_from_slice(&l.country);
                l.sub[2] = b'-';
                for (d, b) in l.sub[3..].iter_mut().zip(s.bytes()) {
                    *d = b.to_ascii_uppercase();
                }
                l.sub_len = 3 + s.len() as u8;
            }
        }
        l
    }

    /// `CN`
    pub fn country(&self) -> Option<&str> {
        self.has_country
            .then(|| std::str::from_utf8(&self.country).ok())
            .flatten()
    }

    /// `CN-SH`
    pub fn subdivision(&self) -> Option<&str> {
        (self.sub_len > 0)
            .then(|| std::str::from_utf8(&self.sub[..usize::from(self.sub_len)]).ok())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_normalized_and_checked() {
        let l = Location::new(Some("cn"), Some("sh"));
        assert_eq!((l.country(), l.subdivision()), (Some("CN"), Some("CN-SH")));
        let l = Location::new(Some("CN"), Some("CN-BJ"));
        assert_eq!(l.subdivision(), Some("CN-BJ"));
        let l = Location::new(Some("USA"), Some("CA"));
        assert_eq!((l.country(), l.subdivision()), (None, None));
        let l = Location::new(Some("US"), Some("toolong"));
        assert_eq!((l.country(), l.subdivision()), (Some("US"), None));
        assert_eq!(Location::new(None, None).country(), None);
    }
}
