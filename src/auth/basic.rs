//! HTTP Basic (RFC 7617): `Authorization: Basic base64(user:pass)`. Used by
//! providers that cannot sign, e.g. Adyen's optional basic auth.

use actix_web::http::header::HeaderMap;
use subtle::Choice;

use super::mac::{b64_decode, b64_encode, ct_eq};
use super::{first_secret, header_str, secrets, AuthConfig, AuthError, SignError, Signed};

const HEADER: &str = "Authorization";

pub(super) fn verify(cfg: &AuthConfig, headers: &HeaderMap) -> Result<(), AuthError> {
    let username = cfg
        .username
        .as_deref()
        .ok_or(AuthError::Misconfigured("basic needs a username"))?;
    let raw = header_str(headers, HEADER)?;
    let (scheme, creds) = raw.trim().split_once(' ').ok_or(AuthError::NotBasic)?;
    // The scheme name is case-insensitive (RFC 7235 §2.1).
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::NotBasic);
    }
    let decoded =
        b64_decode(creds.trim()).ok_or_else(|| AuthError::MalformedHeader(HEADER.to_owned()))?;
    // Split at the first colon: user-ids cannot contain one, passwords can.
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| AuthError::MalformedHeader(HEADER.to_owned()))?;
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    // Evaluate everything before deciding, so timing does not tell whether
    // the user or the password was wrong, or which secret matched.
    let mut pass_ok = Choice::from(0);
    for secret in secrets(cfg)? {
        pass_ok |= ct_eq(pass, secret.as_bytes());
    }
    if bool::from(ct_eq(user, username.as_bytes()) & pass_ok) {
        Ok(())
    } else {
        Err(AuthError::BadCredentials)
    }
}

pub(super) fn sign(cfg: &AuthConfig) -> Result<Signed, SignError> {
    let username = cfg
        .username
        .as_deref()
        .ok_or(SignError::Misconfigured("basic needs a username"))?;
    let creds = b64_encode(format!("{username}:{}", first_secret(cfg)?).as_bytes());
    Ok(Signed::header(HEADER, format!("Basic {creds}")))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::auth::test_support::{cfg, headers};
    use crate::auth::Scheme;

    fn config() -> AuthConfig {
        let mut c = cfg(Scheme::Basic, &["pw-old", "pw:new"]);
        c.username = Some("adyen".into());
        c
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    fn check(value: &str) -> Result<(), AuthError> {
        verify(&config(), &headers(&[("Authorization", value)]))
    }

    #[test]
    fn right_user_and_any_password() {
        assert_eq!(check(&basic("adyen:pw-old")), Ok(()));
        assert_eq!(check(&basic("adyen:pw:new")), Ok(()));
        let lower = basic("adyen:pw-old").replacen("Basic", "basic", 1);
        assert_eq!(check(&lower), Ok(()));
    }

    #[test]
    fn wrong_user_or_password() {
        for up in [
            "adyen:wrong",
            "Adyen:pw-old",
            "other:pw-old",
            "adyen:",
            ":pw-old",
            "adyen:pw-old ",
        ] {
            assert_eq!(check(&basic(up)), Err(AuthError::BadCredentials), "{up}");
        }
    }

    #[test]
    fn malformed_header() {
        let malformed = Err(AuthError::MalformedHeader("Authorization".into()));
        assert_eq!(check("Basic !!!"), malformed);
        assert_eq!(check(&basic("no-colon")), malformed);
        assert_eq!(check("Basic"), Err(AuthError::NotBasic));
        assert_eq!(
            verify(&config(), &headers(&[])),
            Err(AuthError::MissingHeader("Authorization".into()))
        );
    }

    #[test]
    fn non_basic_scheme() {
        assert_eq!(check("Bearer abc.def"), Err(AuthError::NotBasic));
        let digest = basic("adyen:pw-old").replacen("Basic", "Digest", 1);
        assert_eq!(check(&digest), Err(AuthError::NotBasic));
    }

    #[test]
    fn misconfigured_without_username() {
        let c = cfg(Scheme::Basic, &["pw"]);
        let h = headers(&[("Authorization", &basic("x:pw"))]);
        assert!(matches!(verify(&c, &h), Err(AuthError::Misconfigured(_))));
        assert!(matches!(sign(&c), Err(SignError::Misconfigured(_))));
    }

    #[test]
    fn sign_uses_first_secret() {
        let s = sign(&config()).unwrap();
        assert_eq!(
            s.headers,
            vec![("Authorization".to_owned(), basic("adyen:pw-old"))]
        );
    }
}
