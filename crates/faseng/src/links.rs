//! Log links. A run's log page, plain log and event stream are reachable only through the
//! link faseng posts as `log_url`: `{public_url}/deployments/{owner}/{repo}/{id}/{secret}`,
//! where `secret` is an HMAC-SHA256 of the repository and deployment id under the link key.
//! Nobody without the key can make a link, and one run's secret opens no other run.

use deploy_core::{RepoName, Secret};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The fewest characters a link key may have.
pub const MIN_KEY_CHARS: usize = 32;

/// Sets link secrets apart from any other MAC ever made with the same key.
const DOMAIN: &str = "faseng log link v1";

/// Hex characters of a link secret (128 bits).
const SECRET_HEX_CHARS: usize = 32;

/// The key log links are signed with (`FASENG_LINK_KEY`, else the one kept in the store).
#[derive(Clone)]
pub struct LinkKey(Secret);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(***)")
    }
}

impl LinkKey {
    /// A key from its text; refused when shorter than [`MIN_KEY_CHARS`].
    pub fn new(key: &str) -> anyhow::Result<Self> {
        let chars = key.chars().count();
        anyhow::ensure!(
            chars >= MIN_KEY_CHARS,
            "a link key must be at least {MIN_KEY_CHARS} characters long; this one has {chars} \
             (make one with `openssl rand -hex 32`)"
        );
        Ok(Self(Secret::new(key)))
    }

    /// A new random key: 256 bits from the operating system, as hex.
    pub fn generate() -> anyhow::Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for a link key: {e}"))?;
        Ok(hex::encode(bytes))
    }

    /// The key itself: to keep it out of run logs (the redactor), nothing else.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The secret in the link of deployment `id` of `repo`.
    pub fn secret(&self, repo: &RepoName, id: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(format!("{DOMAIN}\0{repo}\0{id}").as_bytes());
        let mut secret = hex::encode(mac.finalize().into_bytes());
        secret.truncate(SECRET_HEX_CHARS);
        secret
    }

    /// Whether a request presenting `presented_secret` may read the log of deployment `id` of
    /// `repo`; compared in constant time. This is the one place that decides who reads a log
    /// (a signed-in dashboard session would be checked here, beside the link secret).
    pub fn may_read_log(&self, repo: &RepoName, id: u64, presented_secret: &str) -> bool {
        self.secret(repo, id)
            .as_bytes()
            .ct_eq(presented_secret.as_bytes())
            .into()
    }
}

/// The path of a run's log page, secret included; its plain log is `{path}/log`, its event
/// stream `{path}/events`.
pub fn page_path(repo: &RepoName, id: u64, secret: &str) -> String {
    format!("/deployments/{repo}/{id}/{secret}")
}

/// Makes the links faseng posts: the public base URL and the link key.
#[derive(Debug, Clone)]
pub struct LogLinks {
    base: String,
    key: LinkKey,
}

impl LogLinks {
    /// Links under `public_url` (`FASENG_PUBLIC_URL`), signed with `key`.
    pub fn new(public_url: &str, key: LinkKey) -> Self {
        Self {
            base: public_url.trim_end_matches('/').to_owned(),
            key,
        }
    }

    /// The log page of deployment `id` of `repo` (the `log_url` of its statuses).
    pub fn page(&self, repo: &RepoName, id: u64) -> String {
        format!(
            "{}{}",
            self.base,
            page_path(repo, id, &self.key.secret(repo, id))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn key(text: &str) -> LinkKey {
        LinkKey::new(&format!("{text:-<32}")).unwrap()
    }

    #[test]
    fn a_secret_is_128_bits_of_hex_and_the_same_for_the_same_run_and_key() {
        let k = key("one");
        let s = k.secret(&repo("o/r"), 7);
        assert_eq!(s.len(), 32);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()), "{s}");
        assert_eq!(key("one").secret(&repo("o/r"), 7), s);
    }

    #[test]
    fn a_secret_opens_its_own_run_only() {
        let k = key("one");
        let s = k.secret(&repo("o/r"), 7);
        assert!(k.may_read_log(&repo("o/r"), 7, &s));
        assert!(!k.may_read_log(&repo("o/r"), 8, &s));
        assert!(!k.may_read_log(&repo("o/r"), 70, &s));
        assert!(!k.may_read_log(&repo("o/r7"), 7, &s));
        assert!(!k.may_read_log(&repo("other/r"), 7, &s));
        assert!(!key("two").may_read_log(&repo("o/r"), 7, &s));
    }

    #[test]
    fn a_missing_short_or_altered_secret_opens_nothing() {
        let k = key("one");
        let s = k.secret(&repo("o/r"), 7);
        assert!(!k.may_read_log(&repo("o/r"), 7, ""));
        assert!(!k.may_read_log(&repo("o/r"), 7, &s[..31]));
        assert!(!k.may_read_log(&repo("o/r"), 7, &format!("{s}0")));
        assert!(!k.may_read_log(&repo("o/r"), 7, &s.to_uppercase()));
        let mut flipped = s.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!k.may_read_log(&repo("o/r"), 7, &String::from_utf8(flipped).unwrap()));
    }

    #[test]
    fn the_repository_and_id_cannot_be_shifted_into_each_other() {
        let k = key("one");
        assert_ne!(
            k.secret(&repo("o/r1"), 23),
            k.secret(&repo("o/r12"), 3),
            "the id is separated from the repository"
        );
    }

    #[test]
    fn a_key_shorter_than_32_characters_is_refused_with_its_length() {
        let e = LinkKey::new("short").unwrap_err().to_string();
        assert!(
            e.contains("at least 32 characters") && e.contains("has 5"),
            "{e}"
        );
        assert!(!e.contains("short"), "the key must not be echoed: {e}");
        assert!(LinkKey::new(&"k".repeat(32)).is_ok());
    }

    #[test]
    fn generated_keys_are_long_enough_and_differ() {
        let a = LinkKey::generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(LinkKey::new(&a).is_ok());
        assert_ne!(a, LinkKey::generate().unwrap());
    }

    #[test]
    fn a_link_is_the_page_path_under_the_public_url_and_hides_the_key_when_printed() {
        let k = key("one");
        let links = LogLinks::new("https://faseng.example/", k.clone());
        let secret = k.secret(&repo("o/r"), 7);
        assert_eq!(
            links.page(&repo("o/r"), 7),
            format!("https://faseng.example/deployments/o/r/7/{secret}")
        );
        assert_eq!(
            page_path(&repo("o/r"), 7, &secret),
            format!("/deployments/o/r/7/{secret}")
        );
        assert!(!format!("{links:?}").contains(k.expose()));
    }
}
