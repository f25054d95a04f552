use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::registry::Registry;
use tts_core::engine::EngineSettings;
use tts_core::pool::{Pool, PoolConfig, ResidencyLimits};
use tts_core::voices::EngineKind;
use tts_test_support::Scrape;

use super::*;

const LOAD: Duration = Duration::from_secs(2);
const WARMUP: Duration = Duration::from_millis(500);

/// Counts calls, takes `LOAD + WARMUP` of (paused) tokio time, and fails while told to.
#[derive(Default)]
struct FakeLoader {
    state: Arc<FakeState>,
}

#[derive(Default)]
struct FakeState {
    /// Voice and start time of every load.
    starts: Mutex<Vec<(String, Instant)>>,
    unloads: Mutex<Vec<String>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    fail: Mutex<Option<LoadFailureReason>>,
}

impl FakeState {
    fn loads(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    fn unloads(&self) -> Vec<String> {
        self.unloads.lock().unwrap().clone()
    }

    fn fail_with(&self, reason: Option<LoadFailureReason>) {
        *self.fail.lock().unwrap() = reason;
    }
}

impl VoiceLoader for FakeLoader {
    fn load(
        &self,
        voice: Arc<VoiceInfo>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<LoadTimings, LoadFailure>> + Send>> {
        let state = self.state.clone();
        Box::pin(async move {
            state
                .starts
                .lock()
                .unwrap()
                .push((voice.id.clone(), Instant::now()));
            let running = state.running.fetch_add(1, Ordering::SeqCst) + 1;
            state.most_running.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(LOAD + WARMUP).await;
            state.running.fetch_sub(1, Ordering::SeqCst);
            let fail = *state.fail.lock().unwrap();
            match fail {
                Some(reason) => Err(LoadFailure::new(reason, "the fake was told to fail")),
                None => Ok(LoadTimings { warmup: WARMUP }),
            }
        })
    }

    fn unload(&self, voice: &VoiceInfo) {
        self.state.unloads.lock().unwrap().push(voice.id.clone());
    }
}

fn voice(id: &str) -> VoiceInfo {
    VoiceInfo {
        id: id.into(),
        engine: EngineKind::Espeak,
        language: "en-us".into(),
        sample_rate: 22_050,
        model_path: None,
        espeak_voice: "en-us".into(),
    }
}

struct Harness {
    manager: Arc<ModelManager>,
    loader: Arc<FakeState>,
    registry: Registry,
}

impl Harness {
    fn new(config: ModelManagerConfig) -> Self {
        let mut registry = Registry::default();
        let metrics = ModelMetrics::register(&mut registry);
        let catalog = VoiceCatalog::from_voices(["a", "b", "c", "d"].map(voice));
        let loader = FakeLoader::default();
        let state = loader.state.clone();
        Self {
            manager: ModelManager::new(config, Arc::new(catalog), Arc::new(loader), metrics),
            loader: state,
            registry,
        }
    }

    fn scrape(&self) -> Scrape {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        Scrape::parse(&text).unwrap()
    }

    fn loads_total(&self, voice: &str) -> f64 {
        self.scrape()
            .sum("tts_model_loads_total", &[("engine", "espeak"), ("voice", voice)])
    }

    fn unloads_total(&self, voice: &str, reason: &str) -> f64 {
        self.scrape().sum(
            "tts_model_unloads_total",
            &[("engine", "espeak"), ("voice", voice), ("reason", reason)],
        )
    }

    fn resident_gauge(&self) -> Option<f64> {
        self.scrape()
            .get("tts_model_resident_voices", &[("engine", "espeak")])
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_for_one_voice_load_it_once() {
    let h = Harness::new(ModelManagerConfig::default());
    let started = Instant::now();
    let acquires = (0..5).map(|_| h.manager.acquire("a", LoadReason::Demand));
    let leases = futures_util::future::join_all(acquires).await;
    assert_eq!(
        started.elapsed(),
        LOAD + WARMUP,
        "every caller waited for the one load"
    );
    assert!(leases.iter().all(Result::is_ok), "{leases:?}");
    assert_eq!(h.loader.loads(), 1);
    assert_eq!(h.loads_total("a"), 1.0);
    let scrape = h.scrape();
    let labels = [("engine", "espeak"), ("voice", "a")];
    assert_eq!(scrape.get("tts_model_load_seconds_count", &labels), Some(1.0));
    assert_eq!(
        scrape.get("tts_model_load_seconds_sum", &labels),
        Some(LOAD.as_secs_f64())
    );
    assert_eq!(
        scrape.get("tts_model_warmup_seconds_sum", &labels),
        Some(WARMUP.as_secs_f64())
    );
    assert_eq!(h.resident_gauge(), Some(1.0));
    assert_eq!(h.manager.list()[0].in_use, 5);

    drop(leases);
    assert_eq!(h.manager.list()[0].in_use, 0);
    let again = h.manager.load("a", LoadReason::Manual).await.unwrap();
    assert_eq!(
        again,
        LoadOutcome {
            already_resident: true,
            waited: Duration::ZERO
        }
    );
    assert_eq!(h.loader.loads(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_voice_is_swept_after_the_ttl_and_not_before() {
    let h = Harness::new(ModelManagerConfig::default());
    drop(h.manager.acquire("a", LoadReason::Demand).await.unwrap());

    tokio::time::advance(Duration::from_secs(9 * 60)).await;
    assert!(h.manager.sweep().is_empty());
    assert!(h.manager.is_resident("a"));
    let status = &h.manager.list()[0];
    assert_eq!(status.idle_for, Some(Duration::from_secs(9 * 60)));

    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(h.manager.sweep(), vec!["a".to_owned()]);
    assert!(!h.manager.is_resident("a"));
    assert_eq!(h.loader.unloads(), vec!["a".to_owned()]);
    assert_eq!(h.unloads_total("a", "ttl"), 1.0);
    assert_eq!(h.resident_gauge(), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn a_voice_in_use_is_never_swept() {
    let h = Harness::new(ModelManagerConfig::default());
    let lease = h.manager.acquire("a", LoadReason::Demand).await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(h.manager.sweep().is_empty());
    drop(lease);
    // Idle counts from the release, not from the load.
    tokio::time::advance(DEFAULT_IDLE_TTL - Duration::from_secs(1)).await;
    assert!(h.manager.sweep().is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.manager.sweep(), vec!["a".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn the_minimum_residency_outlasts_a_shorter_ttl() {
    let h = Harness::new(ModelManagerConfig {
        idle_ttl: Duration::from_secs(30),
        min_residency: Duration::from_secs(120),
        ..ModelManagerConfig::default()
    });
    h.manager.load("a", LoadReason::Preload).await.unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(
        h.manager.sweep().is_empty(),
        "idle past the TTL but resident only 60 s"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(h.manager.sweep(), vec!["a".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn the_cap_evicts_the_least_recently_used_voice_that_may_go() {
    let h = Harness::new(ModelManagerConfig {
        resident_cap: 2,
        ..ModelManagerConfig::default()
    });
    h.manager.load("a", LoadReason::Preload).await.unwrap();
    h.manager.load("b", LoadReason::Preload).await.unwrap();
    tokio::time::advance(DEFAULT_MIN_RESIDENCY).await;
    drop(h.manager.acquire("a", LoadReason::Demand).await.unwrap());
    tokio::time::advance(Duration::from_secs(1)).await;

    let c = h.manager.acquire("c", LoadReason::Demand).await.unwrap();
    assert_eq!(h.manager.resident(), vec!["a".to_owned(), "c".to_owned()]);
    assert_eq!(h.loader.unloads(), vec!["b".to_owned()]);
    assert_eq!(h.unloads_total("b", "lru"), 1.0);

    // "a" is old enough but in use, "c" is in use and too young: nothing may go.
    let a = h.manager.acquire("a", LoadReason::Demand).await.unwrap();
    let loads_before = h.loader.loads();
    let refused = h.manager.acquire("d", LoadReason::Demand).await.unwrap_err();
    assert!(matches!(refused, ModelError::CapReached { cap: 2 }), "{refused}");
    assert_eq!(
        h.loader.loads(),
        loads_before,
        "a refused load never reaches the loader"
    );

    // Released but younger than the minimum residency: still refused.
    drop(c);
    let refused = h.manager.load("d", LoadReason::Demand).await.unwrap_err();
    assert!(matches!(refused, ModelError::CapReached { .. }), "{refused}");

    // Once "c" is old enough it goes; "a" stays because it is still in use.
    tokio::time::advance(DEFAULT_MIN_RESIDENCY).await;
    h.manager.load("d", LoadReason::Demand).await.unwrap();
    assert_eq!(h.manager.resident(), vec!["a".to_owned(), "d".to_owned()]);
    drop(a);
}

#[tokio::test(start_paused = true)]
async fn loads_beyond_the_parallel_limit_wait_their_turn() {
    let h = Harness::new(ModelManagerConfig::default());
    let started = Instant::now();
    let (a, b) = tokio::join!(
        h.manager.load("a", LoadReason::Demand),
        h.manager.load("b", LoadReason::Demand)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(h.loader.most_running.load(Ordering::SeqCst), 1);
    let starts = h.loader.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[1].1 - starts[0].1,
        LOAD + WARMUP,
        "the second began as the first ended"
    );
    assert_eq!(started.elapsed(), 2 * (LOAD + WARMUP));
    let mut waited = [a.waited, b.waited];
    waited.sort();
    assert_eq!(waited, [LOAD + WARMUP, 2 * (LOAD + WARMUP)]);

    // The load clock starts at the slot, so the queued load's time waiting for it is not counted.
    let scrape = h.scrape();
    for voice in ["a", "b"] {
        let labels = [("voice", voice)];
        assert_eq!(
            scrape.get("tts_model_load_seconds_sum", &labels),
            Some(LOAD.as_secs_f64())
        );
    }
}

#[tokio::test(start_paused = true)]
async fn two_parallel_slots_run_two_loads_at_once() {
    let h = Harness::new(ModelManagerConfig {
        max_parallel_loads: 2,
        ..ModelManagerConfig::default()
    });
    let started = Instant::now();
    let (a, b) = tokio::join!(
        h.manager.load("a", LoadReason::Demand),
        h.manager.load("b", LoadReason::Demand)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(h.loader.most_running.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), LOAD + WARMUP);
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_fails_every_waiter_and_a_retry_loads_again() {
    let h = Harness::new(ModelManagerConfig::default());
    h.loader.fail_with(Some(LoadFailureReason::Warmup));
    let acquires = (0..3).map(|_| h.manager.acquire("a", LoadReason::Demand));
    let results = futures_util::future::join_all(acquires).await;
    for result in results {
        match result {
            Err(ModelError::LoadFailed { voice, reason, .. }) => {
                assert_eq!(voice, "a");
                assert_eq!(reason, LoadFailureReason::Warmup);
            }
            other => panic!("expected LoadFailed, got {other:?}"),
        }
    }
    assert_eq!(h.loader.loads(), 1);
    assert!(!h.manager.is_resident("a"));
    assert!(h.manager.resident().is_empty());
    let scrape = h.scrape();
    assert_eq!(
        scrape.get(
            "tts_model_load_failures_total",
            &[("engine", "espeak"), ("voice", "a"), ("reason", "warmup")]
        ),
        Some(1.0)
    );
    assert_eq!(h.loads_total("a"), 0.0);

    h.loader.fail_with(None);
    h.manager.acquire("a", LoadReason::Demand).await.unwrap();
    assert_eq!(h.loader.loads(), 2);
    assert!(h.manager.is_resident("a"));
    assert_eq!(h.loads_total("a"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_manual_unload_waits_for_the_voice_to_be_free() {
    let h = Harness::new(ModelManagerConfig::default());
    let first = h.manager.acquire("a", LoadReason::Demand).await.unwrap();
    let second = h.manager.acquire("a", LoadReason::Demand).await.unwrap();
    let refused = h.manager.unload("a").unwrap_err();
    assert!(
        matches!(&refused, ModelError::InUse { voice, users: 2 } if voice == "a"),
        "{refused:?}"
    );
    assert_eq!(refused.to_string(), "voice a is in use by 2 sessions or chunks");
    drop(first);
    drop(second);

    h.manager.unload("a").unwrap();
    assert!(!h.manager.is_resident("a"));
    assert_eq!(h.unloads_total("a", "manual"), 1.0);
    // Unloading what is not resident is not an error; an unknown voice is.
    h.manager.unload("a").unwrap();
    let unknown = h.manager.unload("zz").unwrap_err();
    assert!(unknown.to_string().contains("\"zz\""), "{unknown}");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_voice_is_refused_without_a_load() {
    let h = Harness::new(ModelManagerConfig::default());
    let err = h.manager.acquire("nope", LoadReason::Demand).await.unwrap_err();
    assert!(matches!(err, ModelError::UnknownVoice(_)), "{err:?}");
    assert!(err.to_string().contains("a, b, c, d"), "{err}");
    assert_eq!(h.loader.loads(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_unloads_on_its_own_and_stops_on_shutdown() {
    let h = Harness::new(ModelManagerConfig {
        idle_ttl: Duration::from_secs(60),
        min_residency: Duration::from_secs(60),
        sweep_interval: Duration::from_secs(10),
        ..ModelManagerConfig::default()
    });
    h.manager.load("a", LoadReason::Startup).await.unwrap();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sweeper = h.manager.spawn_sweeper(shutdown_rx);
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert!(h.manager.is_resident("a"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!h.manager.is_resident("a"));
    shutdown_tx.send_replace(true);
    sweeper.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn list_reports_every_catalog_voice() {
    let h = Harness::new(ModelManagerConfig::default());
    let lease = h.manager.acquire("b", LoadReason::Demand).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let list = h.manager.list();
    let ids: Vec<&str> = list.iter().map(|s| s.voice.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert!(!list[0].resident && list[0].resident_for.is_none() && list[0].idle_for.is_none());
    assert!(list[1].resident);
    assert_eq!(list[1].in_use, 1);
    assert_eq!(list[1].resident_for, Some(Duration::from_secs(5)));
    assert_eq!(list[1].idle_for, Some(Duration::ZERO));
    assert_eq!(lease.voice().id, "b");
}

/// The real pool on espeak-ng: both phases take measurable time and unload really drops the instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_loader_warms_and_drops_a_real_voice() {
    let catalog = VoiceCatalog::discover(std::path::Path::new("/nonexistent")).unwrap();
    let pool = Arc::new(
        Pool::start(PoolConfig {
            threads: 2,
            queue_capacity: 16,
            engine: EngineSettings::default(),
            residency: ResidencyLimits::unbounded(),
        })
        .unwrap(),
    );
    let mut registry = Registry::default();
    let metrics = ModelMetrics::register(&mut registry);
    let manager = ModelManager::new(
        ModelManagerConfig::default(),
        Arc::new(catalog),
        Arc::new(PoolLoader::new(pool.clone())),
        metrics,
    );

    let outcome = manager.load("espeak-en-us", LoadReason::Manual).await.unwrap();
    assert!(!outcome.already_resident);
    assert!(outcome.waited > Duration::ZERO);
    assert_eq!(pool.loaded_voices(), vec!["espeak-en-us".to_owned()]);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let scrape = Scrape::parse(&text).unwrap();
    let labels = [("engine", "espeak"), ("voice", "espeak-en-us")];
    for histogram in ["tts_model_load_seconds", "tts_model_warmup_seconds"] {
        assert_eq!(scrape.get(&format!("{histogram}_count"), &labels), Some(1.0));
        let sum = scrape.get(&format!("{histogram}_sum"), &labels).unwrap();
        assert!(sum > 0.0, "{histogram} {sum}");
    }
    assert_eq!(
        scrape.get(
            "tts_model_loads_total",
            &[("voice", "espeak-en-us"), ("reason", "manual")]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.get("tts_model_resident_voices", &[("engine", "espeak")]),
        Some(1.0)
    );

    manager.unload("espeak-en-us").unwrap();
    assert!(pool.loaded_voices().is_empty());
}

#[tokio::test]
async fn the_pool_loader_reports_a_missing_voice_as_not_found() {
    let pool = Arc::new(
        Pool::start(PoolConfig {
            threads: 1,
            queue_capacity: 16,
            engine: EngineSettings::default(),
            residency: ResidencyLimits::unbounded(),
        })
        .unwrap(),
    );
    let mut missing = voice("espeak-xx");
    missing.espeak_voice = "no-such-voice".into();
    let failure = PoolLoader::new(pool.clone())
        .load(Arc::new(missing))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, LoadFailureReason::NotFound, "{failure}");
    assert!(pool.loaded_voices().is_empty());
}
