//! A real OpenSSH server for a test: `/usr/sbin/sshd -D -e` on a loopback address at a free
//! port, with a generated host key, a generated client key in a temporary `authorized_keys`
//! for the current user, and a spare client key that is *not* authorized (for "wrong key"
//! scenarios). Killed on drop.

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server binary is expected.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd owned by the test.
pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    host: String,
    port: u16,
    user: String,
}

fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("running ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("running id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// True when sshd is installed (tests print a reason and skip otherwise).
pub fn available() -> bool {
    Path::new(SSHD).exists()
}

impl Sshd {
    /// Starts a server on 127.0.0.1, or returns `None` (printing why) when sshd is absent.
    pub fn start() -> Option<Self> {
        Self::start_on("127.0.0.1")
    }

    /// Starts a server on another loopback address (e.g. `127.0.0.2`).
    pub fn start_on(host: &str) -> Option<Self> {
        if !available() {
            eprintln!("SKIPPED: {SSHD} is not installed (apt-get install openssh-server)");
            return None;
        }
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_ed25519"), "test-host");
        keygen(&d.join("client_ed25519"), "faseng-test-deploy-key");
        keygen(&d.join("stranger_ed25519"), "not-authorized");
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let user = current_user();
        let port = crate::net::free_port(host);
        let config = format!(
            "ListenAddress {host}:{port}\n\
             HostKey {hk}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {ak}\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             AllowUsers {user}\n\
             Subsystem sftp internal-sftp\n\
             LogLevel VERBOSE\n",
            hk = d.join("host_ed25519").display(),
            pid = d.join("sshd.pid").display(),
            ak = d.join("authorized_keys").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting sshd");
        let mut server = Self {
            dir,
            child,
            host: host.to_owned(),
            port,
            user,
        };
        server.wait_ready(Duration::from_secs(10));
        Some(server)
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}: {}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect((self.host.as_str(), self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 8];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not come up on {}:{}: {}",
                self.host,
                self.port,
                self.log()
            );
            // Polls: a starting sshd has no event to wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address it listens on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user that may log in (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key that `authorized_keys` lists.
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// The text of that private key (what `DEPLOY_SSH_KEY` would hold).
    pub fn client_key_text(&self) -> String {
        std::fs::read_to_string(self.client_key_path()).unwrap()
    }

    /// A valid private key the server does not accept.
    pub fn stranger_key_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stranger_ed25519")).unwrap()
    }

    /// The host part of a known_hosts line for this server (`[host]:port`).
    pub fn known_hosts_name(&self) -> String {
        format!("[{}]:{}", self.host, self.port)
    }

    /// A known_hosts line with the server's real host key.
    pub fn known_hosts_line(&self) -> String {
        self.known_hosts_with(&self.dir.path().join("host_ed25519.pub"))
    }

    /// A known_hosts line naming this server with a key it does not have.
    pub fn wrong_known_hosts_line(&self) -> String {
        self.known_hosts_with(&self.dir.path().join("stranger_ed25519.pub"))
    }

    fn known_hosts_with(&self, public_key: &Path) -> String {
        let public = std::fs::read_to_string(public_key).unwrap();
        let mut parts = public.split_whitespace();
        let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
        format!("{} {kind} {key}", self.known_hosts_name())
    }

    /// The server's log so far (`-e` sends it to stderr, kept in a file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// True when the log records a successful public-key login with the authorized key.
    pub fn accepted_deploy_key(&self) -> bool {
        self.log()
            .lines()
            .any(|l| l.contains("Accepted publickey") && l.contains(&self.client_fingerprint()))
    }

    fn client_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("client_ed25519.pub"))
            .output()
            .expect("running ssh-keygen -l");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or("unknown")
            .to_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
