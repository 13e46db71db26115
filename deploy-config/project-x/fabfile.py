"""Fabric 2+/3 tasks for project-x, as faseng runs them:

    fab -S <ssh config> -i <deploy key> deploy --environment edge --ref main --sha <sha>

Hosts and the deploy directory of each environment come from fabric.yaml next to this file
(Fabric's project configuration). faseng gives the deploy key (-i) and an ssh config (-S);
Fabric applies both. Fabric does NOT apply known_hosts or StrictHostKeyChecking on its own
(it accepts any host key), so connect() below loads the known hosts faseng provides and
refuses unknown or changed keys. A project's own fabfile must do the same: see
deploy-config/README.md.

The deploy: `git archive` of the exact sha in the checkout, uploaded over SFTP, unpacked into
<path>/releases/<timestamp>-<sha7>, REVISION written, `current` switched atomically, old
releases pruned.
"""

import os
import posixpath
import shlex
import subprocess
import tempfile
import time

from fabric import Connection, task
from invoke.exceptions import Exit
from paramiko import MissingHostKeyPolicy, RejectPolicy


class AcceptNew(MissingHostKeyPolicy):
    """accept-new: a host that is not known yet is accepted and remembered; a host whose key
    changed is still refused (paramiko raises BadHostKeyException before asking a policy)."""

    def __init__(self, path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        with open(self.path, "a") as f:
            f.write("%s %s %s\n" % (hostname, key.get_name(), key.get_base64()))
        print("accept-new: remembered the host key of %s" % hostname)


def connect(c, host):
    """A connection to `host` that checks its host key the way faseng asks."""
    conn = Connection(host, config=c.config)
    known_hosts = os.environ.get("DEPLOY_SSH_KNOWN_HOSTS_FILE") or conn.ssh_config.get(
        "userknownhostsfile", os.path.expanduser("~/.ssh/known_hosts")
    )
    policy = os.environ.get("DEPLOY_SSH_STRICT_HOST_KEY_CHECKING") or conn.ssh_config.get(
        "stricthostkeychecking", "yes"
    )
    known_hosts = known_hosts.split()[0]
    if os.path.exists(known_hosts):
        conn.client.load_host_keys(known_hosts)
    if policy == "accept-new":
        conn.client.set_missing_host_key_policy(AcceptNew(known_hosts))
    else:
        conn.client.set_missing_host_key_policy(RejectPolicy())
    return conn


def q(s):
    return shlex.quote(str(s))


@task
def deploy(c, environment, ref, sha):
    """Deploy commit `sha` (of `ref`) to every host of `environment`."""
    environments = c.config.get("deploy", {}).get("environments", {})
    if environment not in environments:
        raise Exit("fabric.yaml has no deploy.environments.%s" % environment)
    target = environments[environment]
    path = target["path"]
    keep = int(c.config.deploy.get("keep_releases", 5))
    release = posixpath.join(path, "releases", "%s-%s" % (time.strftime("%Y%m%d%H%M%S"), sha[:7]))

    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "release.tar.gz")
        subprocess.run(["git", "archive", "--format=tar.gz", "-o", archive, sha], check=True)
        for host in target["hosts"]:
            print("deploying %s (%s) to %s:%s" % (sha[:7], ref, host, release))
            conn = connect(c, host)
            conn.run("mkdir -p %s" % q(release))
            conn.put(archive, remote=release + ".tar.gz")
            conn.run("tar -xzf %s -C %s && rm -f %s" % (q(release + ".tar.gz"), q(release), q(release + ".tar.gz")))
            conn.run("printf '%%s\\n' %s > %s" % (q(sha), q(posixpath.join(release, "REVISION"))))
            conn.run("printf '%%s\\n' %s > %s" % (q(ref), q(posixpath.join(release, "BRANCH"))))
            current = posixpath.join(path, "current")
            conn.run("ln -sfn %s %s && mv -T %s %s" % (q(release), q(current + ".new"), q(current + ".new"), q(current)))
            # Newest first by time (names can tie within a second); this release always stays.
            conn.run(
                "cd %s && ls -1dt */ | tail -n +%d | grep -vxF %s | xargs -r -d '\\n' rm -rf --"
                % (q(posixpath.join(path, "releases")), keep + 1, q(posixpath.basename(release) + "/"))
            )
            conn.close()
            print("%s: current is %s" % (host, sha))
