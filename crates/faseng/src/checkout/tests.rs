//! Unit tests of clone sources, credentials, checkouts and overlays.

use super::*;

#[test]
fn base64_matches_known_vectors() {
    assert_eq!(base64_encode(b""), "");
    assert_eq!(base64_encode(b"f"), "Zg==");
    assert_eq!(base64_encode(b"fo"), "Zm8=");
    assert_eq!(base64_encode(b"foo"), "Zm9v");
    assert_eq!(
        base64_encode(b"x-access-token:abc"),
        "eC1hY2Nlc3MtdG9rZW46YWJj"
    );
}

fn parse(text: &str) -> anyhow::Result<CloneSource> {
    CloneSource::parse(text, Some(Path::new("/srv/faseng")))
}

#[test]
fn clone_urls_are_parsed_and_anything_git_could_misread_is_refused() {
    assert_eq!(
        parse("file:///tmp/r").unwrap(),
        CloneSource::Local("/tmp/r".into())
    );
    assert_eq!(
        parse("/tmp/r").unwrap(),
        CloneSource::Local("/tmp/r".into())
    );
    assert_eq!(
        parse(".").unwrap(),
        CloneSource::Local("/srv/faseng".into()),
        "relative to faseng's directory"
    );
    assert_eq!(
        parse("repos/x").unwrap(),
        CloneSource::Local("/srv/faseng/repos/x".into())
    );
    assert!(matches!(
        parse("https://github.com/o/r.git").unwrap(),
        CloneSource::Remote(_)
    ));
    assert!(matches!(
        parse("ssh://git@h/o/r").unwrap(),
        CloneSource::Remote(_)
    ));
    assert!(
        CloneSource::parse("../../etc", None).is_err(),
        "a relative path only from the operator"
    );
    for bad in [
        "-uhttps://x",
        "ext::sh -c touch% /tmp/pwned",
        "https://h/x y",
        "fd::3",
        "git@github.com:o/r.git",
        "ftp://h/r",
        "https://",
        "",
        "file://remote-host/r",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

fn github() -> GitCredentials {
    GitCredentials::new("https://api.github.com", Some(Secret::new("ghp_token")))
}

fn token_goes_to(url: &str) -> bool {
    let source = parse(url).unwrap();
    github().token_for(&source).is_some()
}

#[test]
fn the_token_goes_only_to_the_github_origin_over_https() {
    assert!(token_goes_to("https://github.com/o/r.git"));
    assert!(
        token_goes_to("https://GitHub.COM/o/r.git"),
        "hosts ignore case"
    );
    assert!(
        token_goes_to("https://github.com:443/o/r.git"),
        "the default port"
    );
    for elsewhere in [
        "https://evil.example?@github.com/o/r.git",
        "https://evil.example#@github.com/o/r.git",
        "https://github.com@evil.example/o/r.git",
        "https://github.com.evil.example/o/r.git",
        "https://github.com./o/r.git",
        "https://github.com:8443/o/r.git",
        "http://github.com/o/r.git",
        "ssh://git@github.com/o/r.git",
        "https://gіthub.com/o/r.git",
        "https://user:pass@github.com/o/r.git",
        "https://api.github.com/o/r.git",
        "file:///github.com/o/r.git",
    ] {
        assert!(!token_goes_to(elsewhere), "{elsewhere}");
    }
}

#[test]
fn enterprise_and_local_fakes_keep_their_own_origin() {
    let ghe = GitCredentials::new("https://ghe.corp/api/v3", Some(Secret::new("t")));
    let url = |u: &str| CloneSource::parse(u, None).unwrap();
    assert!(ghe.token_for(&url("https://ghe.corp/o/r.git")).is_some());
    assert!(ghe.token_for(&url("https://github.com/o/r.git")).is_none());
    let fake = GitCredentials::new("http://127.0.0.1:3000", Some(Secret::new("t")));
    assert!(
        fake.token_for(&url("http://127.0.0.1:3000/o/r.git"))
            .is_some()
    );
    assert!(
        fake.token_for(&url("http://127.0.0.1:3001/o/r.git"))
            .is_none()
    );
    assert!(
        GitCredentials::none()
            .token_for(&url("https://github.com/o/r"))
            .is_none()
    );
}

#[test]
fn shown_urls_carry_no_credentials() {
    assert_eq!(parse("https://u:p@h/x").unwrap().shown(), "https://***@h/x");
    assert_eq!(parse("https://h/x@y").unwrap().shown(), "https://h/x@y");
}

#[test]
fn overlay_copies_files_over_the_checkout() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("config/deploy")).unwrap();
    std::fs::write(src.path().join("config/deploy/edge.rb"), "new").unwrap();
    std::fs::write(src.path().join("deploy.sh"), "x").unwrap();
    std::fs::create_dir_all(dst.path().join("config/deploy")).unwrap();
    std::fs::write(dst.path().join("config/deploy/edge.rb"), "old").unwrap();
    assert_eq!(overlay(src.path(), dst.path()).unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(dst.path().join("config/deploy/edge.rb")).unwrap(),
        "new"
    );
}
