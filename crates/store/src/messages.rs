//! Texts the store produces (start-up warnings about the backend).

/// The start-up warning when Redis, holding the queue, may lose what it acknowledged:
/// `appendonly` and `appendfsync` as `CONFIG GET` gave them. `None` when a write Redis
/// answered is on disk first (`appendonly yes`, `appendfsync always`).
pub fn redis_durability_warning(appendonly: &str, appendfsync: &str) -> Option<String> {
    const FIX: &str =
        "run Redis with --appendonly yes --appendfsync always (docker-compose.yml does)";
    if !appendonly.eq_ignore_ascii_case("yes") {
        return Some(format!(
            "Redis has appendonly {appendonly}: it keeps the queue in memory and in its periodic snapshots only, so a Redis crash loses every webhook faseng acknowledged (202) since the last snapshot, and GitHub does not send them again; {FIX}"
        ));
    }
    if appendfsync.eq_ignore_ascii_case("always") {
        return None;
    }
    let window = if appendfsync.eq_ignore_ascii_case("everysec") {
        "about the last second"
    } else {
        "the time since the system last flushed its disk buffers (often up to 30 seconds)"
    };
    Some(format!(
        "Redis has appendfsync {appendfsync}: a crash of Redis or its machine can lose the webhooks faseng acknowledged (202) in {window}, and GitHub does not send them again; {FIX}"
    ))
}

/// The start-up warning when Redis refused `CONFIG GET` (managed services often do).
pub fn redis_durability_unknown(error: &str) -> String {
    format!(
        "could not check Redis persistence (CONFIG GET: {error}): unless it runs with appendonly yes and appendfsync always, a Redis crash can lose webhooks faseng acknowledged (202)"
    )
}

/// The reply of a web action whose claim lapsed before chima finished it (it is not tried
/// again: it may have been half done).
pub const WEB_ACTION_STOPPED: &str = "chima stopped while doing it, so it was not finished and will not be tried again; check the deployment and the desk, then ask again";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_durability_is_warned_about_with_what_a_crash_loses() {
        assert_eq!(redis_durability_warning("yes", "always"), None);
        let off = redis_durability_warning("no", "everysec").unwrap();
        assert!(off.contains("appendonly no"), "{off}");
        assert!(off.contains("since the last snapshot"), "{off}");
        let second = redis_durability_warning("yes", "everysec").unwrap();
        assert!(second.contains("appendfsync everysec"), "{second}");
        assert!(second.contains("about the last second"), "{second}");
        let os = redis_durability_warning("yes", "no").unwrap();
        assert!(os.contains("30 seconds"), "{os}");
        for text in [off, second, os] {
            assert!(text.contains("--appendonly yes --appendfsync always"));
        }
        let unknown = redis_durability_unknown("NOPERM");
        assert!(unknown.contains("could not check") && unknown.contains("NOPERM"));
    }
}
