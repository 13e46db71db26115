# Settings shared by every stage of modmod-web.
lock "~> 3.17"

set :application, "modmod-web"
set :repo_url, "git@github.com:oursky/modmod-web.git"

# Deploy the exact commit faseng was asked for, never the moving tip of a branch: faseng sets
# REVISION to the deployment's sha and BRANCH to its ref. Capistrano's git SCM archives
# fetch(:branch) from its mirror (`git archive <branch>`) and records
# `git rev-list --max-count=1 <branch>` as the revision, so a full sha here deploys that sha.
set :branch, ENV["REVISION"] || ENV["BRANCH"] || "main"

set :deploy_to, "/srv/modmod-web"
set :keep_releases, 5

# No ssh key or host-key settings here: faseng runs cap with HOME pointing at a per-run
# directory whose .ssh/config names the deploy key (IdentityFile, IdentitiesOnly) and the
# known hosts (UserKnownHostsFile, StrictHostKeyChecking), which net-ssh reads.
