//! The state machine on a paused clock: every test advances tokio's clock by hand.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::Receiver;
use tts_telemetry::admin::{CheckResult, HealthCheck};

use super::*;
use crate::rule::{AnomalyParams, Direction, LevelThreshold};

pub(crate) fn latency_rule(for_seconds: f64) -> ThresholdRule {
    ThresholdRule {
        name: "HighLatency".into(),
        signal: "latency_seconds".into(),
        scope_filter: Scope::new(),
        direction: Direction::HigherIsWorse,
        thresholds: Thresholds {
            warning: Some(LevelThreshold {
                trigger: 1.0,
                clear: 0.8,
            }),
            critical: Some(LevelThreshold {
                trigger: 2.0,
                clear: 1.6,
            }),
            emergency: Some(LevelThreshold {
                trigger: 4.0,
                clear: 3.0,
            }),
            for_seconds,
        },
        summary: "Latency is high.".into(),
        description: "Latency is {value} s in {scope}.".into(),
    }
}

pub(crate) fn config(rules: Vec<ThresholdRule>) -> EngineConfig {
    EngineConfig {
        threshold_rules: rules,
        anomaly_rules: Vec::new(),
        health_rules: Vec::new(),
        cooldown: Duration::from_secs(60),
        repeat_interval: Duration::from_secs(600),
        escalation: Escalation::default(),
        history_capacity: 4,
        links: Links {
            service: "svc".into(),
            instance: "host:1".into(),
            runbook_base: "docs/runbooks/".into(),
            admin_url: "http://127.0.0.1:9".into(),
        },
    }
}

pub(crate) fn build(config: EngineConfig) -> (Engine, Receiver<Notification>) {
    let metrics = Metrics::default();
    let (dispatch, rx) = Dispatch::channel(1024, &metrics);
    (Engine::new(config, metrics, dispatch).unwrap(), rx)
}

/// Advances the clock by one second and evaluates `value` on `voice=a`.
async fn tick(engine: &Engine, value: f64) {
    tokio::time::advance(Duration::from_secs(1)).await;
    engine.evaluate(
        &[Sample::new("latency_seconds", &[("voice", "a")], value)],
        Instant::now(),
    );
}

async fn ticks(engine: &Engine, value: f64, n: u32) {
    for _ in 0..n {
        tick(engine, value).await;
    }
}

fn drain(rx: &mut Receiver<Notification>) -> Vec<(Event, Level)> {
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        out.push((n.event, n.alert.level));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn pending_waits_for_its_for_then_fires() {
    let (engine, mut rx) = build(config(vec![latency_rule(10.0)]));
    ticks(&engine, 1.5, 5).await;
    assert_eq!(engine.active()[0].state, AlertState::Pending);
    ticks(&engine, 0.5, 1).await;
    assert!(engine.active().is_empty(), "a short breach never fires");
    assert!(engine.history().is_empty());
    assert!(drain(&mut rx).is_empty());

    ticks(&engine, 1.5, 10).await;
    assert_eq!(engine.active()[0].state, AlertState::Pending);
    tick(&engine, 1.5).await;
    let active = engine.active();
    assert_eq!(active[0].state, AlertState::Firing);
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Warning)]);
    let view = &active[0];
    assert_eq!(view.labels["alertname"], "HighLatency");
    assert_eq!(view.labels["severity"], "warning");
    assert_eq!(view.labels["voice"], "a");
    assert_eq!(view.labels["service"], "svc");
    assert_eq!(view.annotations["runbook_url"], "docs/runbooks/HighLatency.md");
    assert_eq!(
        view.generator_url,
        format!("http://127.0.0.1:9/dashboard#alerts/{}", view.id)
    );
    assert!(view.description.contains("1.5000"), "{}", view.description);
}

#[tokio::test(start_paused = true)]
async fn hysteresis_holds_a_level_until_its_clear_threshold() {
    let (engine, mut rx) = build(config(vec![latency_rule(0.0)]));
    tick(&engine, 1.2).await;
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Warning)]);
    ticks(&engine, 0.9, 5).await;
    assert_eq!(engine.active().len(), 1, "between clear and trigger it stays");
    tick(&engine, 0.79).await;
    assert!(engine.active().is_empty());
    assert_eq!(drain(&mut rx), vec![(Event::Resolved, Level::Warning)]);
    assert_eq!(engine.history()[0].resolved_by.as_deref(), Some("condition"));
}

#[tokio::test(start_paused = true)]
async fn levels_rise_and_fall_with_their_own_clear_thresholds() {
    let (engine, mut rx) = build(config(vec![latency_rule(0.0)]));
    tick(&engine, 2.5).await;
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Critical)]);
    tick(&engine, 1.7).await;
    assert_eq!(
        engine.active()[0].level,
        Level::Critical,
        "above critical's clear"
    );
    tick(&engine, 1.5).await;
    assert_eq!(engine.active()[0].level, Level::Warning);
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Warning)]);
    tick(&engine, 5.0).await;
    let view = &engine.active()[0];
    assert_eq!(view.level, Level::Emergency);
    assert_eq!(view.labels["severity"], "critical");
    assert_eq!(view.labels["priority"], "P0");
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Emergency)]);
    assert_eq!(engine.active().len(), 1, "one alert throughout");
}

#[tokio::test(start_paused = true)]
async fn cooldown_holds_back_a_refire_and_sends_it_when_over() {
    let (engine, mut rx) = build(config(vec![latency_rule(0.0)]));
    tick(&engine, 1.5).await;
    tick(&engine, 0.5).await;
    assert_eq!(
        drain(&mut rx),
        vec![(Event::Firing, Level::Warning), (Event::Resolved, Level::Warning)]
    );
    // Fires again 10 s later: within the 60 s cooldown, held back.
    ticks(&engine, 0.5, 8).await;
    tick(&engine, 1.5).await;
    assert_eq!(engine.active()[0].state, AlertState::Firing);
    assert!(drain(&mut rx).is_empty());
    // Ends within the cooldown: nobody heard of it, so no resolve either.
    tick(&engine, 0.5).await;
    assert!(drain(&mut rx).is_empty());
    // Fires again and stays: sent once the cooldown (from the first firing) is over.
    tick(&engine, 1.5).await;
    ticks(&engine, 1.5, 40).await;
    assert!(drain(&mut rx).is_empty());
    ticks(&engine, 1.5, 10).await;
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Warning)]);
}

#[tokio::test(start_paused = true)]
async fn repeats_until_acknowledged_and_the_ack_ends_with_the_alert() {
    let (engine, mut rx) = build(config(vec![latency_rule(0.0)]));
    tick(&engine, 1.5).await;
    ticks(&engine, 1.5, 600).await;
    assert_eq!(
        drain(&mut rx),
        vec![(Event::Firing, Level::Warning), (Event::Repeat, Level::Warning)]
    );
    let id = engine.active()[0].id;
    let view = engine.ack(id, "alice", "looking").unwrap();
    assert_eq!(view.ack.as_ref().unwrap().who, "alice");
    ticks(&engine, 1.5, 1300).await;
    assert!(drain(&mut rx).is_empty(), "no repeats once acknowledged");
    tick(&engine, 0.5).await;
    assert_eq!(drain(&mut rx), vec![(Event::Resolved, Level::Warning)]);
    assert_eq!(engine.history()[0].ack.as_ref().unwrap().why, "looking");
    assert!(matches!(
        engine.ack(id, "bob", "late"),
        Err(AlertError::NotActive(_))
    ));
    ticks(&engine, 0.5, 100).await;
    tick(&engine, 1.5).await;
    assert!(
        engine.active()[0].ack.is_none(),
        "a new alert starts unacknowledged"
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_warning_escalates_to_critical() {
    let mut config = config(vec![latency_rule(0.0)]);
    config.escalation.after = Some(Duration::from_secs(300));
    let (engine, mut rx) = build(config);
    ticks(&engine, 1.5, 300).await;
    assert_eq!(engine.active()[0].level, Level::Warning);
    tick(&engine, 1.5).await;
    let view = &engine.active()[0];
    assert_eq!(view.level, Level::Critical);
    assert!(view.escalated);
    assert_eq!(
        drain(&mut rx),
        vec![(Event::Firing, Level::Warning), (Event::Firing, Level::Critical)]
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_firings_in_a_window_escalate() {
    let mut config = config(vec![latency_rule(0.0)]);
    config.escalation.repeated = Some((3, Duration::from_secs(600)));
    config.cooldown = Duration::ZERO;
    let (engine, mut rx) = build(config);
    for _ in 0..2 {
        tick(&engine, 1.5).await;
        tick(&engine, 0.5).await;
    }
    tick(&engine, 1.5).await;
    let view = &engine.active()[0];
    assert_eq!(view.level, Level::Critical);
    assert!(view.escalated);
    let events = drain(&mut rx);
    assert_eq!(events.last(), Some(&(Event::Firing, Level::Critical)));
}

#[tokio::test(start_paused = true)]
async fn a_manual_resolve_stays_quiet_until_the_condition_clears() {
    let (engine, mut rx) = build(config(vec![latency_rule(0.0)]));
    tick(&engine, 1.5).await;
    let id = engine.active()[0].id;
    let view = engine.resolve(id, "bob").unwrap();
    assert_eq!(view.state, AlertState::Resolved);
    assert_eq!(view.resolved_by.as_deref(), Some("manual:bob"));
    ticks(&engine, 1.5, 100).await;
    assert!(engine.active().is_empty());
    tick(&engine, 0.5).await;
    tick(&engine, 1.5).await;
    assert_eq!(engine.active().len(), 1, "armed again after a clear");
    assert!(matches!(engine.resolve(id, "bob"), Err(AlertError::NotActive(_))));
    assert!(engine.known(id));
    let events = drain(&mut rx);
    assert_eq!(
        events[..2],
        [(Event::Firing, Level::Warning), (Event::Resolved, Level::Warning)]
    );
}

#[tokio::test(start_paused = true)]
async fn no_data_clears_and_history_is_bounded() {
    let (engine, _rx) = build(config(vec![latency_rule(0.0)]));
    for _ in 0..10 {
        tick(&engine, 1.5).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        engine.evaluate(&[], Instant::now());
    }
    assert!(engine.active().is_empty());
    assert_eq!(engine.history().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn thresholds_change_at_run_time_and_bad_ones_are_all_listed() {
    let (engine, mut rx) = build(config(vec![latency_rule(0.0)]));
    ticks(&engine, 0.5, 3).await;
    assert!(engine.active().is_empty());
    let mut lower = engine.thresholds()["HighLatency"].thresholds.clone();
    lower.warning = Some(LevelThreshold {
        trigger: 0.4,
        clear: 0.3,
    });
    let bad = Thresholds {
        warning: Some(LevelThreshold {
            trigger: 1.0,
            clear: 2.0,
        }),
        critical: None,
        emergency: None,
        for_seconds: -1.0,
    };
    let updates = BTreeMap::from([
        ("HighLatency".to_owned(), bad),
        ("Nope".to_owned(), lower.clone()),
    ]);
    let Err(AlertError::Invalid(problems)) = engine.set_thresholds(&updates) else {
        panic!("accepted bad thresholds");
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("Nope")));
    engine
        .set_thresholds(&BTreeMap::from([("HighLatency".to_owned(), lower)]))
        .unwrap();
    tick(&engine, 0.5).await;
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Warning)]);
}

struct Switch(AtomicBool);

impl HealthCheck for Switch {
    fn name(&self) -> &str {
        "dependency"
    }
    fn required_for_readiness(&self) -> bool {
        false
    }
    fn check(&self) -> CheckResult {
        if self.0.load(Ordering::SeqCst) {
            CheckResult::pass("up")
        } else {
            CheckResult::fail("down")
        }
    }
}

#[tokio::test(start_paused = true)]
async fn health_checks_need_consecutive_failures_and_passes() {
    let switch = Arc::new(Switch(AtomicBool::new(true)));
    let mut config = config(Vec::new());
    config.health_rules.push(HealthRule {
        name: "DependencyDown".into(),
        scope: Scope::from([("target".to_owned(), "db".to_owned())]),
        check: switch.clone(),
        interval: Duration::from_secs(10),
        failure_threshold: 3,
        recovery_threshold: 2,
        level: Level::Critical,
        summary: "A dependency is down.".into(),
    });
    let (engine, mut rx) = build(config);
    let eval = |engine: &Engine| engine.evaluate(&[], Instant::now());
    eval(&engine);
    switch.0.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(10)).await;
        eval(&engine);
    }
    // Ticks between intervals do not run the check.
    for _ in 0..9 {
        tokio::time::advance(Duration::from_secs(1)).await;
        eval(&engine);
    }
    assert!(engine.active().is_empty(), "two failures are not three");
    tokio::time::advance(Duration::from_secs(1)).await;
    eval(&engine);
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Critical)]);
    assert!(engine.active()[0].description.contains("down"));
    switch.0.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(10)).await;
    eval(&engine);
    assert_eq!(engine.active().len(), 1, "one pass is not two");
    tokio::time::advance(Duration::from_secs(10)).await;
    eval(&engine);
    assert!(engine.active().is_empty());
    assert_eq!(drain(&mut rx), vec![(Event::Resolved, Level::Critical)]);
}

#[tokio::test(start_paused = true)]
async fn anomalies_fire_after_n_points_and_do_not_teach_the_baseline() {
    let mut config = config(Vec::new());
    config.anomaly_rules.push(AnomalyRule {
        name: "LatencyAnomaly".into(),
        signal: "latency_seconds".into(),
        scope_filter: Scope::new(),
        direction: Direction::HigherIsWorse,
        params: AnomalyParams {
            alpha: 0.05,
            z_threshold: 3.0,
            min_points: 60,
            consecutive: 5,
            min_stddev: 0.001,
        },
        level: Level::Warning,
        summary: "Latency departs from its baseline.".into(),
        description: "{value}".into(),
    });
    let (engine, mut rx) = build(config);
    for i in 0..300 {
        tick(&engine, 0.2 + 0.01 * (f64::from(i) * 0.7).sin()).await;
    }
    assert!(engine.active().is_empty());
    let before = engine.baselines()[0]["baseline"]["mean"].as_f64().unwrap();
    ticks(&engine, 0.4, 4).await;
    assert!(engine.active().is_empty(), "four points are not five");
    tick(&engine, 0.4).await;
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Warning)]);
    ticks(&engine, 0.4, 100).await;
    let after = engine.baselines()[0]["baseline"]["mean"].as_f64().unwrap();
    assert_eq!(before, after);
    ticks(&engine, 0.2, 4).await;
    assert_eq!(engine.active().len(), 1);
    tick(&engine, 0.2).await;
    assert!(engine.active().is_empty());
    assert_eq!(drain(&mut rx), vec![(Event::Resolved, Level::Warning)]);
}

struct Fixed(f64);

impl crate::SignalSource for Fixed {
    fn sample(&self, out: &mut Vec<Sample>) {
        out.push(Sample::new("latency_seconds", &[], self.0));
    }
}

#[tokio::test(start_paused = true)]
async fn the_tick_task_evaluates_on_its_interval() {
    let (engine, mut rx) = build(config(vec![latency_rule(30.0)]));
    let engine = Arc::new(engine);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::run(
        engine.clone(),
        Arc::new(Fixed(3.0)),
        Duration::from_secs(1),
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(29_500)).await;
    assert!(drain(&mut rx).is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(drain(&mut rx), vec![(Event::Firing, Level::Critical)]);
    stop.send(()).unwrap();
    task.await.unwrap();
}

mod oscillation {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// A signal that wanders around one trigger: whatever it does, each (rule, scope, level) gets
        /// at most one firing notification per cooldown.
        #[test]
        fn at_most_one_notification_per_cooldown(
            steps in proptest::collection::vec((0.5f64..1.5, 1u64..20), 10..200),
            for_seconds in 0u32..5,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut rule = latency_rule(f64::from(for_seconds));
                rule.thresholds.critical = None;
                rule.thresholds.emergency = None;
                rule.thresholds.warning = Some(LevelThreshold { trigger: 1.0, clear: 1.0 });
                let (engine, mut rx) = build(config(vec![rule]));
                let mut sent: Vec<Instant> = Vec::new();
                for (value, seconds) in steps {
                    for _ in 0..seconds {
                        tick(&engine, value).await;
                        while let Ok(n) = rx.try_recv() {
                            if n.event == Event::Firing {
                                sent.push(Instant::now());
                            }
                        }
                    }
                }
                for pair in sent.windows(2) {
                    prop_assert!(
                        pair[1].duration_since(pair[0]) >= Duration::from_secs(60),
                        "two notifications {:?} apart", pair[1].duration_since(pair[0])
                    );
                }
                Ok(())
            })?;
        }
    }
}
