//! Servers the benches start as processes: the release `starling` binary
//! and the anchors, each on a loopback port, killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::fail;
use crate::load::Conn;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(format!("no free port: {e}")))
}

/// `target/release/starling`, built from the current tree first.
pub fn starling_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--release", "--locked", "--quiet", "-p", "starling", "--bin", "starling"])
        .status();
    if !built.is_ok_and(|s| s.success()) {
        fail("cannot build the starling binary");
    }
    root().join("target/release/starling")
}

/// A server process, killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Poll until `path` answers 200 (for at most `limit`): another process
    /// loading a model or starting up, so there is nothing to wait on but
    /// its HTTP answer.
    pub async fn until_ready(&mut self, path: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                fail(format!("server exited while starting: {status}"));
            }
            if let Ok((200, _)) = Conn::new(self.addr).get(path).await {
                return;
            }
            if Instant::now() > deadline {
                fail(format!("{} did not become ready", self.addr));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl ServerProcess {
    /// Poll until the port accepts connections (for servers of this bench
    /// binary, which serve as soon as they listen).
    pub async fn until_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                fail(format!("server exited while starting: {status}"));
            }
            if Instant::now() > deadline {
                fail(format!("{} is not listening", self.addr));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
