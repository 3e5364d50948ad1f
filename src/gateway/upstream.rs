//! The ClickHouse nodes behind each region: health checks, choice and failover.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderValue, Uri};
use secrecy::ExposeSecret;
use url::Url;

use super::UpstreamClient;

use crate::domain::topology::{Topology, UpstreamUser};

/// A ClickHouse login as the header values that carry it, built once at start-up rather
/// than per request. The key's value is marked sensitive, so `Debug` never prints it.
pub struct UpstreamIdentity {
    pub user: HeaderValue,
    pub key: Option<HeaderValue>,
}

impl UpstreamIdentity {
    pub fn new(user: &str, password: Option<&secrecy::SecretString>) -> anyhow::Result<Self> {
        let user = HeaderValue::from_str(user)
            .map_err(|_| anyhow::anyhow!("upstream user {user:?} is not valid header text"))?;
        let key = password
            .map(|p| {
                HeaderValue::from_str(p.expose_secret()).map(|mut key| {
                    key.set_sensitive(true);
                    key
                })
            })
            .transpose()
            .map_err(|_| {
                anyhow::anyhow!("the password of upstream user {user:?} is not valid header text")
            })?;
        Ok(Self { user, key })
    }

    pub fn of(user: &UpstreamUser) -> anyhow::Result<Self> {
        Self::new(&user.user, user.password.as_ref())
    }

    /// For logs: the user's name (never the key).
    pub fn user_name(&self) -> &str {
        self.user.to_str().unwrap_or("?")
    }
}

pub struct Node {
    /// Scheme, host and port, without a trailing slash.
    pub base: String,
    scheme: Scheme,
    authority: Authority,
    healthy: AtomicBool,
}

impl Node {
    fn new(url: &Url) -> anyhow::Result<Self> {
        let base = url.as_str().trim_end_matches('/').to_owned();
        let parts = base.parse::<Uri>()?.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            anyhow::bail!("upstream {base} has no scheme and host");
        };
        Ok(Self {
            base,
            scheme,
            authority,
            // Optimistic until the first check: a fresh server serves at once.
            healthy: AtomicBool::new(true),
        })
    }

    /// This node's URL for a request's path and query.
    pub fn uri(&self, path_and_query: PathAndQuery) -> Uri {
        let mut parts = axum::http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).expect("scheme, authority and path make a URI")
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn mark(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!(upstream = %self.base, "upstream is healthy again");
            } else {
                tracing::warn!(upstream = %self.base, "upstream marked unhealthy: it does not answer /ping, so its region's queries go to its other nodes, or get 502 until it answers (is ClickHouse running there? the address is the region's upstreams, or upstream.url without [[regions]])");
            }
        }
        metrics::gauge!("switchboard_gateway_upstream_healthy", "upstream" => self.base.clone())
            .set(if healthy { 1.0 } else { 0.0 });
    }
}

pub struct RegionPool {
    nodes: Vec<Arc<Node>>,
    next: AtomicUsize,
}

impl RegionPool {
    fn new(upstreams: &[Url]) -> anyhow::Result<Self> {
        Ok(Self {
            nodes: upstreams
                .iter()
                .map(|u| Node::new(u).map(Arc::new))
                .collect::<anyhow::Result<_>>()?,
            next: AtomicUsize::new(0),
        })
    }

    /// The nodes to try, in order. A ClickHouse session lives on one node, so a request
    /// with a `session_id` always goes to the node its id hashes to. Otherwise healthy
    /// nodes take turns, and unhealthy ones are a last resort (their state may be stale).
    pub fn candidates(&self, session_id: Option<&str>) -> Vec<Arc<Node>> {
        if self.nodes.is_empty() {
            return Vec::new();
        }
        if let Some(session) = session_id {
            let index = stable_hash(session) as usize % self.nodes.len();
            return vec![self.nodes[index].clone()];
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut unhealthy = 0;
        for i in 0..self.nodes.len() {
            let node = &self.nodes[(start + i) % self.nodes.len()];
            // Each node's health is read once: it may change meanwhile.
            if node.is_healthy() {
                order.insert(order.len() - unhealthy, node.clone());
            } else {
                order.push(node.clone());
                unhealthy += 1;
            }
        }
        order
    }
}

/// FNV-1a: stable across processes and releases, so replicas agree on a session's node.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub struct UpstreamPools {
    by_region: HashMap<String, Arc<RegionPool>>,
}

impl crate::domain::topology::UpstreamHealth for UpstreamPools {
    fn nodes_of(&self, region_id: &str) -> Vec<crate::domain::topology::NodeHealth> {
        self.by_region.get(region_id).map_or_else(Vec::new, |pool| {
            pool.nodes
                .iter()
                .map(|n| crate::domain::topology::NodeHealth {
                    url: n.base.clone(),
                    healthy: n.is_healthy(),
                })
                .collect()
        })
    }
}

impl UpstreamPools {
    pub fn new(topology: &Topology) -> anyhow::Result<Self> {
        Ok(Self {
            by_region: topology
                .regions()
                .iter()
                .map(|r| Ok((r.id.clone(), Arc::new(RegionPool::new(&r.upstreams)?))))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    pub fn region(&self, id: &str) -> Option<&RegionPool> {
        self.by_region.get(id).map(Arc::as_ref)
    }

    fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.by_region.values().flat_map(|p| &p.nodes)
    }

    /// Pings every node each `interval` until the task is dropped.
    pub async fn check_health(self: Arc<Self>, client: UpstreamClient, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let checks = self.nodes().map(|node| {
                let client = client.clone();
                async move {
                    let ping = axum::http::Request::get(format!("{}/ping", node.base))
                        .body(axum::body::Body::empty());
                    let ok = match ping {
                        Ok(ping) => {
                            let answer = async {
                                let response = client.send(ping).await.ok()?;
                                let healthy = response.status().is_success();
                                // Read to the end, so the connection serves the next check.
                                http_body_util::BodyExt::collect(response.into_body())
                                    .await
                                    .ok()?;
                                Some(healthy)
                            };
                            let limit = interval.max(Duration::from_secs(1));
                            matches!(tokio::time::timeout(limit, answer).await, Ok(Some(true)))
                        }
                        Err(_) => false,
                    };
                    node.mark(ok);
                }
            });
            futures_util::future::join_all(checks).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> RegionPool {
        let urls: Vec<Url> = (0..n)
            .map(|i| Url::parse(&format!("http://127.0.0.1:{}", 9000 + i)).unwrap())
            .collect();
        RegionPool::new(&urls).unwrap()
    }

    #[test]
    fn sessions_stick_to_one_node_whatever_its_health() {
        let p = pool(3);
        let first = p.candidates(Some("session-42"));
        assert_eq!(first.len(), 1);
        first[0].mark(false);
        for _ in 0..10 {
            assert_eq!(p.candidates(Some("session-42"))[0].base, first[0].base);
        }
    }

    #[test]
    fn healthy_nodes_take_turns_and_unhealthy_come_last() {
        let p = pool(3);
        let a = p.candidates(None)[0].base.clone();
        let b = p.candidates(None)[0].base.clone();
        assert_ne!(a, b, "round robin");
        p.nodes[1].mark(false);
        for _ in 0..6 {
            let c = p.candidates(None);
            assert_eq!(c.len(), 3);
            assert!(c[0].is_healthy() && c[1].is_healthy());
            assert!(!c[2].is_healthy());
        }
    }
}
