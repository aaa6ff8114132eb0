//! Real mmdb files for tests, in the GeoIP2 City schema.

use std::path::Path;

use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use maxminddb_writer::Database;
use serde::Serialize;

#[derive(Serialize)]
struct Iso<'a> {
    iso_code: &'a str,
}

#[derive(Serialize)]
struct City<'a> {
    country: Iso<'a>,
    subdivisions: Vec<Iso<'a>>,
}

/// Write a GeoIP2-City database mapping each IPv4 or IPv6 CIDR (not both
/// families in one file) to `(country, subdivision)` (`"SH"`, not `"CN-SH"`).
pub fn write_geoip2(path: &Path, entries: &[(&str, &str, Option<&str>)]) {
    let mut db = Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "GeoIP2-City".into();
    if entries.iter().any(|(cidr, _, _)| cidr.contains(':')) {
        db.metadata.ip_version = IpVersion::V6;
    }
    for (cidr, country, sub) in entries {
        let v = db
            .insert_value(City {
                country: Iso { iso_code: country },
                subdivisions: sub.iter().map(|s| Iso { iso_code: s }).collect(),
            })
            .expect("serialize record");
        db.insert_node(cidr.parse::<IpAddrWithMask>().expect("cidr"), v);
    }
    std::fs::write(path, db.write_to(Vec::new()).expect("write mmdb")).expect("write file");
}
