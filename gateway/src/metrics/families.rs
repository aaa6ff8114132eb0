//! The gateway's metric families and their rendering for Prometheus.
//! Every family is registered once (a duplicate name is an error) and a
//! scrape names every one of them: a family with no series yet (no shed,
//! no quota refused) is rendered as its `# HELP` and `# TYPE` lines, so
//! dashboards and alerts can be checked against what a running gateway
//! exports. A scrape collects each family once, so a family cannot be
//! both rendered and listed as empty (a series removed meanwhile).

use std::cell::RefCell;

use pingora_prometheus::prometheus::core::Collector;
use pingora_prometheus::prometheus::proto::MetricType;
use pingora_prometheus::prometheus::{self, Encoder, Registry, TextEncoder};

/// Families being registered (while the metrics are made).
pub struct Families {
    /// Refuses a second family of one name.
    registry: Registry,
    listed: RefCell<Vec<Box<dyn Collector>>>,
}

/// The families, made.
pub struct Rendered {
    listed: Vec<Box<dyn Collector>>,
}

impl Families {
    pub fn new() -> Self {
        Families {
            registry: Registry::new(),
            listed: RefCell::new(Vec::new()),
        }
    }

    /// Register `c` (rendered even with no series).
    pub fn register<C: Collector + Clone + 'static>(&self, c: &C) -> prometheus::Result<()> {
        self.registry.register(Box::new(c.clone()))?;
        self.listed.borrow_mut().push(Box::new(c.clone()));
        Ok(())
    }

    /// Register a collector that is not `Clone` (the process's).
    pub fn register_boxed(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        for d in c.desc() {
            if self.listed_has(&d.fq_name) {
                return Err(prometheus::Error::AlreadyReg);
            }
        }
        self.listed.borrow_mut().push(c);
        Ok(())
    }

    fn listed_has(&self, name: &str) -> bool {
        self.listed
            .borrow()
            .iter()
            .any(|c| c.desc().iter().any(|d| d.fq_name == name))
    }

    pub fn done(self) -> Rendered {
        Rendered {
            listed: self.listed.into_inner(),
        }
    }
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

impl Rendered {
    /// The text exposition: every family with series (by name, its
    /// series by label values), then the families without (help and type
    /// only); each family collected once.
    pub fn render(&self) -> Vec<u8> {
        let (mut full, mut empty) = (Vec::new(), Vec::new());
        for c in &self.listed {
            for mut mf in c.collect() {
                if mf.get_metric().is_empty() {
                    empty.push(mf);
                } else {
                    mf.mut_metric().sort_by(|a, b| {
                        let values = |m: &prometheus::proto::Metric| {
                            m.get_label()
                                .iter()
                                .map(|l| l.value().to_owned())
                                .collect::<Vec<_>>()
                        };
                        values(a).cmp(&values(b))
                    });
                    full.push(mf);
                }
            }
        }
        full.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&full, &mut out);
        for mf in empty {
            let help = mf.help().replace('\\', r"\\").replace('\n', r"\n");
            let name = mf.name();
            let t = type_name(mf.get_field_type());
            out.extend_from_slice(format!("# HELP {name} {help}\n# TYPE {name} {t}\n").as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_prometheus::prometheus::{IntCounterVec, Opts};

    #[test]
    fn a_family_without_series_is_named_with_its_type() {
        let f = Families::new();
        let c = IntCounterVec::new(Opts::new("x_total", "Xs by y"), &["y"]).unwrap();
        f.register(&c).unwrap();
        assert!(f.register(&c).is_err(), "a duplicate is refused");
        let r = f.done();
        let text = String::from_utf8(r.render()).unwrap();
        assert_eq!(text, "# HELP x_total Xs by y\n# TYPE x_total counter\n");
        c.with_label_values(&["a"]).inc();
        let text = String::from_utf8(r.render()).unwrap();
        assert!(text.contains("x_total{y=\"a\"} 1"), "{text}");
        assert_eq!(text.matches("# TYPE x_total").count(), 1, "{text}");
    }
}
