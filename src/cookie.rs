//! The signed session cookie: `<session id>.<HMAC-SHA256(cookie_secret, id)>`.
//!
//! A tampered, unknown or malformed cookie decodes to "no session": the visitor is a
//! Guest, never an error. The tag is truncated to 128 bits (22 base64 characters).
//!
//! Key rotation: cookies are signed with `cookie_secret`; cookies signed with any
//! of `cookie_previous_secrets` are still accepted, so a new secret can be rolled
//! out without logging anyone out (put the old one in the previous list first).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite as CookieSameSite};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{Config, SameSite, Secret};
use crate::session::SessionId;

const TAG_BYTES: usize = 16;

/// Encodes and checks session cookies with the cluster's cookie secret.
#[derive(Clone)]
pub struct CookieCodec {
    name: String,
    secure: bool,
    same_site: CookieSameSite,
    /// HMAC states keyed once: the current secret first, then the previous ones.
    keys: Vec<Hmac<Sha256>>,
}

fn keyed(secret: &Secret) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length")
}

impl CookieCodec {
    /// The codec of `config`'s cookie: name, attributes and keys.
    pub fn new(config: &Config) -> CookieCodec {
        CookieCodec {
            name: config.cookie_name.clone(),
            secure: config.cookie_secure,
            same_site: match config.cookie_same_site {
                SameSite::Strict => CookieSameSite::Strict,
                SameSite::Lax => CookieSameSite::Lax,
                SameSite::None => CookieSameSite::None,
            },
            keys: std::iter::once(&config.cookie_secret)
                .chain(&config.cookie_previous_secrets)
                .map(keyed)
                .collect(),
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn tag(&self, id: &SessionId) -> [u8; TAG_BYTES] {
        match self.keys.first() {
            Some(key) => Self::tag_with(key, id),
            None => [0; TAG_BYTES],
        }
    }

    fn tag_with(key: &Hmac<Sha256>, id: &SessionId) -> [u8; TAG_BYTES] {
        let mut mac = key.clone();
        mac.update(id.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The cookie value for `id`.
    pub fn encode(&self, id: &SessionId) -> String {
        format!("{}.{}", id, URL_SAFE_NO_PAD.encode(self.tag(id)))
    }

    /// The session id of a cookie value, if its signature is valid.
    pub fn decode(&self, value: &str) -> Option<SessionId> {
        let (id, tag) = value.split_once('.')?;
        let id = SessionId::parse(id)?;
        let mut given = [0u8; TAG_BYTES];
        if URL_SAFE_NO_PAD.decode_slice(tag, &mut given).ok()? != TAG_BYTES {
            return None;
        }
        // Constant-time comparison of the truncated tag, newest key first.
        let valid = self
            .keys
            .iter()
            .any(|key| bool::from(Self::tag_with(key, &id).ct_eq(&given)));
        valid.then_some(id)
    }

    /// The session id named by a request's cookie, if any and valid.
    ///
    /// Reads the first cookie of that name straight from the `Cookie` headers, as
    /// `HttpRequest::cookie` would, without parsing every other cookie into an
    /// allocated jar.
    pub fn from_request(&self, req: &actix_web::HttpRequest) -> Option<SessionId> {
        let value = req
            .headers()
            .get_all(actix_web::http::header::COOKIE)
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                (name.trim() == self.name).then(|| value.trim())
            })?;
        if value.contains('%') {
            // Percent-encoded: let actix's parser decode it.
            return self.decode(req.cookie(&self.name)?.value());
        }
        self.decode(value)
    }

    /// The `Set-Cookie` for a session.
    pub fn cookie(&self, id: &SessionId) -> Cookie<'static> {
        Cookie::build(self.name.clone(), self.encode(id))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .finish()
    }

    /// A `Set-Cookie` that makes the browser forget the session.
    pub fn removal(&self) -> Cookie<'static> {
        let mut cookie = Cookie::build(self.name.clone(), "")
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .max_age(CookieDuration::ZERO)
            .finish();
        cookie.make_removal();
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(secret: &str) -> CookieCodec {
        let config = Config {
            cookie_secret: Secret::new(secret.as_bytes().to_vec()),
            ..Config::default()
        };
        CookieCodec::new(&config)
    }

    #[test]
    fn a_signed_cookie_round_trips() {
        let c = codec("0123456789abcdef0123456789abcdef");
        let id = SessionId::random();
        assert_eq!(c.decode(&c.encode(&id)), Some(id));
    }

    #[test]
    fn tampered_or_foreign_cookies_are_rejected() {
        let c = codec("0123456789abcdef0123456789abcdef");
        let other = codec("another-secret-another-secret-xx");
        let id = SessionId::random();
        let value = c.encode(&id);
        assert_eq!(other.decode(&value), None, "signed with another secret");
        let other_id = SessionId::random();
        let swapped = format!("{}.{}", other_id, value.split_once('.').unwrap().1);
        assert_eq!(c.decode(&swapped), None, "signature of another id");
        let mut flipped = value.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(c.decode(std::str::from_utf8(&flipped).unwrap()), None);
        for garbage in ["", ".", "abc", "x.y.z", &id.to_string()] {
            assert_eq!(c.decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn rotated_keys_keep_old_cookies_valid() {
        let old = codec("the-old-secret-the-old-secret-xx");
        let id = SessionId::random();
        let cookie = old.encode(&id);
        let rotated = CookieCodec::new(&Config {
            cookie_secret: Secret::new(b"the-new-secret-the-new-secret-xx".to_vec()),
            cookie_previous_secrets: vec![Secret::new(
                b"the-old-secret-the-old-secret-xx".to_vec(),
            )],
            ..Config::default()
        });
        assert_eq!(
            rotated.decode(&cookie),
            Some(id),
            "signed with the previous key"
        );
        let fresh = rotated.encode(&id);
        assert_ne!(fresh, cookie, "new cookies use the new key");
        assert_eq!(rotated.decode(&fresh), Some(id));
        assert_eq!(old.decode(&fresh), None);
        let dropped = codec("the-new-secret-the-new-secret-xx");
        assert_eq!(
            dropped.decode(&cookie),
            None,
            "once dropped from the list, the old key is refused"
        );
    }

    #[test]
    fn the_cookie_has_the_documented_attributes() {
        let c = codec("0123456789abcdef0123456789abcdef");
        let cookie = c.cookie(&SessionId::random());
        assert_eq!(cookie.name(), "SESSION");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(CookieSameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
    }
}
