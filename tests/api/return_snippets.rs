//! The README's merchant-side snippets ("Verifying a signed return"), taken
//! from README.md as it is now and run with `python3` and `node` against a
//! signed 303 Location from the real app: the genuine URL verifies, a
//! re-stamped `ts`, a changed parameter, a missing signature, a wrong secret
//! and a stale URL do not, and hostile URLs (a repeated signed name, a `ts`
//! that is no number, a non-ASCII signature) get `false`, not an exception.
//! A missing interpreter fails the test.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use url::Url;

use crate::helpers::*;
use crate::returns::{applied, follow, urlencode};

const HEADING: &str = "### Verifying a signed return (merchant side)";
const SECRET: &str = "rs_snippets_5b4a3c2d";

/// Appended to the Python snippet: each case of stdin through
/// `verify_return`, its own clock unless the case gives `now`.
const PY_HARNESS: &str = r#"
# test harness
import json as _json, sys as _sys

def _answer(c):
    try:
        if c["now"] is None:
            return verify_return(c["url"], c["secret"])
        return verify_return(c["url"], c["secret"], now=c["now"])
    except Exception as e:
        return f"raised {type(e).__name__}: {e}"

print(_json.dumps([_answer(c) for c in _json.load(_sys.stdin)]))
"#;

/// The same for the Node snippet's `verifyReturn`.
const JS_HARNESS: &str = r#"
// test harness
const _answer = (c) => {
  try {
    return c.now === null
      ? verifyReturn(c.url, c.secret)
      : verifyReturn(c.url, c.secret, undefined, c.now);
  } catch (e) {
    return `raised ${e.name}: ${e.message}`;
  }
};
console.log(JSON.stringify(JSON.parse(require("node:fs").readFileSync(0, "utf8")).map(_answer)));
"#;

/// The fenced code blocks of the README section `heading`, as
/// (info string, code), in order. The section ends at the next heading
/// outside a fence (a `#` comment inside a block is not one).
fn section_blocks(readme: &str, heading: &str) -> Vec<(String, String)> {
    let mut lines = readme.lines();
    assert!(
        lines.by_ref().any(|l| l.trim_end() == heading),
        "README.md has no section {heading:?}"
    );
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in lines {
        match open.as_mut() {
            Some(_) if line.trim_start().starts_with("```") => blocks.push(open.take().unwrap()),
            Some((_, code)) => {
                code.push_str(line);
                code.push('\n');
            }
            None if line.starts_with('#') => break,
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    open = Some((info.trim().to_string(), String::new()));
                }
            }
        }
    }
    assert!(open.is_none(), "unclosed code block in {heading:?}");
    blocks
}

/// The one block of the section whose info string is one of `langs`.
fn snippet(blocks: &[(String, String)], langs: &[&str]) -> String {
    let found: Vec<&String> = blocks
        .iter()
        .filter(|(info, _)| langs.contains(&info.as_str()))
        .map(|(_, code)| code)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {langs:?} block under {HEADING:?}, found {}",
        found.len()
    );
    found[0].clone()
}

/// Run `program file` with `script` in the file and `cases` (JSON) on
/// stdin; the script prints a JSON array, one answer per case: what the
/// snippet returned, or the exception it raised as a string.
fn run(
    program: &str,
    package: &str,
    lang: &str,
    ext: &str,
    script: &str,
    cases: &Value,
) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("verify.{ext}"));
    std::fs::write(&file, script).unwrap();
    let mut child = match Command::new(program)
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed (not in PATH), so the README's {lang} snippet \
             under {HEADING:?} cannot be checked: install Debian's `{package}` \
             (scripts/test does when it is missing)"
        ),
        Err(e) => panic!("cannot start `{program}`: {e}"),
    };
    // An interpreter that exits early closes the pipe; its status and
    // stderr below say why.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{program}` running the README snippet failed ({}):\n{stderr}\n--- script ---\n{script}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("`{program}` printed {stdout:?}, not a JSON array ({e}); stderr: {stderr}")
    })
}

/// `url` with its `name` parameter's raw `k=v` segment replaced.
fn with_param(url: &Url, name: &str, value: &str) -> String {
    let q = url.query().expect("a query");
    let mut found = false;
    let segs: Vec<String> = q
        .split('&')
        .map(|seg| {
            if seg.split('=').next() == Some(name) {
                found = true;
                format!("{name}={value}")
            } else {
                seg.to_string()
            }
        })
        .collect();
    assert!(found, "no {name} in {url}");
    let mut u = url.clone();
    u.set_query(Some(&segs.join("&")));
    assert_ne!(&u, url, "{name}={value} changes nothing");
    u.to_string()
}

fn with_query(url: &Url, query: &str) -> String {
    let mut u = url.clone();
    u.set_query(Some(query));
    u.to_string()
}

fn without_param(url: &Url, name: &str) -> String {
    let q = url.query().expect("a query");
    let segs: Vec<&str> = q
        .split('&')
        .filter(|seg| seg.split('=').next() != Some(name))
        .collect();
    let mut u = url.clone();
    u.set_query(Some(&segs.join("&")));
    assert_ne!(&u, url, "no {name} in {url}");
    u.to_string()
}

#[tokio::test]
async fn the_readme_return_snippets_verify_a_real_signed_return() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = section_blocks(&readme, HEADING);
    let python = snippet(&blocks, &["python", "py", "python3"]);
    let node = snippet(&blocks, &["js", "javascript", "node"]);

    // A signed return, with values that need RFC 3986 encoding (space,
    // UTF-8, `+&=`, and `!'()*`, which encodeURIComponent would keep).
    let body = BASE.replace(
        "default_site_url = \"https://shop.example.com/checkout/return\"",
        &format!(
            "default_site_url = \"https://shop.example.com/checkout/return\"\nreturn_secret = \"{SECRET}\""
        ),
    );
    assert_ne!(body, BASE);
    let app = spawn_with("", &body).await;
    let pay = "snip 1é";
    let (code, v) = register(
        &app,
        SHOP_KEY,
        &json!({"payment_id": pay, "merchant_site_url": "https://shop.example.com/done?order=7"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    applied(
        &app,
        &ipn(
            "snip_1",
            pay,
            "Succeed",
            json!({"authorization_id": "au+1&x=2!'()*~"}),
        ),
    )
    .await;
    let loc = follow(&app, &urlencode(pay)).await;
    eprintln!("signed return URL: {loc}");
    let q: std::collections::HashMap<String, String> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["status"], "succeeded", "{loc}");
    assert!(
        loc.query().unwrap().contains("%21%27%28%29%2A~"),
        "the URL carries !'()* encoded: {loc}"
    );
    let ts: i64 = q["ts"].parse().expect("ts is unix seconds");

    // (what, url, secret, `now` for the snippet or its own clock, expected)
    let genuine = loc.to_string();
    let cases: Vec<(&str, String, &str, Option<i64>, bool)> = vec![
        ("genuine", genuine.clone(), SECRET, None, true),
        (
            "genuine, a minute later",
            genuine.clone(),
            SECRET,
            Some(ts + 60),
            true,
        ),
        (
            "ts re-stamped",
            with_param(&loc, "ts", &(ts + 1).to_string()),
            SECRET,
            None,
            false,
        ),
        (
            "status changed",
            with_param(&loc, "status", "failed"),
            SECRET,
            None,
            false,
        ),
        (
            "payment_id changed",
            with_param(&loc, "payment_id", "snip%202%C3%A9"),
            SECRET,
            None,
            false,
        ),
        (
            "authorization_id changed",
            with_param(&loc, "authorization_id", "au%2B1"),
            SECRET,
            None,
            false,
        ),
        (
            "no signature",
            without_param(&loc, "signature"),
            SECRET,
            None,
            false,
        ),
        (
            "wrong secret",
            genuine.clone(),
            "rs_not_the_secret",
            None,
            false,
        ),
        (
            "stale (10 minutes later)",
            genuine.clone(),
            SECRET,
            Some(ts + 600),
            false,
        ),
        // Hostile URLs: a `bool`, not an exception, and no second reading.
        (
            "status repeated in front",
            with_query(&loc, &format!("status=failed&{}", loc.query().unwrap())),
            SECRET,
            None,
            false,
        ),
        (
            "ts not a number",
            with_param(&loc, "ts", "soon"),
            SECRET,
            None,
            false,
        ),
        (
            "non-ASCII signature of the right length",
            with_param(
                &loc,
                "signature",
                &format!("%C3%A9{}", &q["signature"][1..]),
            ),
            SECRET,
            None,
            false,
        ),
    ];
    // The service's own verifier agrees on every signature (it leaves the
    // age of `ts` to the caller), so the tampered URLs are well-formed.
    for (what, url, secret, now, want) in &cases {
        if now.is_none() {
            let ok = ipn_relay::returns::verify(&Url::parse(url).unwrap(), secret.as_bytes());
            assert_eq!(ok, *want, "returns::verify, {what}: {url}");
        }
    }
    let input = Value::Array(
        cases
            .iter()
            .map(|(_, url, secret, now, _)| json!({"url": url, "secret": secret, "now": now}))
            .collect(),
    );

    let py_script = format!("{python}\n{PY_HARNESS}");
    let js_script = format!("{node}\n{JS_HARNESS}");
    for (program, package, lang, ext, script) in [
        ("python3", "python3", "Python", "py", &py_script),
        ("node", "nodejs", "Node", "js", &js_script),
    ] {
        let got = run(program, package, lang, ext, script, &input);
        assert_eq!(got.len(), cases.len(), "{program}: {got:?}");
        for ((what, url, secret, now, want), got) in cases.iter().zip(&got) {
            assert_eq!(
                got,
                &Value::Bool(*want),
                "README {lang} snippet ({program}), {what}: url {url}, secret {secret:?}, now {now:?}"
            );
        }
    }
}
