//! A throwaway PostgreSQL server for the tests that run on both
//! databases: `initdb` into a temporary folder, a free loopback port,
//! killed and deleted on drop. Debian's server packages (`scripts/test`
//! installs `postgresql`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to remove with a server, given its URL.
type Cleanup = Box<dyn FnOnce(&str) + Send>;

/// A throwaway PostgreSQL server, killed and deleted on drop.
pub struct PgServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// `postgres://starling@127.0.0.1:PORT/postgres`.
    pub url: String,
    cleanup: Option<Cleanup>,
}

/// The newest installed server's binaries (Debian's layout).
fn server_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    found.pop().expect("a PostgreSQL server under /usr/lib/postgresql: scripts/test installs it (apt-get install postgresql)")
}

/// `initdb` and `postgres` refuse to run as root: as root, run them as the
/// `postgres` user (the package creates it) and give it the folder.
fn command(bin: &Path, dir: &Path) -> Command {
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    if !root {
        return Command::new(bin);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let ids = passwd
        .lines()
        .find_map(|l| l.strip_prefix("postgres:x:"))
        .and_then(|rest| {
            let mut f = rest.split(':');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .expect("a `postgres` user");
    std::os::unix::fs::chown(dir, Some(ids.0), Some(ids.1)).expect("chown");
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin);
    c
}

impl PgServer {
    /// Start a server and wait until it takes connections.
    pub async fn start() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("starling-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let init = command(&server_bin().join("initdb"), &dir)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "starling", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb");
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let mut server = Self { child: None, dir, port, url: format!("postgres://starling@127.0.0.1:{port}/postgres"), cleanup: None };
        server.resume().await;
        server
    }

    /// Start the server process on the same data and port, and wait until
    /// it takes connections.
    pub async fn resume(&mut self) {
        let child = command(&server_bin().join("postgres"), &self.dir)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-k"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        // Ready when a connection is accepted and answered (it refuses while
        // starting up).
        let deadline = Instant::now() + Duration::from_secs(60);
        while platform::db::Db::open(&self.url).await.is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shut the server down and wait until it has exited (`fast`: it ends
    /// every session; `immediate`: it exits at once, as a crash would).
    /// `pg_ctl` signals the server itself: under `runuser` the child we
    /// hold is `runuser`, which would not pass a signal on.
    fn stop(&mut self, mode: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = command(&server_bin().join("pg_ctl"), &self.dir)
                .arg("stop")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", mode, "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Take the server away, as a database restart does.
    pub fn pause(&mut self) {
        self.stop("fast");
    }

    /// Also run `cleanup` with the URL when the server is dropped (files
    /// a test kept for this URL elsewhere).
    pub fn on_drop(&mut self, cleanup: impl FnOnce(&str) + Send + 'static) {
        self.cleanup = Some(Box::new(cleanup));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(cleanup) = self.cleanup.take() {
            cleanup(&self.url);
        }
    }
}
