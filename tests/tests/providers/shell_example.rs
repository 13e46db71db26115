//! The shipped trelhub example (deploy-config/trelhub/deploy.sh) deploys the exact sha with
//! faseng's shell provider.

use std::time::Duration;

use e2e::direct::{Direct, Job, Outcome, assert_live, copy_tree, shipped, two_commits};
use faseng::providers::ProviderConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trelhub_example_deploys_the_sha_and_rotates_releases() {
    let d = Direct::new().await;
    let (repo, first, second) = two_commits();
    let target = d.dir.path().join("srv");
    let o = d.dir.path().join("overlay-trelhub");
    std::fs::create_dir_all(&o).unwrap();
    copy_tree(&shipped("trelhub"), &o);
    std::fs::write(
        o.join("config/deploy/edge.env"),
        format!("TARGET={}\nKEEP_RELEASES=1\n", target.display()),
    )
    .unwrap();
    let app = json!({"provider": "shell", "repository": "oursky/trelhub",
                     "environments": ["pandawork", "edge"], "deploy_script": "deploy.sh"});
    let settings = d.settings_without_github(ProviderConfig::default());
    let minute = Duration::from_secs(60);
    for (sha, version) in [(&first, "one\n"), (&second, "two\n")] {
        let checkout = d.checkout(&repo, sha, Some(&o));
        let ran = d
            .run(Job::deploy(&app, sha, &checkout, &settings, minute))
            .await;
        ran.assert_success();
        ran.assert_logged(&[&format!("trelhub edge is at {sha}")]);
        assert_live(&target, sha, version);
        assert_eq!(
            std::fs::read_dir(target.join("releases")).unwrap().count(),
            1
        );
    }

    // An environment without settings fails and says why.
    let checkout = d.checkout(&repo, &first, Some(&o));
    let mut qa = app.clone();
    qa["environments"] = json!(["qa"]);
    let ran = d
        .run(Job {
            env: "qa",
            ..Job::deploy(&qa, &first, &checkout, &settings, minute)
        })
        .await;
    assert_eq!(
        ran.outcome,
        Outcome::Failure("Failed: no config/deploy/qa.env: trelhub has no settings for qa".into()),
        "{}",
        ran.log
    );
}
