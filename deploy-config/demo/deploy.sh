#!/bin/sh
# The `demo` app's deploy: builds a small page from the checked-out commit and publishes it
# atomically under <sites>/<env>/ (releases/<time>-<sha> plus a `current` symlink).
# faseng runs it in the deployment's worktree with DEPLOY_ENV, DEPLOY_REF, DEPLOY_SHA,
# DEPLOY_TASK, DEPLOY_APP, DEPLOY_ID and DEPLOY_USER set.
set -eu

# Sites live in DEMO_SITES_DIR, else in .faseng/sites of the project chima runs from (the
# first parent of this worktree with a .faseng directory), else under /tmp.
sites=${DEMO_SITES_DIR:-}
if [ -z "$sites" ]; then
  dir=$PWD
  while [ "$dir" != "/" ]; do
    if [ -d "$dir/.faseng" ]; then sites="$dir/.faseng/sites"; break; fi
    dir=$(dirname "$dir")
  done
fi
sites=${sites:-${TMPDIR:-/tmp}/faseng-demo-sites}
short=$(printf '%s' "$DEPLOY_SHA" | cut -c1-7)
target="$sites/$DEPLOY_ENV"

echo "==> 1/4 commit: $(git log -1 --format='%h %s (%an, %ad)' --date=short "$DEPLOY_SHA")"
echo "    deploying $DEPLOY_APP $DEPLOY_REF@$short to $DEPLOY_ENV for ${DEPLOY_USER:-someone} (deployment #$DEPLOY_ID, task $DEPLOY_TASK)"

echo "==> 2/4 building the page"
release="$target/releases/$(date -u +%Y%m%d%H%M%S)-$short"
mkdir -p "$release"
escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'; }
{
  echo "<!doctype html><meta charset=utf-8><title>$DEPLOY_APP on $DEPLOY_ENV</title>"
  echo "<h1>$DEPLOY_APP on $DEPLOY_ENV</h1>"
  echo "<p>$DEPLOY_REF @ <code>$DEPLOY_SHA</code>, deployed by ${DEPLOY_USER:-someone} at $(date -u +%Y-%m-%dT%H:%M:%SZ)</p>"
  echo "<h2>Recent commits</h2><pre>"
  git log -5 --format='%h %ad %s' --date=short "$DEPLOY_SHA" | escape
  echo "</pre><h2>Files</h2><p>$(git ls-files | wc -l) files tracked.</p>"
  if [ -f README.md ]; then echo "<h2>README</h2><pre>"; head -40 README.md | escape; echo "</pre>"; fi
} > "$release/index.html"
echo "    wrote $(wc -c < "$release/index.html") bytes to $release/index.html"

echo "==> 3/4 publishing"
ln -sfn "$release" "$target/current.next"
mv -T "$target/current.next" "$target/current"
echo "    $target/current -> $release"

echo "==> 4/4 verifying"
grep -q "$DEPLOY_SHA" "$target/current/index.html"
ls -1dt "$target"/releases/* | tail -n +6 | while read -r old; do rm -rf "$old"; done
echo "    $DEPLOY_APP is live on $DEPLOY_ENV: file://$target/current/index.html"
