//! The SSRF guard for delivery targets (SPEC §6).
//!
//! Merchant endpoint URLs are attacker-controlled input as far as the relay
//! is concerned: without a guard, `http://169.254.169.254/…` or a hostname
//! that resolves to `10.0.0.1` turns the relay into a proxy into its own
//! network. Unless `delivery.allow_private_targets`, a target may only be a
//! public address:
//!
//! - [`blocked`] classifies one address (embedded IPv4 in mapped,
//!   compatible, NAT64 and 6to4 IPv6 forms classified as that IPv4);
//! - [`check_url`] vets a URL before any connection (scheme, userinfo, and an
//!   IP-literal host, which never reaches a resolver);
//! - [`vet_host`] resolves a hostname and refuses it if any address is
//!   blocked (endpoint create/patch, for an early, clear error);
//! - [`client`] builds the delivery HTTP client around [`VettingResolver`],
//!   which resolves, vets and hands reqwest only the vetted addresses, so
//!   nothing re-resolves between check and connect (no DNS rebinding).
//!
//! The dispatcher must call [`check_url`] before every attempt: reqwest
//! connects to IP-literal hosts directly, without asking the resolver.
//!
//! Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24,
//! 2001:db8::/32, 3fff::/20) and benchmarking (198.18/15) are blocked too: nothing
//! legitimate lives there, and some networks use them internally.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What a delivery target may be.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `delivery.allow_private_targets`: skip address vetting (tests, labs).
    pub allow_private: bool,
    /// `delivery.https_only`: refuse `http://` targets.
    pub https_only: bool,
}

/// IPv4 ranges that are not public delivery targets, first match wins.
const V4_BLOCKED: &[(u32, u8, &str)] = &[
    (0x0000_0000, 8, "unspecified"),     // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8, "private"),         // 10.0.0.0/8
    (0x6440_0000, 10, "shared (CGNAT)"), // 100.64.0.0/10
    (0x7f00_0000, 8, "loopback"),        // 127.0.0.0/8
    (0xa9fe_0000, 16, "link-local"),     // 169.254.0.0/16, cloud metadata
    (0xac10_0000, 12, "private"),        // 172.16.0.0/12
    (0xc000_0000, 24, "IETF protocol assignment"), // 192.0.0.0/24
    (0xc000_0200, 24, "documentation"),  // 192.0.2.0/24 TEST-NET-1
    (0xc0a8_0000, 16, "private"),        // 192.168.0.0/16
    (0xc612_0000, 15, "benchmarking"),   // 198.18.0.0/15
    (0xc633_6400, 24, "documentation"),  // 198.51.100.0/24 TEST-NET-2
    (0xcb00_7100, 24, "documentation"),  // 203.0.113.0/24 TEST-NET-3
    (0xe000_0000, 4, "multicast"),       // 224.0.0.0/4
    (0xffff_ffff, 32, "broadcast"),      // 255.255.255.255
    (0xf000_0000, 4, "reserved"),        // 240.0.0.0/4
];

fn in_v4(ip: u32, base: u32, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    ip & mask == base
}

fn in_v6(ip: u128, base: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    ip & mask == base
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let n = u32::from(ip);
    V4_BLOCKED
        .iter()
        .find(|(base, prefix, _)| in_v4(n, *base, *prefix))
        .map(|(_, _, why)| *why)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let n = u128::from(ip);
    let embedded = Ipv4Addr::from(n as u32);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d
    // (NAT64 well-known prefix): the packet goes to that IPv4 address.
    if in_v6(n, 0xffff_0000_0000, 96) || in_v6(n, 0, 96) || in_v6(n, 0x0064_ff9b << 96, 96) {
        return blocked_v4(embedded);
    }
    // 6to4 2002:a.b.c.d::/48 relays to a.b.c.d.
    if in_v6(n, 0x2002 << 112, 16) {
        return blocked_v4(Ipv4Addr::from((n >> 80) as u32));
    }
    const V6_BLOCKED: &[(u128, u8, &str)] = &[
        (0x0064_ff9b_0001 << 80, 48, "NAT64 local-use"), // 64:ff9b:1::/48
        (0x0100 << 112, 64, "discard-only"),             // 100::/64
        (0x2001_0db8 << 96, 32, "documentation"),        // 2001:db8::/32
        (0x3fff << 112, 20, "documentation"),            // 3fff::/20 (RFC 9637)
        (0xfc00 << 112, 7, "unique-local"),              // fc00::/7
        (0xfe80 << 112, 10, "link-local"),               // fe80::/10
        (0xfec0 << 112, 10, "site-local"),               // fec0::/10 (deprecated)
        (0xff00 << 112, 8, "multicast"),                 // ff00::/8
    ];
    if let Some((_, _, why)) = V6_BLOCKED.iter().find(|(b, p, _)| in_v6(n, *b, *p)) {
        return Some(why);
    }
    // Global unicast is 2000::/3; everything else is unallocated.
    (!in_v6(n, 0x2000 << 112, 3)).then_some("reserved")
}

/// Why an address may not be a delivery target, e.g. `"loopback"`;
/// None = public, allowed.
pub fn blocked(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn article(why: &str) -> &'static str {
    match why.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'I') => "an",
        _ if why == "unspecified" => "an",
        _ => "a",
    }
}

/// Check a target URL before any connection: http/https only, https only if
/// the policy says so, a host present, no userinfo, and an IP-literal host
/// vetted with [`blocked`] (unless `allow_private`). Hostnames are vetted at
/// connect time by [`VettingResolver`]. Err = a human reason naming the URL
/// part, e.g. `"https_only: http:// targets are refused"`.
pub fn check_url(url: &url::Url, policy: Policy) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if policy.https_only => {
            return Err("https_only: http:// targets are refused".into());
        }
        "http" => {}
        other => {
            return Err(format!(
                "scheme: {other}:// targets are refused (http or https only)"
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("userinfo: credentials in the target URL are refused".into());
    }
    let ip = match url.host() {
        None => return Err("host: the target URL has no host".into()),
        Some(url::Host::Domain("")) => return Err("host: the target URL has no host".into()),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    match blocked(ip) {
        Some(why) if !policy.allow_private => {
            Err(format!("{ip} is {} {why} address", article(why)))
        }
        _ => Ok(()),
    }
}

/// Why a host may not be a target: it did not resolve, or it resolved to a
/// blocked address.
enum VetError {
    Resolve(String),
    Refused(String),
}

async fn vet(host: &str, port: u16, policy: Policy) -> Result<Vec<SocketAddr>, VetError> {
    // `Url::host_str` writes IPv6 literals in brackets.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| VetError::Resolve(format!("{host} does not resolve: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(VetError::Resolve(format!("{host} resolves to no address")));
    }
    if !policy.allow_private {
        for a in &addrs {
            if let Some(why) = blocked(a.ip()) {
                return Err(VetError::Refused(format!(
                    "{host} resolves to {} ({why})",
                    a.ip()
                )));
            }
        }
    }
    Ok(addrs)
}

/// Resolve `host` and vet every address; Err names the host, the address and
/// why (`"internal.test resolves to 10.0.0.1 (private)"`). Refuses if ANY
/// resolved address is blocked (unless `allow_private`). Used at endpoint
/// create/patch.
pub async fn vet_host(host: &str, port: u16, policy: Policy) -> Result<Vec<SocketAddr>, String> {
    vet(host, port, policy).await.map_err(|e| match e {
        VetError::Resolve(m) | VetError::Refused(m) => m,
    })
}

/// The error a [`VettingResolver`] fails a connection with when a hostname
/// resolves to a blocked address; [`describe`] finds it in the source chain.
#[derive(Debug)]
pub struct TargetRefused(pub String);

impl fmt::Display for TargetRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target refused: {}", self.0)
    }
}

impl std::error::Error for TargetRefused {}

/// A reqwest DNS resolver that resolves, vets every address and hands
/// reqwest only vetted addresses, so nothing re-resolves between check and
/// connect.
#[derive(Debug, Clone, Copy)]
pub struct VettingResolver {
    pub policy: Policy,
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port.
            match vet(&host, 0, policy).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(VetError::Refused(m)) => Err(Box::new(TargetRefused(m)) as _),
                Err(VetError::Resolve(m)) => Err(m.into()),
            }
        })
    }
}

/// The delivery HTTP client: [`VettingResolver`] plugged in, redirects not
/// followed, `timeout` bounding the whole attempt and the connect, no proxies
/// (environment proxies would bypass the guard), user-agent
/// `ipn-relay/<version>`.
pub fn client(timeout: Duration, policy: Policy) -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(VettingResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .user_agent(concat!("ipn-relay/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with rustls and no proxies builds")
}

/// A delivery error as one line for `last_error`: a refused target reads
/// `"target refused: localhost resolves to 127.0.0.1 (loopback)"`, a timeout
/// `"timed out: no complete response within delivery.timeout"`, a connect
/// failure `"connect: …"` (`"connect: timed out: …"`), anything else the
/// source chain joined with `": "`.
pub fn describe(err: &reqwest::Error) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<TargetRefused>() {
            return refused.to_string();
        }
        let line = e.to_string();
        // hyper-util's wrapper says nothing its source does not say better,
        // and outer errors often repeat the inner message.
        let noise = line.starts_with("client error (") && e.source().is_some();
        if !noise && chain.last().is_none_or(|prev| !prev.contains(&line)) {
            chain.push(line);
        }
        source = e.source();
    }
    let detail = chain.join(": ");
    let detail = if detail.is_empty() {
        err.to_string()
    } else {
        detail
    };
    if err.is_timeout() && err.is_connect() {
        format!("connect: timed out: {detail}")
    } else if err.is_timeout() {
        "timed out: no complete response within delivery.timeout".to_string()
    } else if err.is_connect() {
        format!("connect: {detail}")
    } else if let Some(status) = err.status() {
        format!("status {status}: {detail}")
    } else {
        format!("{}: {detail}", without_url(err))
    }
}

/// The top-level message without the URL reqwest appends (the caller has it).
fn without_url(err: &reqwest::Error) -> String {
    let top = err.to_string();
    match err.url() {
        Some(u) => top
            .replace(&format!(" for url ({u})"), "")
            .replace(&format!(" ({u})"), ""),
        None => top,
    }
}

#[cfg(test)]
mod tests;
