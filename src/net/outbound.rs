//! The client for calls to third-party platforms (the passthrough, OAuth2 token
//! endpoints): connect and response timeouts, no redirects followed, and no private,
//! loopback or link-local address reached unless the caller allows it. The address check
//! runs on the resolved addresses, so a name that points (or is rebound) inside the network
//! is refused too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use url::Url;

use super::http::strip_hop_by_hop;
use super::pool::Http1Pool;

/// Idle connections kept per platform and serving thread, and for how long.
const MAX_IDLE_PER_PLATFORM: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the host resolves to a private or loopback address")]
    PrivateAddress,
    #[error("the host is unreachable")]
    Unreachable,
    #[error("the host did not answer in time")]
    Timeout,
}

/// Addresses a call may not reach unless the caller allows private networks. An IPv6
/// address that carries an IPv4 one (mapped, compatible, translated, NAT64, 6to4) is as
/// private as the address it carries.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let low32 = Ipv4Addr::from(u128::from(v6) as u32);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated, still routed inside)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64 64:ff9b:1::/48
                // IPv4-compatible ::a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d
                || (s[..5] == [0; 5] && (s[5] == 0 || (s[4] == 0 && s[5] == 0xffff)) && is_private_v4(low32))
                || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 && is_private_v4(low32))
                // NAT64 64:ff9b::/96: the IPv4 address at the end is the destination
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] && is_private_v4(low32))
                // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
                || (s[0] == 0x2002
                    && is_private_v4(Ipv4Addr::from(((u32::from(s[1])) << 16) | u32::from(s[2]))))
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64) // 100.64.0.0/10
        || v4.octets()[0] == 0 // "this network" 0.0.0.0/8
}

/// Whether a URL's host is inside without asking a resolver: a private address written
/// out, or a `localhost` name (RFC 6761: always loopback, trailing dot or not).
pub fn names_inside(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(is_private)
}

/// Whether an outbound failure is the private-address guard's refusal (somewhere down the
/// error's causes: the resolver's answer reaches us through the connector's error).
fn refused_as_private(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

type Guarded = Arc<Http1Pool<HttpsConnector<HttpConnector<PublicResolver>>>>;
type Open = Arc<Http1Pool<HttpsConnector<HttpConnector>>>;

/// Resolves names and keeps public addresses only.
#[derive(Clone)]
pub struct PublicResolver;

impl tower::Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the name resolves only to private addresses",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

fn platform_connector<R>(
    mut http: HttpConnector<R>,
    connect_timeout: Duration,
    tls: &rustls::ClientConfig,
) -> HttpsConnector<HttpConnector<R>> {
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    // A proxy's small writes go out at once (as the gateway's do).
    http.set_nodelay(true);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// The two pools of one serving thread: their connections are driven by that thread's
/// runtime, so a call never waits on another thread to write or read for it.
struct Clients {
    guarded: Guarded,
    open: Open,
}

pub struct OutboundClient {
    guarded: HttpsConnector<HttpConnector<PublicResolver>>,
    open: HttpsConnector<HttpConnector>,
    per_thread: thread_local::ThreadLocal<Clients>,
    /// Longest wait for response headers.
    response_timeout: Duration,
}

impl OutboundClient {
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        // Without an extra CA file the only failure would be an unsupported protocol set.
        let tls = super::tls::client_tls_config(None)
            .expect("the system's CAs and ring's default protocols");
        Self {
            guarded: platform_connector(
                HttpConnector::new_with_resolver(PublicResolver),
                connect_timeout,
                &tls,
            ),
            open: platform_connector(HttpConnector::new(), connect_timeout, &tls),
            per_thread: thread_local::ThreadLocal::new(),
            response_timeout,
        }
    }

    fn clients(&self) -> &Clients {
        self.per_thread.get_or(|| Clients {
            guarded: Http1Pool::new(self.guarded.clone(), MAX_IDLE_PER_PLATFORM, IDLE_TIMEOUT),
            open: Http1Pool::new(self.open.clone(), MAX_IDLE_PER_PLATFORM, IDLE_TIMEOUT),
        })
    }

    /// Sends `outgoing` (to `url`) within the response timeout, keeping to public addresses
    /// unless `allow_private`; the answer's hop-by-hop headers are dropped, redirects come
    /// back as they are.
    pub async fn send(
        &self,
        allow_private: bool,
        url: &Url,
        outgoing: Request<Body>,
    ) -> Result<Response<Body>, OutboundError> {
        if !allow_private && url.host_str().is_some_and(names_inside) {
            return Err(OutboundError::PrivateAddress);
        }
        let sent = if allow_private {
            tokio::time::timeout(self.response_timeout, self.clients().open.send(outgoing)).await
        } else {
            tokio::time::timeout(self.response_timeout, self.clients().guarded.send(outgoing)).await
        };
        let response = match sent {
            Err(_) => return Err(OutboundError::Timeout),
            Ok(Err(e)) => {
                let blocked = refused_as_private(&e);
                tracing::warn!(host = url.host_str().unwrap_or(""), error = %e, "outbound call failed");
                return Err(if blocked {
                    OutboundError::PrivateAddress
                } else {
                    OutboundError::Unreachable
                });
            }
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        // IPv6 forms that carry a private IPv4 address, and IPv6's own private ranges.
        for private in [
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:10.1.2.3",
            "64:ff9b::127.0.0.1",
            "64:ff9b::192.168.0.1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for inside in [
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "[::1]",
            "127.0.0.2",
        ] {
            assert!(names_inside(inside), "{inside}");
        }
        assert!(!names_inside("localhost.example.com"));
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "::ffff:0:8.8.8.8",
        ] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
