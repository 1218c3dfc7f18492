//! Tests of the SSRF guard: classification at every range edge, URL checks,
//! resolution, and the delivery client end to end against local listeners.

use super::*;
use proptest::prelude::*;
use std::io::{Read, Write};

const STRICT: Policy = Policy {
    allow_private: false,
    https_only: false,
};
const OPEN: Policy = Policy {
    allow_private: true,
    https_only: false,
};

fn check_table(table: &[(&str, Option<&str>)]) {
    let mut bad = Vec::new();
    for (ip, want) in table {
        let got = blocked(ip.parse().unwrap());
        if got != *want {
            bad.push(format!("{ip}: want {want:?}, got {got:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn ipv4_range_edges() {
    let cg = Some("shared (CGNAT)");
    let doc = Some("documentation");
    let priv_ = Some("private");
    check_table(&[
        ("0.0.0.0", Some("unspecified")),
        ("0.255.255.255", Some("unspecified")),
        ("1.0.0.0", None),
        ("9.255.255.255", None),
        ("10.0.0.0", priv_),
        ("10.255.255.255", priv_),
        ("11.0.0.0", None),
        ("100.63.255.255", None),
        ("100.64.0.0", cg),
        ("100.127.255.255", cg),
        ("100.128.0.0", None),
        ("126.255.255.255", None),
        ("127.0.0.0", Some("loopback")),
        ("127.0.0.1", Some("loopback")),
        ("127.255.255.255", Some("loopback")),
        ("128.0.0.0", None),
        ("169.253.255.255", None),
        ("169.254.0.0", Some("link-local")),
        ("169.254.169.254", Some("link-local")),
        ("169.254.255.255", Some("link-local")),
        ("169.255.0.0", None),
        ("172.15.255.255", None),
        ("172.16.0.0", priv_),
        ("172.31.255.255", priv_),
        ("172.32.0.0", None),
        ("191.255.255.255", None),
        ("192.0.0.0", Some("IETF protocol assignment")),
        ("192.0.0.255", Some("IETF protocol assignment")),
        ("192.0.1.0", None),
        ("192.0.1.255", None),
        ("192.0.2.0", doc),
        ("192.0.2.255", doc),
        ("192.0.3.0", None),
        ("192.167.255.255", None),
        ("192.168.0.0", priv_),
        ("192.168.255.255", priv_),
        ("192.169.0.0", None),
        ("198.17.255.255", None),
        ("198.18.0.0", Some("benchmarking")),
        ("198.19.255.255", Some("benchmarking")),
        ("198.20.0.0", None),
        ("198.51.99.255", None),
        ("198.51.100.0", doc),
        ("198.51.100.255", doc),
        ("198.51.101.0", None),
        ("203.0.112.255", None),
        ("203.0.113.0", doc),
        ("203.0.113.255", doc),
        ("203.0.114.0", None),
        ("223.255.255.255", None),
        ("224.0.0.0", Some("multicast")),
        ("239.255.255.255", Some("multicast")),
        ("240.0.0.0", Some("reserved")),
        ("255.255.255.254", Some("reserved")),
        ("255.255.255.255", Some("broadcast")),
        ("1.1.1.1", None),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
    ]);
}

#[test]
fn ipv6_range_edges() {
    let max = "ffff:ffff:ffff:ffff:ffff";
    let t: Vec<(String, Option<&str>)> = vec![
        ("::".into(), Some("unspecified")),
        ("::1".into(), Some("loopback")),
        ("::2".into(), Some("unspecified")), // compatible 0.0.0.2
        // IPv4-mapped and IPv4-compatible: the embedded IPv4 decides.
        ("::ffff:0.0.0.0".into(), Some("unspecified")),
        ("::ffff:127.0.0.1".into(), Some("loopback")),
        ("::ffff:10.0.0.1".into(), Some("private")),
        ("::ffff:169.254.169.254".into(), Some("link-local")),
        ("::ffff:255.255.255.255".into(), Some("broadcast")),
        ("::ffff:8.8.8.8".into(), None),
        ("::127.0.0.1".into(), Some("loopback")),
        ("::192.168.1.1".into(), Some("private")),
        ("::8.8.8.8".into(), None),
        ("::255.255.255.255".into(), Some("broadcast")),
        ("::1:0:0".into(), Some("reserved")),
        ("::fffe:ffff:ffff".into(), Some("reserved")),
        ("::1:ffff:0:0".into(), Some("reserved")),
        ("::ffff:0:0:0".into(), Some("reserved")), // SIIT, not mapped
        // NAT64 well-known prefix 64:ff9b::/96.
        ("64:ff9b::127.0.0.1".into(), Some("loopback")),
        ("64:ff9b::8.8.8.8".into(), None),
        ("64:ff9b::".into(), Some("unspecified")),
        ("64:ff9b::ffff:ffff".into(), Some("broadcast")),
        (
            "64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff".into(),
            Some("reserved"),
        ),
        ("64:ff9b::1:0:0".into(), Some("reserved")),
        // NAT64 local-use 64:ff9b:1::/48.
        ("64:ff9b:1::".into(), Some("NAT64 local-use")),
        (format!("64:ff9b:1:{max}"), Some("NAT64 local-use")),
        ("64:ff9b:2::".into(), Some("reserved")),
        // Discard-only 100::/64.
        ("100::".into(), Some("discard-only")),
        ("100::ffff:ffff:ffff:ffff".into(), Some("discard-only")),
        ("100:0:0:1::".into(), Some("reserved")),
        // Global unicast 2000::/3 edges.
        (format!("1fff:ffff:ffff:{max}"), Some("reserved")),
        ("2000::".into(), None),
        (format!("3ffe:ffff:ffff:{max}"), None),
        ("4000::".into(), Some("reserved")),
        // Documentation.
        (format!("2001:db7:ffff:{max}"), None),
        ("2001:db8::".into(), Some("documentation")),
        (format!("2001:db8:ffff:{max}"), Some("documentation")),
        ("2001:db9::".into(), None),
        (format!("3ffe:ffff:ffff:{max}"), None),
        ("3fff::".into(), Some("documentation")),
        (format!("3fff:fff:ffff:{max}"), Some("documentation")),
        ("3fff:1000::".into(), None),
        // 6to4 2002::/16: the embedded IPv4 decides.
        (format!("2001:ffff:ffff:{max}"), None),
        ("2002:7f00:1::".into(), Some("loopback")),
        ("2002:a00:1::1".into(), Some("private")),
        ("2002:808:808::".into(), None),
        ("2002::".into(), Some("unspecified")),
        ("2003::".into(), None),
        // Unique-local fc00::/7.
        (format!("fbff:ffff:ffff:{max}"), Some("reserved")),
        ("fc00::".into(), Some("unique-local")),
        ("fd12:3456::1".into(), Some("unique-local")),
        (format!("fdff:ffff:ffff:{max}"), Some("unique-local")),
        ("fe00::".into(), Some("reserved")),
        // Link-local fe80::/10.
        (format!("fe7f:ffff:ffff:{max}"), Some("reserved")),
        ("fe80::".into(), Some("link-local")),
        (format!("febf:ffff:ffff:{max}"), Some("link-local")),
        // Site-local fec0::/10.
        ("fec0::".into(), Some("site-local")),
        (format!("feff:ffff:ffff:{max}"), Some("site-local")),
        // Multicast ff00::/8.
        ("ff00::".into(), Some("multicast")),
        ("ff02::1".into(), Some("multicast")),
        (format!("ffff:ffff:ffff:{max}"), Some("multicast")),
        // Public.
        ("2606:4700:4700::1111".into(), None),
        ("2a00:1450:4001::200e".into(), None),
    ];
    let t: Vec<(&str, Option<&str>)> = t.iter().map(|(a, w)| (a.as_str(), *w)).collect();
    check_table(&t);
}

#[test]
fn v6_loopback_is_not_compatible_0_0_0_1() {
    // The one IPv4-compatible address with its own IPv6 meaning; still blocked.
    assert_eq!(blocked("0.0.0.1".parse().unwrap()), Some("unspecified"));
    assert_eq!(blocked("::0.0.0.1".parse().unwrap()), Some("loopback"));
}

proptest! {
    #[test]
    fn embedded_ipv4_classifies_as_itself(n in any::<u32>()) {
        let v4 = Ipv4Addr::from(n);
        let want = blocked(IpAddr::V4(v4));
        prop_assert_eq!(blocked(IpAddr::V6(v4.to_ipv6_mapped())), want);
        let nat64 = Ipv6Addr::from((0x0064_ff9bu128 << 96) | n as u128);
        prop_assert_eq!(blocked(IpAddr::V6(nat64)), want);
        let six_to_four = Ipv6Addr::from((0x2002u128 << 112) | ((n as u128) << 80) | 1);
        prop_assert_eq!(blocked(IpAddr::V6(six_to_four)), want);
        let compat = blocked(IpAddr::V6(v4.to_ipv6_compatible()));
        if n == 1 {
            prop_assert_eq!(compat, Some("loopback"));
        } else {
            prop_assert_eq!(compat, want);
        }
    }
}

#[test]
fn url_checks() {
    let u = |s: &str| url::Url::parse(s).unwrap();
    let https_only = Policy {
        allow_private: false,
        https_only: true,
    };
    assert_eq!(
        check_url(&u("https://shop.example.com/hook"), STRICT),
        Ok(())
    );
    assert_eq!(
        check_url(&u("http://shop.example.com/hook"), STRICT),
        Ok(())
    );
    assert_eq!(check_url(&u("https://8.8.8.8/"), STRICT), Ok(()));
    assert_eq!(
        check_url(&u("https://[2606:4700:4700::1111]:8443/"), STRICT),
        Ok(())
    );
    assert_eq!(
        check_url(&u("http://shop.example.com/"), https_only),
        Err("https_only: http:// targets are refused".into())
    );
    assert_eq!(
        check_url(&u("https://shop.example.com/"), https_only),
        Ok(())
    );
    let err = |s: &str, p| check_url(&u(s), p).unwrap_err();
    assert!(err("ftp://shop.example.com/", STRICT).starts_with("scheme: ftp://"));
    assert!(err("file:///etc/passwd", OPEN).starts_with("scheme: file://"));
    assert!(err("unix:/var/run/x.sock", OPEN).starts_with("scheme:"));
    assert!(err("https://user:pw@shop.example.com/", STRICT).starts_with("userinfo:"));
    assert!(err("https://user@shop.example.com/", OPEN).starts_with("userinfo:"));
    assert_eq!(
        err("http://127.0.0.1:9/", STRICT),
        "127.0.0.1 is a loopback address"
    );
    assert_eq!(err("http://[::1]/", STRICT), "::1 is a loopback address");
    assert_eq!(
        err("http://[::ffff:127.0.0.1]/", STRICT),
        "::ffff:127.0.0.1 is a loopback address"
    );
    assert_eq!(
        err("http://0.0.0.0/", STRICT),
        "0.0.0.0 is an unspecified address"
    );
    assert_eq!(
        err("http://169.254.169.254/latest/meta-data/", STRICT),
        "169.254.169.254 is a link-local address"
    );
    assert_eq!(
        err("http://[fd00::1]/", STRICT),
        "fd00::1 is a unique-local address"
    );
    // The URL parser normalises odd IPv4 spellings before we look.
    assert_eq!(
        err("http://0x7f.1/", STRICT),
        "127.0.0.1 is a loopback address"
    );
    assert_eq!(
        err("http://2130706433/", STRICT),
        "127.0.0.1 is a loopback address"
    );
    assert_eq!(err("http://10.1/", STRICT), "10.0.0.1 is a private address");
    // allow_private lets addresses through but not the other rules.
    assert_eq!(check_url(&u("http://127.0.0.1:9/"), OPEN), Ok(()));
    assert!(err(
        "http://127.0.0.1/",
        Policy {
            allow_private: true,
            https_only: true
        }
    )
    .starts_with("https_only"));
    // Hostnames wait for the resolver.
    assert_eq!(check_url(&u("http://localhost/"), STRICT), Ok(()));
    // Non-special schemes can lack a host.
    assert!(err("http+unix://x/", STRICT).starts_with("scheme:"));
}

#[tokio::test]
async fn vet_host_refuses_any_blocked_address() {
    let e = vet_host("localhost", 80, STRICT).await.unwrap_err();
    assert!(e.starts_with("localhost resolves to "), "{e}");
    assert!(e.ends_with("(loopback)"), "{e}");
    let ok = vet_host("localhost", 8080, OPEN).await.unwrap();
    assert!(!ok.is_empty() && ok.iter().all(|a| a.port() == 8080 && a.ip().is_loopback()));
    // IP literals, bracketed or not.
    assert_eq!(
        vet_host("10.0.0.1", 80, STRICT).await.unwrap_err(),
        "10.0.0.1 resolves to 10.0.0.1 (private)"
    );
    assert_eq!(
        vet_host("[::1]", 80, STRICT).await.unwrap_err(),
        "[::1] resolves to ::1 (loopback)"
    );
    assert_eq!(
        vet_host("8.8.8.8", 443, STRICT).await.unwrap(),
        vec!["8.8.8.8:443".parse().unwrap()]
    );
    let e = vet_host("no-such-host.invalid", 80, STRICT)
        .await
        .unwrap_err();
    assert!(
        e.starts_with("no-such-host.invalid does not resolve"),
        "{e}"
    );
}

/// A one-connection-at-a-time HTTP server on 127.0.0.1 answering every
/// request with `response`; returns its port.
fn serve(response: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = conn.write_all(response.as_bytes());
        }
    });
    port
}

const OK: &str = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn client_reaches_loopback_only_when_private_targets_are_allowed() {
    let port = serve(OK);
    let timeout = Duration::from_secs(5);
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("http://{host}:{port}/hook");
        let res = client(timeout, OPEN)
            .post(&url)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{url}");
    }
    let url = format!("http://localhost:{port}/hook");
    let err = client(timeout, STRICT).post(&url).send().await.unwrap_err();
    let msg = describe(&err);
    assert!(
        msg.starts_with("target refused: localhost resolves to"),
        "{msg}"
    );
    assert!(msg.contains("loopback"), "{msg}");
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let port = serve("HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let res = client(Duration::from_secs(5), OPEN)
        .post(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "http://169.254.169.254/");
}

#[tokio::test]
async fn client_sends_our_user_agent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(OK.as_bytes()).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    });
    client(Duration::from_secs(5), OPEN)
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    let req = seen.join().unwrap();
    let ua = format!("user-agent: ipn-relay/{}\r\n", env!("CARGO_PKG_VERSION"));
    assert!(req.contains(&ua), "{req}");
}

#[tokio::test]
async fn describe_timeouts_and_connect_failures() {
    // Accepts, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = client(Duration::from_millis(300), OPEN)
        .post(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    let msg = describe(&err);
    assert!(msg.starts_with("timed out"), "{msg}");
    drop(listener);

    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = client(Duration::from_secs(5), OPEN)
        .post(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    let msg = describe(&err);
    assert!(msg.starts_with("connect: "), "{msg}");
    assert!(!msg.contains("127.0.0.1:{port}/"), "{msg}");

    // A name that does not resolve is a connect failure, not a refusal.
    let err = client(Duration::from_secs(5), STRICT)
        .post("http://no-such-host.invalid/")
        .send()
        .await
        .unwrap_err();
    let msg = describe(&err);
    assert!(msg.starts_with("connect: "), "{msg}");
    assert!(
        msg.contains("no-such-host.invalid does not resolve"),
        "{msg}"
    );
}
