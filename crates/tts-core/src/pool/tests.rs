//! The scheduler, cancellation, panics, warming and residency, on espeak-ng (fast and always installed).

use std::sync::mpsc;

use super::*;
use crate::voices::VoiceCatalog;

fn espeak() -> Arc<VoiceInfo> {
    let catalog = VoiceCatalog::discover(std::path::Path::new("/nonexistent")).unwrap();
    Arc::new(catalog.get("espeak-en-us").unwrap().clone())
}

fn pool(threads: usize, queue_capacity: usize) -> Pool {
    Pool::start(PoolConfig {
        threads,
        queue_capacity,
        engine: EngineSettings {
            onnx_intra_threads: 1,
            ..EngineSettings::default()
        },
        residency: ResidencyLimits::unbounded(),
    })
    .unwrap()
}

/// A job that reports its events (tagged with `name`) to `log`.
fn job(
    name: &'static str,
    first: bool,
    cancel: &CancelSource,
    log: mpsc::Sender<(&'static str, String)>,
) -> Job {
    Job {
        voice: espeak(),
        text: "Hello there.".into(),
        first,
        cancel: cancel.token(),
        session_id: name.into(),
        utterance_id: 1,
        speed: 1.0,
        parent: tracing::Span::none(),
        events: Box::new(move |event| {
            let kind = match event {
                JobEvent::Started { .. } => "started",
                JobEvent::Audio(_) => "audio",
                JobEvent::Finished(_) => "finished",
                JobEvent::Failed(_) => "failed",
            };
            let _ = log.send((name, kind.to_owned()));
        }),
    }
}

/// Occupies the pool's only thread until the returned sender is dropped or used.
fn block_thread(pool: &Pool) -> mpsc::Sender<()> {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    let mut release_rx = Some(release_rx);
    pool.submit(Job {
        voice: espeak(),
        text: "Block.".into(),
        first: false,
        cancel: CancelSource::new().token(),
        session_id: "blocker".into(),
        utterance_id: 0,
        speed: 1.0,
        parent: tracing::Span::none(),
        events: Box::new(move |event| {
            if let (JobEvent::Started { .. }, Some(rx)) = (&event, release_rx.take()) {
                let _ = started_tx.send(());
                let _ = rx.recv();
            }
        }),
    })
    .unwrap();
    started_rx.recv().unwrap();
    release_tx
}

/// Runs `text` for `session` to its end and returns the seconds of audio it made.
fn run_to_end(pool: &Pool, voice: &Arc<VoiceInfo>, session: &str, text: &str, cancel: &CancelSource) -> f64 {
    let (tx, rx) = mpsc::channel();
    pool.submit(Job {
        voice: voice.clone(),
        text: text.into(),
        first: true,
        cancel: cancel.token(),
        session_id: session.into(),
        utterance_id: 1,
        speed: 1.0,
        parent: tracing::Span::none(),
        events: Box::new(move |event| {
            if let JobEvent::Finished(stats) = event {
                let _ = tx.send(Ok(stats.audio_seconds));
            } else if let JobEvent::Failed(error) = event {
                let _ = tx.send(Err(error.to_string()));
            }
        }),
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the job ends")
        .unwrap()
}

#[test]
fn the_session_that_runs_out_of_audio_first_is_served_first() {
    let (pool, voice) = window_pool(1, 60);
    let playing = CancelSource::new();
    let stopped = CancelSource::new();
    run_to_end(&pool, &voice, "stopped", "Anything.", &stopped);
    let seconds = run_to_end(&pool, &voice, "playing", "Anything.", &playing);
    assert!(seconds >= 60.0, "{seconds} s of audio");
    // `stopped` gets a STOP: the audio it had is gone, so its next chunk is due at once.
    stopped.cancel_all();
    let release = block_thread(&pool);
    let (log_tx, log_rx) = mpsc::channel();
    pool.submit(job("playing", false, &playing, log_tx.clone()))
        .unwrap();
    pool.submit(job("dry", false, &CancelSource::new(), log_tx.clone()))
        .unwrap();
    pool.submit(job("stopped", true, &stopped, log_tx.clone()))
        .unwrap();
    pool.submit(job("new", true, &CancelSource::new(), log_tx.clone()))
        .unwrap();
    drop(log_tx);
    drop(release);
    let started: Vec<_> = log_rx
        .iter()
        .filter(|(_, kind)| kind == "started")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        started,
        vec!["dry", "stopped", "new", "playing"],
        "the session that ran dry mid-utterance, then first chunks waiting for first audio in arrival \
         order, then the one with a minute buffered"
    );
}

#[test]
fn chunks_of_dry_sessions_go_before_first_chunks_and_keep_arrival_order() {
    let pool = pool(1, 16);
    let release = block_thread(&pool);
    let (log_tx, log_rx) = mpsc::channel();
    let cancel = CancelSource::new();
    pool.submit(job("later-a", false, &cancel, log_tx.clone()))
        .unwrap();
    pool.submit(job("later-b", false, &cancel, log_tx.clone()))
        .unwrap();
    pool.submit(job("first-c", true, &cancel, log_tx.clone()))
        .unwrap();
    drop(log_tx);
    drop(release);
    let started: Vec<_> = log_rx
        .iter()
        .filter(|(_, kind)| kind == "started")
        .map(|(name, _)| name)
        .collect();
    // Neither `later` session has audio left, so both are due before the new listener's first chunk.
    assert_eq!(started, vec!["later-a", "later-b", "first-c"]);
}

#[test]
fn a_cancelled_job_never_reaches_an_engine() {
    let pool = pool(1, 16);
    let release = block_thread(&pool);
    let (log_tx, log_rx) = mpsc::channel();
    let stopped = CancelSource::new();
    let kept = CancelSource::new();
    pool.submit(job("stopped", true, &stopped, log_tx.clone()))
        .unwrap();
    pool.submit(job("kept", true, &kept, log_tx.clone())).unwrap();
    stopped.cancel_all();
    drop(log_tx);
    drop(release);
    let events: Vec<_> = log_rx.iter().collect();
    assert!(events.iter().all(|(name, _)| *name == "kept"), "{events:?}");
    assert!(events.iter().any(|(_, kind)| kind == "finished"));
    assert_eq!(pool.stats().discarded, 1);
}

/// An engine that panics on every chunk, as a bug in an engine or its ONNX glue would.
struct PanickingEngine(VoiceInfo);

impl Engine for PanickingEngine {
    fn voice(&self) -> &VoiceInfo {
        &self.0
    }

    fn sample_rate(&self) -> u32 {
        22_050
    }

    fn set_speed(&mut self, _: f32) {}

    fn synthesize(&mut self, _: &str, _: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        panic!("index out of bounds in a phoneme table");
    }
}

#[test]
fn an_engine_panic_fails_that_chunk_and_the_thread_serves_the_next() {
    let pool = pool(1, 16);
    let voice = espeak();
    lock(&pool.shared.idle_engines)
        .entry(voice.id.clone())
        .or_default()
        .push(Box::new(PanickingEngine((*voice).clone())));
    let (log_tx, log_rx) = mpsc::channel();
    let cancel = CancelSource::new();
    pool.submit(job("panics", true, &cancel, log_tx.clone())).unwrap();
    pool.submit(job("after", true, &cancel, log_tx)).unwrap();
    let mut events = Vec::new();
    while let Ok(event) = log_rx.recv_timeout(Duration::from_secs(30)) {
        let done = event == ("after", "finished".to_owned());
        events.push(event);
        if done {
            break;
        }
    }
    let panicked: Vec<_> = events
        .iter()
        .filter(|(name, _)| *name == "panics")
        .map(|(_, k)| k.as_str())
        .collect();
    assert_eq!(
        panicked,
        ["started", "failed"],
        "the panicking chunk fails once: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(name, kind)| *name == "after" && kind == "audio"),
        "the same (only) engine thread synthesised the next chunk: {events:?}"
    );
    assert_eq!(pool.stats().panics, 1);
    // The thread lowers `busy` just after the last event; give it a moment, boundedly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().busy != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.stats().busy, 0, "the thread is not left marked busy");
}

#[test]
fn a_panic_in_the_sink_inside_espeak_does_not_abort_and_espeak_keeps_working() {
    let pool = pool(1, 16);
    let (log_tx, log_rx) = mpsc::channel();
    let mut first_audio = true;
    pool.submit(Job {
        events: Box::new(move |event| {
            if matches!(event, JobEvent::Audio(_)) && std::mem::take(&mut first_audio) {
                panic!("a sink bug");
            }
            if let JobEvent::Failed(error) = event {
                let _ = log_tx.send(error.to_string());
            }
        }),
        ..job("sink", true, &CancelSource::new(), mpsc::channel().0)
    })
    .unwrap();
    let failure = log_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the chunk fails");
    assert!(failure.contains("panicked: a sink bug"), "{failure}");
    let (after_tx, after_rx) = mpsc::channel();
    pool.submit(job("after", true, &CancelSource::new(), after_tx))
        .unwrap();
    let mut kinds = Vec::new();
    while let Ok((_, kind)) = after_rx.recv_timeout(Duration::from_secs(30)) {
        kinds.push(kind);
    }
    assert_eq!(kinds.last().map(String::as_str), Some("finished"), "{kinds:?}");
    assert_eq!(pool.stats().panics, 1);
}

#[test]
fn a_full_queue_refuses_instead_of_blocking() {
    let pool = pool(1, 2);
    let release = block_thread(&pool);
    let (log_tx, _log_rx) = mpsc::channel();
    let cancel = CancelSource::new();
    pool.submit(job("a", false, &cancel, log_tx.clone())).unwrap();
    pool.submit(job("b", false, &cancel, log_tx.clone())).unwrap();
    let refused = pool.submit(job("c", false, &cancel, log_tx));
    assert_eq!(refused.unwrap_err(), SubmitError::QueueFull(2));
    assert_eq!(pool.stats().queued, 2);
    assert_eq!(pool.stats().busy, 1);
    drop(release);
}

#[test]
fn warming_times_load_and_warm_up_apart_and_names_the_failing_phase() {
    let pool = pool(2, 16);
    let timings = pool.warm_timed(&espeak()).unwrap();
    assert!(timings.load > Duration::ZERO, "{timings:?}");
    assert!(timings.warmup > Duration::ZERO, "{timings:?}");
    assert_eq!(pool.loaded_voices(), vec!["espeak-en-us".to_owned()]);

    let mut missing = (*espeak()).clone();
    missing.id = "espeak-xx".into();
    missing.espeak_voice = "no-such-voice".into();
    let failed = pool.warm_timed(&missing).unwrap_err();
    assert!(
        matches!(failed, WarmError::Load(EngineError::Espeak(_))),
        "{failed:?}"
    );
    assert_eq!(pool.loaded_voices(), vec!["espeak-en-us".to_owned()]);
}

#[test]
fn a_job_streams_48_khz_audio_and_reports_its_timings() {
    let pool = pool(2, 16);
    pool.warm(&espeak()).unwrap();
    let (tx, rx) = mpsc::channel();
    pool.submit(Job {
        voice: espeak(),
        text: "The quick brown fox jumps over the lazy dog.".into(),
        first: true,
        cancel: CancelSource::new().token(),
        session_id: "s".into(),
        utterance_id: 1,
        speed: 1.0,
        parent: tracing::Span::none(),
        events: Box::new(move |event| {
            let _ = tx.send(event);
        }),
    })
    .unwrap();
    let events: Vec<JobEvent> = rx
        .iter()
        .take_while(|e| !matches!(e, JobEvent::Finished(_) | JobEvent::Failed(_)))
        .collect();
    assert!(matches!(events.first(), Some(JobEvent::Started { .. })));
    let samples: usize = events
        .iter()
        .map(|e| if let JobEvent::Audio(s) = e { s.len() } else { 0 })
        .sum();
    let seconds = samples as f64 / 48_000.0;
    assert!((1.5..5.0).contains(&seconds), "{seconds} s at 48 kHz");
    assert!(
        events.iter().filter(|e| matches!(e, JobEvent::Audio(_))).count() > 10,
        "streamed in pieces"
    );
}

fn espeak_voice(id: &str) -> Arc<VoiceInfo> {
    let catalog = VoiceCatalog::discover(std::path::Path::new("/nonexistent")).unwrap();
    Arc::new(catalog.get(id).unwrap().clone())
}

fn capped_pool(cap: usize, idle_ttl: Option<Duration>) -> Pool {
    Pool::start(PoolConfig {
        threads: 1,
        queue_capacity: 16,
        engine: EngineSettings::default(),
        residency: ResidencyLimits {
            max_resident_voices: Some(cap),
            idle_ttl,
        },
    })
    .unwrap()
}

#[test]
fn a_third_voice_over_a_cap_of_two_evicts_the_least_recently_used_idle_one() {
    let pool = capped_pool(2, None);
    let [en, de, fr] = ["espeak-en-us", "espeak-de", "espeak-fr-fr"].map(espeak_voice);
    for (voice, session) in [(&en, "s1"), (&de, "s2"), (&en, "s3")] {
        run_to_end(&pool, voice, session, "One two three.", &CancelSource::new());
        pool.end_session(session);
    }
    assert_eq!(pool.residency().resident, 2);
    run_to_end(&pool, &fr, "s4", "Un deux trois.", &CancelSource::new());
    assert_eq!(
        pool.loaded_voices(),
        ["espeak-en-us", "espeak-fr-fr"],
        "espeak-de was used least recently"
    );
    let stats = pool.residency();
    assert_eq!(
        (stats.resident, stats.loads, stats.evicted_for_room),
        (2, 3, 1),
        "{stats:?}"
    );
}

#[test]
fn a_voice_held_by_an_open_session_is_never_evicted_and_the_new_voice_is_refused() {
    let pool = capped_pool(2, None);
    let [en, de, fr] = ["espeak-en-us", "espeak-de", "espeak-fr-fr"].map(espeak_voice);
    run_to_end(&pool, &en, "s1", "One.", &CancelSource::new());
    run_to_end(&pool, &de, "s2", "Eins.", &CancelSource::new());
    // Both sessions are still open: neither voice may go.
    let (tx, _rx) = mpsc::channel();
    let refused = pool.submit(Job {
        voice: fr.clone(),
        ..job("s3", true, &CancelSource::new(), tx)
    });
    assert_eq!(refused.unwrap_err(), SubmitError::VoicesInUse(2));
    assert_eq!(pool.loaded_voices(), ["espeak-de", "espeak-en-us"]);
    assert_eq!(pool.residency().refused, 1);
    // A session that moves to another voice releases the one it held.
    run_to_end(&pool, &de, "s1", "Zwei.", &CancelSource::new());
    run_to_end(&pool, &fr, "s3", "Un.", &CancelSource::new());
    assert_eq!(pool.loaded_voices(), ["espeak-de", "espeak-fr-fr"]);
}

#[test]
fn an_idle_voice_is_unloaded_after_the_ttl_and_a_pinned_one_stays() {
    let pool = capped_pool(4, Some(Duration::from_millis(200)));
    let [en, de] = ["espeak-en-us", "espeak-de"].map(espeak_voice);
    pool.warm(&en).unwrap();
    pool.pin(&en.id);
    run_to_end(&pool, &de, "s1", "Eins.", &CancelSource::new());
    // Held by its open session, the voice outlives many TTLs.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(pool.loaded_voices(), ["espeak-de", "espeak-en-us"]);
    pool.end_session("s1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.loaded_voices().len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pool.loaded_voices(), ["espeak-en-us"]);
    let stats = pool.residency();
    assert_eq!((stats.resident, stats.evicted_idle), (1, 1), "{stats:?}");
}

/// An engine that makes `windows` pieces of `seconds` of 48 kHz silence each, at once, so a session has
/// that much audio to play however slow the machine is; it asks the sink before each piece whether to go
/// on, and pauses when told to, as Piper does between decoder windows.
struct WindowEngine {
    voice: VoiceInfo,
    windows: usize,
    seconds: usize,
    rest: Option<usize>,
}

impl WindowEngine {
    fn make(&mut self, left: usize, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        let piece = vec![0i16; 48_000 * self.seconds];
        for done in 0..left {
            match sink(&[]) {
                Flow::Stop => return Err(EngineError::Cancelled),
                Flow::Pause => {
                    self.rest = Some(left - done);
                    return Ok(());
                }
                Flow::Continue => {}
            }
            if sink(&piece) == Flow::Stop {
                return Err(EngineError::Cancelled);
            }
        }
        Ok(())
    }
}

impl Engine for WindowEngine {
    fn voice(&self) -> &VoiceInfo {
        &self.voice
    }

    fn sample_rate(&self) -> u32 {
        48_000
    }

    fn set_speed(&mut self, _: f32) {}

    fn synthesize(&mut self, _: &str, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        self.make(self.windows, sink)
    }

    fn take_rest(&mut self) -> Option<Rest> {
        self.rest.take().map(Rest::new)
    }

    fn resume(&mut self, rest: Rest, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        self.make(rest.downcast::<usize>().expect("a WindowEngine rest"), sink)
    }
}

/// A one-thread pool whose only engine is a [`WindowEngine`] of `windows` pieces of `seconds` each, for the
/// espeak voice it returns.
fn window_pool(windows: usize, seconds: usize) -> (Pool, Arc<VoiceInfo>) {
    let pool = pool(1, 16);
    let voice = espeak();
    lock(&pool.shared.idle_engines)
        .entry(voice.id.clone())
        .or_default()
        .push(Box::new(WindowEngine {
            voice: (*voice).clone(),
            windows,
            seconds,
            rest: None,
        }));
    (pool, voice)
}

/// A one-thread pool whose voice makes three 5 s windows per chunk, with a long chunk for session `long`
/// running first and a first chunk for session `new` queued behind it, both logging to the receiver;
/// `on_new` sees `new`'s events first.
fn long_chunk_and_a_new_listener(
    long: &CancelSource,
    mut on_new: impl FnMut(&JobEvent) + Send + 'static,
) -> (Pool, mpsc::Receiver<(&'static str, String, f64)>) {
    let (pool, _) = window_pool(3, 5);
    let release = block_thread(&pool);
    let (log_tx, log_rx) = mpsc::channel();
    let logged = |name: &'static str, log: mpsc::Sender<(&'static str, String, f64)>| {
        move |event: &JobEvent| {
            let (kind, seconds) = match event {
                JobEvent::Started { .. } => ("started", 0.0),
                JobEvent::Audio(pcm) => ("audio", pcm.len() as f64 / 48_000.0),
                JobEvent::Finished(stats) => ("finished", stats.audio_seconds),
                JobEvent::Failed(_) => ("failed", 0.0),
            };
            let _ = log.send((name, kind.to_owned(), seconds));
        }
    };
    let log_long = logged("long", log_tx.clone());
    pool.submit(Job {
        events: Box::new(move |event| log_long(&event)),
        ..job("long", true, long, mpsc::channel().0)
    })
    .unwrap();
    let log_new = logged("new", log_tx);
    pool.submit(Job {
        events: Box::new(move |event| {
            on_new(&event);
            log_new(&event);
        }),
        ..job("new", true, &CancelSource::new(), mpsc::channel().0)
    })
    .unwrap();
    drop(release);
    (pool, log_rx)
}

#[test]
fn a_long_chunk_pauses_for_a_waiting_listener_and_then_plays_all_its_audio() {
    let (pool, log_rx) = long_chunk_and_a_new_listener(&CancelSource::new(), |_| {});
    let events: Vec<_> = log_rx
        .iter()
        .map(|(name, kind, seconds)| format!("{name} {kind} {seconds}"))
        .collect();
    assert_eq!(
        events,
        [
            "long started 0",
            "long audio 5",
            // `long` has 5 s in hand and `new` waits for first audio: `long` pauses.
            "new started 0",
            "new audio 5",
            "new audio 5",
            "new audio 5",
            "new finished 15",
            // Then `long` goes on where it paused, with none of its audio lost or repeated.
            "long audio 5",
            "long audio 5",
            "long finished 15",
        ],
    );
    assert_eq!(pool.stats().discarded, 0);
}

#[test]
fn a_paused_chunk_stopped_before_it_goes_on_makes_nothing_more() {
    let long = CancelSource::new();
    let stop = long.clone();
    let (pool, log_rx) = long_chunk_and_a_new_listener(&long, move |event| {
        if matches!(event, JobEvent::Started { .. }) {
            stop.cancel_all(); // `long` gets a STOP while paused.
        }
    });
    let events: Vec<_> = log_rx
        .iter()
        .map(|(name, kind, _)| format!("{name} {kind}"))
        .collect();
    assert_eq!(
        events,
        [
            "long started",
            "long audio",
            "new started",
            "new audio",
            "new audio",
            "new audio",
            "new finished",
        ],
        "the rest of the stopped chunk is never made"
    );
    assert_eq!(pool.stats().discarded, 1);
}
