//! Runs a real `ttsd serve` or `ttsd worker` process on loopback for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `ttsd serve` or `ttsd worker` child process, killed on drop.
pub struct ServerProcess {
    child: Child,
    /// `ws://127.0.0.1:PORT` (empty for a worker).
    pub ws_base: String,
    /// `127.0.0.1:PORT` of a worker's gRPC server (empty for `serve`).
    pub grpc_addr: String,
    /// `http://127.0.0.1:PORT` of the admin server.
    pub admin_base: String,
    /// `127.0.0.1:PORT` of the Wyoming server, when started with `--wyoming-listen` (else empty).
    pub wyoming_addr: String,
    /// Lines the server wrote to stderr (its logs), collected in the background.
    logs: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts `binary serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 <extra>` in `workdir` (where
    /// the default `.cache/` paths resolve) and waits (up to 60 s) for the line announcing its addresses.
    pub fn start(binary: &str, workdir: &Path, extra: &[&str]) -> Result<Self, String> {
        Self::spawn(binary, workdir, "serve", "127.0.0.1:0", extra)
    }

    /// Starts `binary worker --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 <extra>` and waits for its
    /// `ttsd ready: grpc=… admin=…` line (after its default voice is warm).
    pub fn start_worker(binary: &str, workdir: &Path, extra: &[&str]) -> Result<Self, String> {
        Self::spawn(binary, workdir, "worker", "127.0.0.1:0", extra)
    }

    /// A worker on a given gRPC address, e.g. to bring one back where a gateway expects it.
    pub fn start_worker_on(
        binary: &str,
        workdir: &Path,
        listen: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        Self::spawn(binary, workdir, "worker", listen, extra)
    }

    /// Starts `binary <args>` exactly as given (the caller chooses every address, e.g. an admin port
    /// off loopback) and waits for its ready line.
    pub fn start_with_args(binary: &str, workdir: &Path, args: &[&str]) -> Result<Self, String> {
        Self::spawn_args(binary, workdir, args)
    }

    fn spawn(
        binary: &str,
        workdir: &Path,
        command: &str,
        listen: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut args = vec![command, "--listen", listen, "--admin-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::spawn_args(binary, workdir, &args)
    }

    fn spawn_args(binary: &str, workdir: &Path, args: &[&str]) -> Result<Self, String> {
        let mut child = Command::new(binary)
            .current_dir(workdir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (log_tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if log_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match line_rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let logs: Vec<String> = logs.try_iter().collect();
                    return Err(format!(
                        "ttsd did not announce its addresses; logs:\n{}",
                        logs.join("\n")
                    ));
                }
            };
            if let Some(announced) = parse_announcement(&line) {
                return Ok(Self {
                    child,
                    ws_base: announced.ws,
                    grpc_addr: announced.grpc,
                    admin_base: announced.admin,
                    wyoming_addr: announced.wyoming,
                    logs,
                });
            }
        }
    }

    /// The streaming endpoint with a query string, e.g. `url("/v1/stream?voice=espeak-en-us")`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.ws_base)
    }

    /// Log lines written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    /// The process id, e.g. to stop it with a signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies at once, mid-write, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit, returning its exit code.
    pub fn terminate(mut self, wait: Duration) -> Option<i32> {
        // SAFETY-free: `kill -TERM` through the shell keeps this crate free of unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, PartialEq)]
struct Announcement {
    ws: String,
    grpc: String,
    admin: String,
    wyoming: String,
}

/// `ttsd ready: stream=ws://A/v1/stream admin=http://B` (serve) or `ttsd ready: grpc=A admin=http://B`
/// (worker).
fn parse_announcement(line: &str) -> Option<Announcement> {
    let rest = line.strip_prefix("ttsd ready: ")?;
    let mut ws = None;
    let mut grpc = None;
    let mut admin = None;
    let mut wyoming = String::new();
    for part in rest.split_whitespace() {
        if let Some(url) = part.strip_prefix("stream=") {
            ws = url.strip_suffix("/v1/stream").map(str::to_owned);
        } else if let Some(addr) = part.strip_prefix("grpc=") {
            grpc = Some(addr.to_owned());
        } else if let Some(url) = part.strip_prefix("admin=") {
            admin = Some(url.to_owned());
        } else if let Some(addr) = part.strip_prefix("wyoming=tcp://") {
            wyoming = addr.to_owned();
        }
    }
    if ws.is_none() && grpc.is_none() {
        return None;
    }
    Some(Announcement {
        ws: ws.unwrap_or_default(),
        grpc: grpc.unwrap_or_default(),
        admin: admin?,
        wyoming,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        assert_eq!(
            parse_announcement(
                "ttsd ready: stream=ws://127.0.0.1:4000/v1/stream admin=http://127.0.0.1:4001"
            ),
            Some(Announcement {
                ws: "ws://127.0.0.1:4000".into(),
                grpc: String::new(),
                admin: "http://127.0.0.1:4001".into(),
                wyoming: String::new(),
            })
        );
        assert_eq!(
            parse_announcement(
                "ttsd ready: stream=ws://127.0.0.1:4000/v1/stream admin=http://127.0.0.1:4001 wyoming=tcp://127.0.0.1:4002"
            )
            .map(|a| a.wyoming),
            Some("127.0.0.1:4002".into())
        );
        assert_eq!(
            parse_announcement("ttsd ready: grpc=127.0.0.1:7001 admin=http://127.0.0.1:7081").map(|a| a.grpc),
            Some("127.0.0.1:7001".into())
        );
        assert_eq!(parse_announcement("something else"), None);
    }
}
