//! Why a request goes where it goes: the reason of a routing decision, as
//! carried in the dye (`ug.reason`), logs and metrics.

/// Why the request goes to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Shard,
    Region,
    Center,
    Local,
    Failover,
    Drain,
    Return,
}

impl Reason {
    /// The wire name (`ug.reason`, logs, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Shard => "shard",
            Reason::Region => "region",
            Reason::Center => "center",
            Reason::Local => "local",
            Reason::Failover => "failover",
            Reason::Drain => "drain",
            Reason::Return => "return",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "shard" => Reason::Shard,
            "region" => Reason::Region,
            "center" => Reason::Center,
            "local" => Reason::Local,
            "failover" => Reason::Failover,
            "drain" => Reason::Drain,
            "return" => Reason::Return,
            _ => return None,
        })
    }

    /// Whether the request left (or is returning to) its home: it carries a dye.
    pub fn is_shuttle(self) -> bool {
        matches!(self, Reason::Failover | Reason::Drain | Reason::Return)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for r in [
            Reason::Shard,
            Reason::Region,
            Reason::Center,
            Reason::Local,
            Reason::Failover,
            Reason::Drain,
            Reason::Return,
        ] {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("elsewhere"), None);
    }
}
