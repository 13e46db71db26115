//! The log links faseng posts, made the way another faseng process of the same store makes
//! them: with the link key kept in that store. For a test that must reach a log no status
//! carries a link to (statuses refused, a delivery that should have left no run).

use deploy_core::RepoName;
use faseng::links::{LinkKey, LogLinks};
use faseng::queue::{self, QueueTiming, QueueUrl};

/// The links of the faseng at `faseng_url` whose store is `queue_url`.
pub async fn of(queue_url: &QueueUrl, faseng_url: &str) -> LogLinks {
    let (_, store) = queue::open(queue_url, QueueTiming::default())
        .await
        .expect("the store opens");
    let fresh = LinkKey::generate().expect("a random key");
    let key = store.link_key(&fresh).await.expect("the store answers");
    LogLinks::new(faseng_url, LinkKey::new(&key).expect("a valid stored key"))
}

/// The log page of deployment `id` of `repo` (`owner/name`).
pub async fn page(queue_url: &QueueUrl, faseng_url: &str, repo: &str, id: u64) -> String {
    of(queue_url, faseng_url)
        .await
        .page(&RepoName::parse(repo).expect("a repository name"), id)
}
