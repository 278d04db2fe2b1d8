//! Behind a reverse proxy: `X-Forwarded-Proto`, `-Host` and `-For` are
//! honoured only from trusted proxies, and stripped from everyone else, so
//! a client cannot make berth hand out URLs of its choosing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue};

/// The scheme clients used, as berth understood it; read by URL builders.
pub const SCHEME_HEADER: HeaderName = HeaderName::from_static("x-berth-external-scheme");
/// The client's address after trusted proxies, for logs and the audit log.
pub const CLIENT_HEADER: HeaderName = HeaderName::from_static("x-berth-client-ip");
const XF_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XF_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const XF_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// An address or a network such as `10.0.0.0/8` or `::1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Net { addr, prefix })
    }
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Rewrites a request's Host and scheme from a trusted proxy's headers.
/// `https` says whether berth itself terminates TLS.
pub fn apply(trusted: &[Net], https: bool, mut req: Request) -> Request {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let from_proxy = peer.is_some_and(|p| trusted.iter().any(|n| n.contains(p)));
    let h = req.headers_mut();
    h.remove(SCHEME_HEADER);
    h.remove(CLIENT_HEADER);
    let mut scheme = if https { "https" } else { "http" }.to_string();
    let mut client = peer.map(|p| p.to_string());
    if from_proxy {
        let first = |v: &HeaderValue| {
            v.to_str()
                .ok()
                .and_then(|s| s.split(',').next())
                .map(|s| s.trim().to_string())
        };
        if let Some(p) = h.get(XF_PROTO).and_then(first).filter(|p| p == "https" || p == "http") {
            scheme = p;
        }
        if let Some(host) = h
            .get(XF_HOST)
            .and_then(first)
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            h.insert(axum::http::header::HOST, host);
        }
        // The client is the last address not added by a trusted proxy.
        if let Some(list) = h.get(XF_FOR).and_then(|v| v.to_str().ok()) {
            let hops: Vec<&str> = list.split(',').map(str::trim).collect();
            let real = hops
                .iter()
                .rev()
                .find(|a| {
                    a.parse::<IpAddr>()
                        .map_or(true, |ip| !trusted.iter().any(|n| n.contains(ip)))
                })
                .or(hops.first());
            if let Some(r) = real {
                client = Some(r.to_string());
            }
        }
    } else {
        h.remove(XF_PROTO);
        h.remove(XF_HOST);
        h.remove(XF_FOR);
    }
    h.insert(SCHEME_HEADER, HeaderValue::from_str(&scheme).expect("ascii"));
    if let Some(c) = client.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(CLIENT_HEADER, c);
    }
    req
}

/// A layer-ready function for `axum::middleware::map_request`.
pub fn layer(trusted: Vec<Net>, https: bool) -> impl Fn(Request) -> std::future::Ready<Request> + Clone {
    let trusted = Arc::new(trusted);
    move |req| std::future::ready(apply(&trusted, https, req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, headers: &[(&str, &str)]) -> Request {
        let mut r = Request::builder().uri("/v2/").header("host", "internal:5000");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut r = r.body(axum::body::Body::empty()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        r
    }

    #[test]
    fn networks() {
        let n: Net = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(
            n.contains("::ffff:10.0.0.1".parse().unwrap()),
            "IPv4-mapped addresses match"
        );
        let one: Net = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!("fd00::/8".parse::<Net>().unwrap().contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("nonsense".parse::<Net>().is_err());
    }

    #[test]
    fn trusted_proxies_are_honoured_and_others_are_not() {
        let trusted = vec!["127.0.0.1".parse().unwrap()];
        let xf = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "registry.example.test"),
            ("x-forwarded-for", "203.0.113.7, 127.0.0.1"),
        ];
        let r = apply(&trusted, false, req("127.0.0.1:4000", &xf));
        assert_eq!(r.headers()["host"], "registry.example.test");
        assert_eq!(r.headers()[SCHEME_HEADER], "https");
        assert_eq!(r.headers()[CLIENT_HEADER], "203.0.113.7");
        let r = apply(
            &trusted,
            false,
            req("192.0.2.9:4000", &[xf[0], xf[1], ("x-berth-external-scheme", "https")]),
        );
        assert_eq!(r.headers()["host"], "internal:5000");
        assert_eq!(r.headers()[SCHEME_HEADER], "http", "a client cannot claim https");
        assert!(r.headers().get("x-forwarded-host").is_none());
        assert_eq!(r.headers()[CLIENT_HEADER], "192.0.2.9");
    }
}
