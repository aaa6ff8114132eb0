//! Reading and writing the topology in etcd (or reading it from a file),
//! with errors said plainly.

use anyhow::{anyhow, Context, Result};
use config_center::etcd::{self, normalize_prefix, EtcdOptions};
use config_center::etcd_access::EtcdAccess;
use config_center::etcd_check::{describe, refused};
use config_center::kv::{read_document, Kv};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use crate::cli::Target;

/// An etcd connection scoped to the prefix.
pub struct Store {
    client: Client,
    endpoints: String,
    pub prefix: String,
}

fn unreachable(endpoints: &str, e: etcd_client::Error) -> anyhow::Error {
    let detail = describe(&e);
    if refused(&e) {
        anyhow!("etcd at {endpoints} refused the connection: {detail}")
    } else {
        anyhow!("cannot reach etcd at {endpoints}: {detail}")
    }
}

impl Store {
    pub async fn open(t: &Target) -> Result<Self> {
        let endpoints = t.etcd.join(",");
        let files = t.access();
        files.check_endpoints(&t.etcd).map_err(|e| anyhow!("{e}"))?;
        let access = EtcdAccess::load(files).map_err(|e| anyhow!("{e}"))?;
        let opts = EtcdOptions {
            connect_timeout: std::time::Duration::from_secs(3),
            request_timeout: std::time::Duration::from_secs(5),
            access,
            ..EtcdOptions::default()
        };
        let client = etcd::connect(&t.etcd, &opts)
            .await
            .map_err(|e| unreachable(&endpoints, e))?;
        Ok(Store {
            client,
            endpoints,
            prefix: normalize_prefix(&t.prefix),
        })
    }

    /// Every pair under the prefix and the revision read at.
    pub async fn list(&mut self) -> Result<(i64, Kv)> {
        etcd::list(&mut self.client, &self.prefix)
            .await
            .map_err(|e| unreachable(&self.endpoints, e))
    }

    /// The newest revision that changed a topology key (gateway
    /// registrations excluded): what an up-to-date gateway has applied.
    /// Deletions leave no key behind, so a delete-only change is not seen.
    pub async fn topology_revision(&mut self) -> Result<i64> {
        let dir = format!("{}/", self.prefix);
        let resp = self
            .client
            .get(
                dir.as_str(),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .map_err(|e| unreachable(&self.endpoints, e))?;
        Ok(resp
            .kvs()
            .iter()
            .filter(|kv| {
                kv.key_str()
                    .is_ok_and(|k| !k[dir.len().min(k.len())..].starts_with("gateways/"))
            })
            .map(|kv| kv.mod_revision())
            .max()
            .unwrap_or(0))
    }

    /// The gateways registered under the prefix: id, what each wrote
    /// and its lease id (0: none). An unreadable value reads as empty.
    pub async fn registrations(
        &mut self,
    ) -> Result<Vec<(String, unit_router::spec::GatewaySpec, i64)>> {
        let dir = format!("{}/gateways/", self.prefix);
        let resp = self
            .client
            .get(
                dir.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| unreachable(&self.endpoints, e))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let id = kv.key_str().ok()?.strip_prefix(dir.as_str())?.to_owned();
                let spec = serde_json::from_slice(kv.value()).unwrap_or_default();
                Some((id, spec, kv.lease()))
            })
            .collect())
    }

    /// Seconds the lease `id` has left (`None`: expired or unknown).
    pub async fn lease_ttl_left(&mut self, id: i64) -> Result<Option<i64>> {
        let resp = self
            .client
            .lease_time_to_live(id, None)
            .await
            .map_err(|e| unreachable(&self.endpoints, e))?;
        Ok(Some(resp.ttl()).filter(|&t| t >= 0))
    }

    fn full(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    /// Write `puts` and `deletes` in one transaction, only if nothing under
    /// the prefix changed since `read_rev`. Returns the new revision, or
    /// `None` when something changed meanwhile (nothing was written).
    pub async fn commit(
        &mut self,
        read_rev: i64,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<Option<i64>> {
        let mut ops: Vec<TxnOp> = puts
            .iter()
            .map(|(k, v)| TxnOp::put(self.full(k), v.as_str(), None))
            .collect();
        ops.extend(deletes.iter().map(|k| TxnOp::delete(self.full(k), None)));
        // Guard: no key under the prefix was modified after our read.
        let dir = format!("{}/", self.prefix);
        let end = prefix_end(dir.as_bytes());
        let guard =
            Compare::mod_revision(dir.as_str(), CompareOp::Less, read_rev + 1).with_range(end);
        let txn = Txn::new().when([guard]).and_then(ops);
        let resp = self.client.txn(txn).await.map_err(|e| match e {
            etcd_client::Error::GRpcStatus(s) if s.message().contains("too many operations") => {
                anyhow!(
                    "etcd refused the transaction: {} (raise etcd's --max-txn-ops above {})",
                    s.message(),
                    puts.len() + deletes.len()
                )
            }
            e => unreachable(&self.endpoints, e),
        })?;
        if !resp.succeeded() {
            return Ok(None);
        }
        Ok(Some(resp.header().map_or(0, |h| h.revision())))
    }

    /// The error after every attempt found the topology changing underneath.
    pub fn conflict(&self) -> anyhow::Error {
        anyhow!(
            "the topology under {} kept changing while this command ran; nothing was written, run it again",
            self.prefix
        )
    }
}

/// The first key after every key starting with `p`.
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The topology pairs from `--file` or etcd: `(revision, pairs, where)`.
pub async fn read_topology(t: &Target) -> Result<(i64, Kv, String)> {
    if let Some(path) = &t.file {
        let kv = read_document(path)?;
        return Ok((0, kv, format!("file {}", path.display())));
    }
    let mut s = Store::open(t).await?;
    let (rev, kv) = s.list().await?;
    if kv.is_empty() {
        return Err(anyhow!(
            "no topology under {} in etcd at {} (write one with: unitctl apply FILE)",
            s.prefix,
            s.endpoints
        ));
    }
    Ok((rev, kv, format!("etcd {} prefix {}", s.endpoints, s.prefix)))
}

/// Parse a document or say which file was bad.
pub fn read_file(path: &std::path::Path) -> Result<Kv> {
    read_document(path).with_context(|| "cannot read topology file".to_string())
}
