#!/bin/sh
# trelhub's deploy for faseng's shell provider (app.json "deploy_script": "deploy.sh").
#
# faseng runs it in the checkout of the exact commit, with DEPLOY_ENV, DEPLOY_REF, DEPLOY_SHA,
# DEPLOY_TASK, DEPLOY_APP, DEPLOY_ID, DEPLOY_USER, BRANCH and SHA set and nothing else from
# its own environment. Settings per environment live in config/deploy/<env>.env:
#   TARGET         the deploy directory (releases/ and the `current` link go there)
#   KEEP_RELEASES  how many releases to keep (default 5)
#
# A release is `git archive` of the sha, unpacked into $TARGET/releases/<timestamp>-<sha7>
# with a REVISION file; `current` is switched atomically; old releases are pruned.
set -eu

settings="config/deploy/${DEPLOY_ENV}.env"
if [ ! -f "$settings" ]; then
  echo "no $settings: trelhub has no settings for $DEPLOY_ENV" >&2
  exit 1
fi
. "./$settings"
: "${TARGET:?TARGET is not set in $settings}"
KEEP_RELEASES="${KEEP_RELEASES:-5}"

release="$TARGET/releases/$(date -u +%Y%m%d%H%M%S)-$(printf %.7s "$DEPLOY_SHA")"
echo "deploying trelhub $DEPLOY_REF ($DEPLOY_SHA) to $DEPLOY_ENV: $release"
mkdir -p "$release"
git archive --format=tar "$DEPLOY_SHA" | tar -x -C "$release"
printf '%s\n' "$DEPLOY_SHA" > "$release/REVISION"
ln -sfn "$release" "$TARGET/current.new"
mv -T "$TARGET/current.new" "$TARGET/current"

# Newest first by time (names can tie within a second); the release just made always stays.
ls -1dt "$TARGET"/releases/*/ | tail -n "+$((KEEP_RELEASES + 1))" | while IFS= read -r old; do
  [ "${old%/}" = "$release" ] || rm -rf -- "$old"
done
echo "trelhub $DEPLOY_ENV is at $DEPLOY_SHA"
