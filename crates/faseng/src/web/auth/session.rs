//! The dashboard's cookies: the session of a signed-in member and the short-lived state of a
//! sign-in under way. Both are signed (HMAC-SHA256, `axum-extra`'s [`SignedCookieJar`]) with a
//! key derived from the OAuth client secret and the webhook secret, so every replica and a
//! restarted faseng accept them; both carry their own expiry, checked here on the injectable
//! clock (a cookie's `Max-Age` only asks the browser to drop it).

use axum::http::HeaderMap;
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, Key, SameSite};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use deploy_core::Secret;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "faseng_session";
/// The sign-in state cookie's name (sent only to `/auth/`).
pub const STATE_COOKIE: &str = "faseng_oauth";
/// How long a session lasts.
pub const SESSION_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(8);
/// How long a sign-in may take at GitHub.
pub const STATE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Sets the session key apart from anything else made from the same secrets.
const KEY_DOMAIN: &str = "faseng dashboard session key v1";

/// The cookie signing key: 64 bytes of HMAC-SHA256 under the OAuth client secret over the
/// webhook secret (the same in every process of one deployment of faseng).
pub fn derive_key(client_secret: &Secret, webhook_secret: &Secret) -> Key {
    let mut bytes = [0u8; 64];
    for (i, chunk) in bytes.chunks_mut(32).enumerate() {
        let mut mac = Hmac::<Sha256>::new_from_slice(client_secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(format!("{KEY_DOMAIN}\0{i}\0").as_bytes());
        mac.update(webhook_secret.expose().as_bytes());
        chunk.copy_from_slice(&mac.finalize().into_bytes());
    }
    Key::from(&bytes)
}

/// 256 random bits as hex (CSRF tokens, OAuth states).
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(bytes))
}

/// A signed-in member, as the session cookie holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The GitHub login.
    pub login: String,
    /// The GitHub user id.
    pub user_id: u64,
    /// The session's CSRF token.
    pub csrf: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

/// A sign-in under way: the state sent to GitHub and the page to land on afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInState {
    /// The `state` parameter GitHub must hand back.
    pub state: String,
    /// The local path asked for.
    pub next: String,
    /// When this sign-in is too old to finish.
    pub expires_at: DateTime<Utc>,
}

/// Reads and writes the dashboard's signed cookies.
#[derive(Clone)]
pub struct Cookies {
    key: Key,
    secure: bool,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serializable"))
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
}

impl Cookies {
    /// Cookies signed with `key`; `secure` (the public URL is https) adds `Secure`.
    pub fn new(key: Key, secure: bool) -> Self {
        Self { key, secure }
    }

    fn jar(&self, headers: &HeaderMap) -> SignedCookieJar {
        SignedCookieJar::from_headers(headers, self.key.clone())
    }

    fn cookie(&self, name: &'static str, value: String, path: &'static str) -> Cookie<'static> {
        Cookie::build((name, value))
            .path(path)
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .build()
    }

    /// The request's session, when its cookie is signed by us and has not expired at `now`.
    pub fn session(&self, headers: &HeaderMap, now: DateTime<Utc>) -> Option<Session> {
        let cookie = self.jar(headers).get(SESSION_COOKIE)?;
        decode::<Session>(cookie.value()).filter(|s| s.expires_at > now)
    }

    /// Sets `session` (and drops the sign-in state).
    pub fn start_session(&self, headers: &HeaderMap, session: &Session) -> SignedCookieJar {
        let mut cookie = self.cookie(SESSION_COOKIE, encode(session), "/");
        cookie.set_max_age(time_span(SESSION_TTL));
        self.jar(headers)
            .add(cookie)
            .remove(self.removal(STATE_COOKIE, "/auth"))
    }

    /// Ends the session.
    pub fn end_session(&self, headers: &HeaderMap) -> SignedCookieJar {
        self.jar(headers).remove(self.removal(SESSION_COOKIE, "/"))
    }

    /// The sign-in under way, when its cookie is ours and not too old at `now`.
    pub fn sign_in_state(&self, headers: &HeaderMap, now: DateTime<Utc>) -> Option<SignInState> {
        let cookie = self.jar(headers).get(STATE_COOKIE)?;
        decode::<SignInState>(cookie.value()).filter(|s| s.expires_at > now)
    }

    /// Sets the state of a sign-in about to go to GitHub.
    pub fn begin_sign_in(&self, headers: &HeaderMap, state: &SignInState) -> SignedCookieJar {
        let mut cookie = self.cookie(STATE_COOKIE, encode(state), "/auth");
        cookie.set_max_age(time_span(STATE_TTL));
        self.jar(headers).add(cookie)
    }

    /// Drops the sign-in state (a sign-in that failed).
    pub fn drop_sign_in(&self, headers: &HeaderMap) -> SignedCookieJar {
        self.jar(headers)
            .remove(self.removal(STATE_COOKIE, "/auth"))
    }

    fn removal(&self, name: &'static str, path: &'static str) -> Cookie<'static> {
        self.cookie(name, String::new(), path)
    }
}

/// A chrono span as the cookie crate's `time` duration.
fn time_span(d: chrono::TimeDelta) -> time::Duration {
    time::Duration::seconds(d.num_seconds())
}

#[cfg(test)]
mod tests {
    use axum::http::header;
    use axum::response::IntoResponse as _;

    use super::*;

    fn cookies() -> Cookies {
        Cookies::new(
            derive_key(&Secret::new("client secret"), &Secret::new("webhook")),
            true,
        )
    }

    /// The `Cookie` request header a browser would send back for `jar`'s `Set-Cookie`s.
    fn sent_back(jar: SignedCookieJar) -> HeaderMap {
        let response = jar.into_response();
        let set: Vec<String> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let pairs: Vec<&str> = set
            .iter()
            .filter(|c| !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap())
            .collect();
        let mut headers = HeaderMap::new();
        if !pairs.is_empty() {
            headers.insert(header::COOKIE, pairs.join("; ").parse().unwrap());
        }
        headers
    }

    fn set_cookie_headers(jar: SignedCookieJar) -> Vec<String> {
        jar.into_response()
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn session(now: DateTime<Utc>) -> Session {
        Session {
            login: "octocat".into(),
            user_id: 583231,
            csrf: random_token().unwrap(),
            expires_at: now + SESSION_TTL,
        }
    }

    #[test]
    fn a_session_reads_back_until_it_expires_on_the_clock() {
        let now = Utc::now();
        let c = cookies();
        let s = session(now);
        let headers = sent_back(c.start_session(&HeaderMap::new(), &s));
        assert_eq!(c.session(&headers, now), Some(s.clone()));
        let later = now + SESSION_TTL - chrono::TimeDelta::seconds(1);
        assert!(c.session(&headers, later).is_some());
        assert_eq!(c.session(&headers, now + SESSION_TTL), None);
    }

    #[test]
    fn the_session_cookie_is_http_only_lax_secure_and_expiring() {
        let now = Utc::now();
        let set = set_cookie_headers(cookies().start_session(&HeaderMap::new(), &session(now)));
        let cookie = set
            .iter()
            .find(|c| c.starts_with("faseng_session="))
            .unwrap();
        for attribute in [
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=28800",
        ] {
            assert!(cookie.contains(attribute), "{attribute} not in {cookie}");
        }
        let http = Cookies::new(
            derive_key(&Secret::new("client secret"), &Secret::new("webhook")),
            false,
        );
        let set = set_cookie_headers(http.start_session(&HeaderMap::new(), &session(now)));
        assert!(set.iter().all(|c| !c.contains("Secure")), "{set:?}");
    }

    #[test]
    fn a_changed_or_foreign_cookie_is_no_session() {
        let now = Utc::now();
        let c = cookies();
        let headers = sent_back(c.start_session(&HeaderMap::new(), &session(now)));
        let value = headers[header::COOKIE].to_str().unwrap().to_owned();
        // Another login in the same signed envelope.
        let forged = value.replace(
            &encode(&session(now)).chars().take(8).collect::<String>(),
            "AAAAAAAA",
        );
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, forged.parse().unwrap());
        assert_eq!(c.session(&h, now), None);
        // A value made by hand, unsigned.
        let mut forged = session(now);
        forged.login = "mallory".into();
        h.insert(
            header::COOKIE,
            format!("{SESSION_COOKIE}={}", encode(&forged))
                .parse()
                .unwrap(),
        );
        assert_eq!(c.session(&h, now), None);
        // Signed under other secrets (another faseng).
        let other = Cookies::new(
            derive_key(&Secret::new("another app"), &Secret::new("webhook")),
            true,
        );
        assert_eq!(other.session(&headers, now), None);
    }

    #[test]
    fn replicas_with_the_same_secrets_agree() {
        let now = Utc::now();
        let one = cookies();
        let headers = sent_back(one.start_session(&HeaderMap::new(), &session(now)));
        assert!(cookies().session(&headers, now).is_some());
    }

    #[test]
    fn a_sign_in_state_lives_ten_minutes_under_auth_only() {
        let now = Utc::now();
        let c = cookies();
        let state = SignInState {
            state: random_token().unwrap(),
            next: "/apps/demo".into(),
            expires_at: now + STATE_TTL,
        };
        let jar = c.begin_sign_in(&HeaderMap::new(), &state);
        let set = set_cookie_headers(jar.clone());
        assert!(set[0].contains("Path=/auth") && set[0].contains("Max-Age=600"));
        let headers = sent_back(jar);
        assert_eq!(c.sign_in_state(&headers, now), Some(state));
        assert_eq!(c.sign_in_state(&headers, now + STATE_TTL), None);
        // A session cookie is no sign-in state, and the reverse.
        assert_eq!(c.session(&headers, now), None);
    }

    #[test]
    fn ending_a_session_expires_its_cookie() {
        let c = cookies();
        let headers = sent_back(c.start_session(&HeaderMap::new(), &session(Utc::now())));
        let set = set_cookie_headers(c.end_session(&headers));
        assert!(
            set.iter()
                .any(|c| c.starts_with("faseng_session=") && c.contains("Max-Age=0")),
            "{set:?}"
        );
    }
}
