//! Control-plane figures: the time to validate, index and publish a large
//! topology in-process, and the time from an etcd drain-key write to a
//! running gateway applying it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use config_center::{ConfigCenter, Kv};
use serde_json::json;

use crate::peers::{self, GatewayPorts, Programs, Source};
use crate::procs::{free_ports, Pin};

/// The control-plane topology: `units` shard units running two services,
/// and `routes` routes (`unit_router::fixture::sized_kv`).
pub fn large_kv(units: usize, routes: usize) -> Kv {
    unit_router::fixture::sized_kv(units, 2, routes)
}

/// Times to validate, index and publish `kv`, `reps` times (fresh epoch each).
pub fn apply_times(kv: &Kv, reps: usize) -> Result<Vec<Duration>> {
    let center = ConfigCenter::new(None);
    let mut times = Vec::with_capacity(reps);
    for epoch in 1..=reps {
        let kv = kv.clone();
        let t = Instant::now();
        center
            .apply(epoch as i64, kv)
            .context("the large topology was refused")?;
        times.push(t.elapsed());
    }
    Ok(times)
}

/// Drain and undrain times (write -> applied), `reps` of each.
pub struct DrainTimes {
    pub drain: Vec<Duration>,
    pub undrain: Vec<Duration>,
}

/// Start etcd and a unitgate on it, then time `reps` drains and undrains
/// of dc bj-a, each from the etcd write to the gateway's admin
/// `/gslb/dc/bj-a` answering the new state (polled without pause).
pub async fn drain_times(
    p: &Programs,
    dir: &Path,
    origin: u16,
    reps: usize,
    pin: Pin,
) -> Result<DrainTimes> {
    let etcd = unitgate_tests::Etcd::start().await?;
    let mut client = etcd.client().await?;
    let doc = peers::topology_yaml(origin);
    let kv = config_center::kv::parse_document(&doc, "bench topology")?;
    for (k, v) in kv {
        client.put(format!("/unitgate/{k}"), v, None).await?;
    }
    let ports = free_ports(3)?;
    let ports = GatewayPorts {
        public: ports[0],
        internal: ports[1],
        admin: ports[2],
    };
    let endpoint = etcd.endpoint();
    let mut gw = peers::unitgate(
        p,
        dir,
        "unitgate-etcd",
        &ports,
        Source::Etcd(&endpoint),
        "",
        pin,
    )?;
    let admin: SocketAddr = ([127, 0, 0, 1], ports.admin).into();
    crate::http::wait_status(admin, "/readyz", &[], 200, Duration::from_secs(30)).await?;
    gw.check_alive()?;
    let key = "/unitgate/drain/dc/bj-a";
    let mut out = DrainTimes {
        drain: Vec::new(),
        undrain: Vec::new(),
    };
    for _ in 0..reps {
        let t = Instant::now();
        client
            .put(
                key,
                json!({"reason": "bench", "by": "ugbench"}).to_string(),
                None,
            )
            .await?;
        wait_gslb(admin, 503).await?;
        out.drain.push(t.elapsed());
        let t = Instant::now();
        client.delete(key, None).await?;
        wait_gslb(admin, 200).await?;
        out.undrain.push(t.elapsed());
    }
    Ok(out)
}

async fn wait_gslb(admin: SocketAddr, want: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let r = crate::http::get(admin, "/gslb/dc/bj-a", &[], Duration::from_secs(2)).await?;
        if r.status == want {
            return Ok(());
        }
    }
    anyhow::bail!("the gateway did not answer {want} on /gslb/dc/bj-a within 10 s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_large_topology_is_valid_and_the_size_asked() {
        let kv = large_kv(50, 500);
        assert_eq!(kv.keys().filter(|k| k.starts_with("units/")).count(), 50);
        assert_eq!(kv.keys().filter(|k| k.starts_with("routes/")).count(), 500);
        let times = apply_times(&kv, 2).unwrap();
        assert_eq!(times.len(), 2);
    }
}
