//! Real mmdb files, written here, read through the public API.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;

use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use maxminddb_writer::Database;
use serde::Serialize;
use unitgate_geo::{GeoLookup, MmdbGeo};

#[derive(Serialize)]
struct Iso {
    iso_code: &'static str,
}
#[derive(Serialize)]
struct City {
    country: Iso,
    subdivisions: Vec<Iso>,
}
#[derive(Serialize)]
struct CountryOnly {
    country: Iso,
}
#[derive(Serialize)]
struct Flat {
    country_code: &'static str,
}

fn geoip2(path: &Path, v6: bool) {
    let mut db = Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "GeoIP2-City".into();
    if v6 {
        db.metadata.ip_version = IpVersion::V6;
    }
    let sh = db
        .insert_value(City {
            country: Iso { iso_code: "CN" },
            subdivisions: vec![Iso { iso_code: "SH" }],
        })
        .unwrap();
    let cn = db
        .insert_value(CountryOnly {
            country: Iso { iso_code: "CN" },
        })
        .unwrap();
    let jp = db
        .insert_value(City {
            country: Iso { iso_code: "JP" },
            subdivisions: vec![],
        })
        .unwrap();
    let (a, b, c) = if v6 {
        ("2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:3::/48")
    } else {
        ("10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16")
    };
    db.insert_node(a.parse::<IpAddrWithMask>().unwrap(), sh);
    db.insert_node(b.parse::<IpAddrWithMask>().unwrap(), cn);
    db.insert_node(c.parse::<IpAddrWithMask>().unwrap(), jp);
    std::fs::write(path, db.write_to(Vec::new()).unwrap()).unwrap();
}

fn flat(path: &Path, code: &'static str) {
    let mut db = Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "geo-whois-asn-country".into();
    let v = db.insert_value(Flat { country_code: code }).unwrap();
    db.insert_node("10.1.0.0/16".parse::<IpAddrWithMask>().unwrap(), v);
    std::fs::write(path, db.write_to(Vec::new()).unwrap()).unwrap();
}

fn at(g: &MmdbGeo, ip: &str) -> (Option<String>, Option<String>) {
    let ip: IpAddr = ip.parse().unwrap();
    match g.locate(ip) {
        Some(l) => (
            l.country().map(str::to_owned),
            l.subdivision().map(str::to_owned),
        ),
        None => (None, None),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn geoip2_schema_v4_and_v6() {
    let dir = tempfile::tempdir().unwrap();
    for v6 in [false, true] {
        let p = dir.path().join(format!("city-{v6}.mmdb"));
        geoip2(&p, v6);
        let g = MmdbGeo::open(&p).unwrap();
        let (a, b, c, none) = if v6 {
            (
                "2001:db8:1::7",
                "2001:db8:2::7",
                "2001:db8:3::7",
                "2001:db8:9::7",
            )
        } else {
            ("10.1.2.3", "10.2.2.3", "10.3.2.3", "10.9.2.3")
        };
        assert_eq!(at(&g, a), (s("CN"), s("CN-SH")));
        assert_eq!(at(&g, b), (s("CN"), None));
        assert_eq!(at(&g, c), (s("JP"), None));
        assert_eq!(at(&g, none), (None, None));
        assert_eq!(g.describe().0, "GeoIP2-City");
    }
}

#[test]
fn flat_country_code_schema_and_hot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("country.mmdb");
    flat(&p, "KR");
    let g = MmdbGeo::open(&p).unwrap();
    assert_eq!(at(&g, "10.1.0.1"), (s("KR"), None));
    // An IPv6 address in an IPv4-only database is unknown, not an error.
    assert_eq!(at(&g, "2001:db8::1"), (None, None));
    assert!(!g.reload_if_changed().unwrap());

    // A file replaced by rename (as updaters do) is picked up. The mtime is
    // pushed forward so coarse file-system clocks still see a change.
    let tmp = dir.path().join("new.mmdb");
    flat(&tmp, "JP");
    std::fs::rename(&tmp, &p).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(g.reload_if_changed().unwrap());
    assert_eq!(at(&g, "10.1.0.1"), (s("JP"), None));

    // A broken file keeps the last good database in force.
    std::fs::write(&p, b"not an mmdb").unwrap();
    let err = g.reload_if_changed().unwrap_err();
    assert!(err.to_string().contains("country.mmdb"), "{err}");
    assert_eq!(at(&g, "10.1.0.1"), (s("JP"), None));
    assert!(MmdbGeo::open(dir.path().join("missing.mmdb")).is_err());
}
