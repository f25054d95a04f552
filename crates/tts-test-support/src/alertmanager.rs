//! Starts a real Alertmanager (Debian `prometheus-alertmanager`) on loopback for tests.
//!
//! Its own temporary storage directory, a free port, clustering off (`--cluster.listen-address=`), one
//! receiver that delivers nowhere. [`Alertmanager::stop`] kills it as a crash would (alerts live in its
//! memory, so they are gone); [`Alertmanager::restart`] starts an empty one on the same port.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::http::http_get;

/// Debian's binary; `ALERTMANAGER` overrides it.
const BINARY: &str = "/usr/bin/prometheus-alertmanager";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 5;
const CONFIG: &str = "\
route:
  receiver: blackhole
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// An Alertmanager child process on `127.0.0.1`, killed on drop.
pub struct Alertmanager {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Alertmanager {
    /// Starts one on a free loopback port and waits until `/-/ready` answers 200.
    pub fn start() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "ttsd-alertmanager-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(dir.join("data"))?;
        fs::write(dir.join("alertmanager.yml"), CONFIG)?;
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
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(error);
                }
                Err(error) => last_error = Some(error),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| io::Error::other("alertmanager did not start")))
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `GET /api/v2/alerts` (active, silenced and inhibited alerts), parsed.
    pub fn alerts(&self) -> Result<Vec<serde_json::Value>, String> {
        let response = http_get(&self.url(), "/api/v2/alerts")?;
        if response.status != 200 {
            return Err(format!(
                "GET /api/v2/alerts: {}: {}",
                response.status, response.body
            ));
        }
        serde_json::from_str(&response.body).map_err(|error| format!("{error}: {}", response.body))
    }

    /// Kills it with SIGKILL and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it if it runs, then starts an empty one (fresh storage) on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let _ = fs::remove_dir_all(self.dir.join("data"));
        fs::create_dir_all(self.dir.join("data"))?;
        self.child = Some(spawn_ready(self.port, &self.dir)?);
        Ok(())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn spawn_ready(port: u16, dir: &Path) -> io::Result<Child> {
    let binary = std::env::var("ALERTMANAGER").unwrap_or_else(|_| BINARY.to_owned());
    let log_path = dir.join(format!("alertmanager-{port}.log"));
    let log = fs::File::create(&log_path)?;
    let mut child = Command::new(&binary)
        .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "cannot run {binary} (install prometheus-alertmanager: scripts/install-deps.sh test): {error}"
                ),
            )
        })?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{binary} on port {port} exited with {status}: {}",
                fs::read_to_string(&log_path).unwrap_or_default()
            )));
        }
        if http_get(&base, "/-/ready").is_ok_and(|r| r.status == 200) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{binary} on port {port} was not ready within {READY_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
