//! Starts a real `redis-server` on loopback for tests.
//!
//! No persistence (`--save ''`, `--appendonly no`), its own temporary directory, a port of its own. Tests
//! simulate an outage with [`RedisServer::stop`] and a recovery with [`RedisServer::restart`] on the same
//! port, so clients configured with [`RedisServer::url`] reconnect to it.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The server binary, looked up on `PATH`.
const BINARY: &str = "redis-server";
/// How long a fresh server gets to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many free ports to try: another process may take the one we picked before Redis binds it.
const PORT_ATTEMPTS: usize = 5;

/// Tells apart the temporary directories of servers started by one test process.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A `redis-server` child process on `127.0.0.1`, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    pub fn start() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "ttsd-redis-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(port, &dir) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        dir,
                    });
                }
                // No binary: no other port will help.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(error);
                }
                Err(error) => last_error = Some(error),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to exit. Its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts an empty one on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.child = Some(spawn_ready(self.port, &self.dir)?);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A port the kernel just handed out on loopback, free once the probe listener closes.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn spawn_ready(port: u16, dir: &Path) -> io::Result<Child> {
    let log_path = dir.join(format!("redis-{port}.log"));
    let log = fs::File::create(&log_path)?;
    let mut child = Command::new(BINARY)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot run {BINARY} (is Redis installed?): {error}"),
            )
        })?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{BINARY} on port {port} exited with {status}: {}",
                fs::read_to_string(&log_path).unwrap_or_default()
            )));
        }
        if answers_ping(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{BINARY} on port {port} did not answer PING within {READY_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something on `port` answers an inline `PING` with `+PONG`.
fn answers_ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let attempt = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_answers_ping_stops_and_restarts_on_the_same_port() {
        let mut server = RedisServer::start().unwrap();
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert!(answers_ping(port));

        server.stop();
        assert!(!answers_ping(port), "a stopped server answers nothing");
        server.stop();

        server.restart().unwrap();
        assert_eq!(server.port(), port);
        assert!(answers_ping(port));
        server.restart().unwrap();
        assert!(answers_ping(port), "restarting a running server works too");
    }

    #[test]
    fn servers_get_ports_of_their_own_and_clean_up_their_directory() {
        let first = RedisServer::start().unwrap();
        let second = RedisServer::start().unwrap();
        assert_ne!(first.port(), second.port());
        let (dir, port) = (first.dir.clone(), first.port());
        assert!(dir.is_dir());
        drop(first);
        assert!(!dir.exists());
        assert!(!answers_ping(port));
        assert!(answers_ping(second.port()));
    }
}
