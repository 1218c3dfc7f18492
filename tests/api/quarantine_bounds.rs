//! The quarantine of failed authentications is bounded per request (SPEC
//! §4): headers without credentials, the body's length and SHA-256, and only
//! its first 4 KiB — so unsigned floods cannot fill the disk.

use base64::Engine;
use sha2::Digest;

use crate::helpers::*;

/// Bytes under `path`, recursively.
fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test]
async fn a_quarantined_request_keeps_length_hash_and_a_4_kib_head() {
    let app = spawn_app().await;
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let r = app
        .post_raw(
            "acme",
            body.clone(),
            &[
                ("X-Signature".into(), "00".into()),
                ("Authorization".into(), "Basic c2VjcmV0".into()),
            ],
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);

    let (code, q) = app.get_auth("/v1/admin/quarantine", ADMIN).await;
    assert_eq!(code, 200);
    let items = q["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{q}");
    let item = &items[0];
    assert_eq!(item["body_len"], 10_000, "{item}");
    assert_eq!(
        item["body_sha256"],
        hex::encode(sha2::Sha256::digest(&body)),
        "{item}"
    );
    let head = base64::engine::general_purpose::STANDARD
        .decode(item["body_head_base64"].as_str().expect("body_head_base64"))
        .unwrap();
    assert_eq!(head, body[..4096]);
    assert!(item.get("body_base64").is_none(), "no full body: {item}");
    let headers = item["headers"].to_string().to_lowercase();
    assert!(headers.contains("x-signature"), "{headers}");
    assert!(!headers.contains("authorization"), "{headers}");
    assert!(!headers.contains("c2vjcmv0"), "{headers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_floods_do_not_fill_the_disk() {
    // Each request from its own address, so no per-source limit stops the flood.
    let app = spawn_with(
        "",
        &format!("[ingress]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{BASE}"),
    )
    .await;
    let before = dir_size(app.dir.path());
    const N: usize = 300;
    const SIZE: usize = 512 * 1024;
    for i in 0..N {
        let body = vec![b'a' + (i % 26) as u8; SIZE];
        let xff = format!("198.51.{}.{}", i / 200, i % 200 + 1);
        let r = app
            .post_raw(
                "acme",
                body,
                &[
                    ("X-Signature".into(), "00".into()),
                    ("X-Forwarded-For".into(), xff),
                ],
            )
            .await;
        assert_eq!(r.status().as_u16(), 401, "request {i}");
    }
    let (_, q) = app.get_auth("/v1/admin/quarantine?limit=1000", ADMIN).await;

    // Stopping flushes everything the store holds.
    let dir = app.stop().await;
    let grown = dir_size(dir.path()).saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "{N} unsigned bodies of {SIZE} bytes grew the store by {grown} bytes"
    );
    let items = q["data"].as_array().unwrap();
    assert_eq!(items.len(), N);
    assert!(items.iter().all(|i| i["body_len"] == SIZE), "{}", items[0]);
}
