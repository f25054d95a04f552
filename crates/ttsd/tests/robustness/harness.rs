//! The catalogue's harness: a real `ttsd` for one test, and a bystander session that proves an attack
//! cost nobody else anything.
//!
//! [`Stand::attack`] first measures an undisturbed bystander run, then runs the attack concurrently with
//! a second bystander run on the same server, and asserts that the second one lost no frame (sequence
//! numbers contiguous from 1, as many frames as its `utterance_end` reports) and kept its pacing
//! (frame-interval p99 within [`P99_SLACK`] of the undisturbed run). The bystander reads on a thread and
//! runtime of its own, so a busy test runtime cannot make it the bottleneck. Tests take turns through
//! [`ATTACKS`]: one server and one attack at a time, and no other process of the binary's tests (the
//! refused configurations' `ttsd` starts too), so no test disturbs another's bystander.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, oneshot};
use tokio::time::Instant;
use tts_test_support::{Event, Scrape, ServerProcess, StreamClient, http_get};

use crate::common::{ESPEAK, Frame, LONG_TEXT, WAIT, assert_frames_well_formed, temp_path};

/// One test at a time in this binary, from server start to server stop.
static ATTACKS: Mutex<()> = Mutex::const_new(());

/// The bystander's pacing may be this much worse under attack than undisturbed, at p99.
pub(crate) const P99_SLACK: Duration = Duration::from_millis(5);
/// A bystander run lasts at least this long (about 150 frame intervals), longer while its attack runs.
const MIN_RUN: Duration = Duration::from_secs(3);
/// The attack starts once the bystander has this many frames: its pacing is steady by then.
const STEADY_FRAMES: usize = 10;
/// The first frame and the lead frames leave at once, not on the 20 ms clock: not pacing intervals.
const UNPACED_FRAMES: usize = 4;

/// What the catalogue's bystander speaks: about a minute of espeak-ng audio, longer than any attack.
fn bystander_text() -> String {
    [LONG_TEXT; 4].join(" ")
}

/// A server under test, owned by one test while it holds its turn.
pub(crate) struct Stand {
    pub(crate) server: ServerProcess,
    /// Query string the bystander connects with (an API key when the server needs one).
    bystander_query: String,
    logs: std::sync::Mutex<Vec<String>>,
    _turn: Turn,
}

/// One test's turn at the machine: held from its first process start to its last process stop.
pub(crate) struct Turn {
    _guard: MutexGuard<'static, ()>,
}

/// Waits until no other test of this binary runs its servers or attacks.
pub(crate) async fn turn() -> Turn {
    Turn {
        _guard: ATTACKS.lock().await,
    }
}

/// [`turn`] for a test without a runtime: one that starts processes but no server (their start-up
/// would otherwise share the machine with another test's bystander).
pub(crate) fn turn_blocking() -> Turn {
    Turn {
        _guard: ATTACKS.blocking_lock(),
    }
}

impl Stand {
    /// Waits for this test's turn, then starts `ttsd serve --voice espeak-en-us` with `config` (TOML,
    /// may be empty) and `extra` flags.
    pub(crate) async fn start(name: &str, config: &str, extra: &[&str]) -> Self {
        let turn = turn().await;
        let path = temp_path(&format!("robustness-{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut args = vec!["--voice", ESPEAK, "--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::on(turn, || crate::common::start(&args))
    }

    /// The stand for the server `start` starts, during `turn` (which must be taken before any process
    /// of the test starts).
    pub(crate) fn on(turn: Turn, start: impl FnOnce() -> ServerProcess) -> Self {
        let server = start();
        prioritise(server.pid());
        Self {
            server,
            bystander_query: String::new(),
            logs: std::sync::Mutex::new(Vec::new()),
            _turn: turn,
        }
    }

    /// The bystander connects with this query suffix, e.g. `&token=KEY`.
    pub(crate) fn bystander_query(mut self, query: &str) -> Self {
        self.bystander_query = query.to_owned();
        self
    }

    fn bystander_url(&self) -> String {
        self.server
            .url(&format!("/v1/stream?voice={ESPEAK}{}", self.bystander_query))
    }

    /// Runs `attack` against the server while a bystander session speaks, after an undisturbed bystander
    /// run, and checks the bystander lost nothing and kept its pacing. Returns what `attack` returns.
    pub(crate) async fn attack<T>(&self, kind: &str, attack: impl Future<Output = T>) -> T {
        let calm = Bystander::spawn(self.bystander_url(), true).finish().await;
        let busy = Bystander::spawn(self.bystander_url(), false);
        let busy = busy.steady().await;
        let stop = StopOnDrop(busy.done.clone());
        let out = attack.await;
        drop(stop);
        let busy = busy.finish().await;
        assert_paced(kind, &calm, &busy);
        out
    }

    pub(crate) fn scrape(&self) -> Scrape {
        let response = http_get(&self.server.admin_base, "/metrics").unwrap();
        assert_eq!(response.status, 200);
        Scrape::parse(&response.body).unwrap()
    }

    /// Polls the server's counter until it reaches `want` (up to twice `WAIT`), then checks it is
    /// exactly `want`.
    pub(crate) async fn counter_reaches(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let until = Instant::now() + WAIT * 2;
        loop {
            let got = self.scrape().sum(name, labels);
            if got >= want {
                assert_eq!(got, want, "{name}{labels:?}");
                return;
            }
            assert!(
                Instant::now() < until,
                "{name}{labels:?} stayed at {got}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every log line so far that contains all of `needles`.
    pub(crate) fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.extend(self.server.logs());
        logs.iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .cloned()
            .collect()
    }

    /// Waits (up to `WAIT`) for a log line containing all of `needles`.
    pub(crate) async fn wait_for_log(&self, needles: &[&str]) -> String {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log_lines(needles).pop() {
                return line;
            }
            assert!(Instant::now() < until, "no log line with {needles:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Gives every thread of process (or thread) `id` real-time priority (`SCHED_FIFO` 1), or nice -10 where
/// that is refused, where the test may (as root): the server and the bystander then measure themselves
/// and the attack, not the unrelated work that shares the machine. The attacker keeps the default
/// priority, and the kernel's real-time throttling leaves the rest of the machine its share. Without the
/// permission the run is just noisier.
pub(crate) fn prioritise(id: u32) {
    let ids: Vec<String> = match std::fs::read_dir(format!("/proc/{id}/task")) {
        Ok(tasks) => tasks
            .filter_map(Result::ok)
            .map(|task| task.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![id.to_string()],
    };
    let quiet = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    for id in &ids {
        if !quiet("chrt", &["-f", "-p", "1", id]) {
            quiet("renice", &["-n", "-10", "-p", id]);
        }
    }
}

/// The calling thread's id, from `/proc/thread-self` (`<pid>/task/<tid>`).
fn thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Sets the bystander's done flag when the attack ends, also when it panics, so the thread ends too.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A bystander session on a thread of its own.
struct Bystander {
    done: Arc<AtomicBool>,
    steady: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<Run>,
}

/// One bystander run as the client saw it.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) frames: Vec<Frame>,
    /// `frames` of its `utterance_end`.
    pub(crate) reported: u64,
    pub(crate) reason: String,
    /// When the bystander sent STOP to end the run (None: the text played to its end).
    pub(crate) stopped_at: Option<Instant>,
}

impl Bystander {
    /// Starts a session that speaks [`bystander_text`] until `done` is set (and at least [`MIN_RUN`]).
    fn spawn(url: String, done: bool) -> Self {
        let done = Arc::new(AtomicBool::new(done));
        let (steady_tx, steady) = oneshot::channel();
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            if let Some(id) = thread_id() {
                prioritise(id);
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(speak(url, flag, steady_tx))
        });
        Self { done, steady, thread }
    }

    /// Waits until the bystander is pacing steadily; a bystander that failed first fails the test.
    async fn steady(mut self) -> Self {
        match tokio::time::timeout(WAIT, &mut self.steady).await {
            Ok(Ok(())) => self,
            Ok(Err(_)) => {
                let _ = self.finish().await;
                panic!("the bystander ended before it was pacing")
            }
            Err(_) => panic!("the bystander got no steady audio within {WAIT:?}"),
        }
    }

    async fn finish(self) -> Run {
        self.done.store(true, Ordering::Release);
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await.unwrap() {
            Ok(run) => run,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

async fn speak(url: String, done: Arc<AtomicBool>, steady: oneshot::Sender<()>) -> Run {
    let mut client = StreamClient::connect(&url).await.expect("the bystander connects");
    let first = client.next(WAIT).await.expect("session_start").event;
    assert!(
        matches!(first, Event::SessionStart { .. }),
        "bystander: {first:?}"
    );
    client.send_text(&bystander_text(), true).await.unwrap();
    let mut steady = Some(steady);
    let mut frames = Vec::new();
    let mut stopped_at = None;
    let started = Instant::now();
    loop {
        let received = client.next(WAIT).await.expect("the bystander keeps hearing");
        match received.event {
            Event::Audio { sequence, pcm } => frames.push(Frame {
                sequence,
                pcm,
                at: received.at,
            }),
            Event::UtteranceEnd {
                frames: reported,
                reason,
                ..
            } => {
                client.close().await;
                return Run {
                    frames,
                    reported,
                    reason,
                    stopped_at,
                };
            }
            other => panic!("the bystander got {other:?}"),
        }
        if frames.len() >= STEADY_FRAMES
            && let Some(steady) = steady.take()
        {
            let _ = steady.send(());
        }
        if stopped_at.is_none() && done.load(Ordering::Acquire) && started.elapsed() >= MIN_RUN {
            stopped_at = Some(client.send_control("STOP").await.unwrap());
        }
    }
}

/// Intervals between consecutive paced frames received before the run was stopped.
pub(crate) fn intervals(run: &Run) -> Vec<Duration> {
    let paced: Vec<&Frame> = run
        .frames
        .iter()
        .skip(UNPACED_FRAMES)
        .filter(|f| run.stopped_at.is_none_or(|stop| f.at < stop))
        .collect();
    paced
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

pub(crate) fn p99(mut values: Vec<Duration>) -> Duration {
    assert!(!values.is_empty(), "no intervals");
    values.sort();
    values[(values.len() * 99 / 100).min(values.len() - 1)]
}

/// Every frame arrived, in order, and the bystander's pacing held within [`P99_SLACK`] of `calm`.
fn assert_paced(kind: &str, calm: &Run, busy: &Run) {
    for (name, run) in [("undisturbed", calm), ("attacked", busy)] {
        assert_frames_well_formed(&run.frames, 1);
        assert_eq!(
            run.frames.len() as u64,
            run.reported,
            "{kind}: the {name} bystander received every frame the server says it sent"
        );
        assert!(
            run.reason == "stopped" || run.reason == "completed",
            "{kind}: the {name} bystander's utterance ended {}",
            run.reason
        );
    }
    let (calm_p99, busy_p99) = (p99(intervals(calm)), p99(intervals(busy)));
    eprintln!(
        "bystander [{kind}]: p99 interval {:.1} ms undisturbed, {:.1} ms attacked ({} and {} frames)",
        calm_p99.as_secs_f64() * 1e3,
        busy_p99.as_secs_f64() * 1e3,
        calm.frames.len(),
        busy.frames.len()
    );
    assert!(
        busy_p99 <= calm_p99 + P99_SLACK,
        "{kind}: the bystander's frame-interval p99 went from {calm_p99:?} undisturbed to {busy_p99:?}"
    );
}
