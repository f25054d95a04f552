//! The worker's gRPC contract on a real loopback socket, with the real espeak-ng engine: per-session
//! PAUSE/STOP isolation, errors that name the problem, model RPCs, and grpc.health.v1.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use tts_core::engine::EngineSettings;
use tts_core::pool::{Pool, PoolConfig, ResidencyLimits};
use tts_core::voices::VoiceCatalog;
use tts_proto::v1::synthesize_response::Event;
use tts_proto::v1::worker_client::WorkerClient;
use tts_proto::v1::{
    Command, ControlRequest, EndSessionRequest, ListModelsRequest, LoadModelRequest, StartSessionRequest,
    SynthesizeRequest, SynthesizeResponse, UnloadModelRequest,
};
use tts_worker::models::{LoadReason, ModelManager, ModelManagerConfig, ModelMetrics, PoolLoader};
use tts_worker::{WorkerMetrics, WorkerService, WorkerSettings};

const VOICE: &str = "espeak-en-us";
const SENTENCE: &str = "The quick brown fox jumps over the lazy dog, and then it rests for a while.";

struct Worker {
    client: WorkerClient<Channel>,
    channel: Channel,
    _shutdown: watch::Sender<bool>,
}

async fn worker() -> Worker {
    let catalog = Arc::new(VoiceCatalog::discover(std::path::Path::new("/nonexistent")).unwrap());
    let pool = Arc::new(
        Pool::start(PoolConfig {
            threads: 2,
            queue_capacity: 64,
            engine: EngineSettings::default(),
            residency: ResidencyLimits::unbounded(),
        })
        .unwrap(),
    );
    let mut registry = Registry::default();
    let models = ModelManager::new(
        ModelManagerConfig::default(),
        catalog.clone(),
        Arc::new(PoolLoader::new(pool.clone())),
        ModelMetrics::register(&mut registry),
    );
    models.load(VOICE, LoadReason::Startup).await.unwrap();
    let service = WorkerService::new(
        WorkerSettings {
            name: "test".into(),
            max_sessions: 2,
            default_voice: VOICE.into(),
        },
        pool,
        catalog,
        models,
        WorkerMetrics::register(&mut registry),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    tokio::spawn(service.run(listener, tts_worker::CallAuth::default(), None, rx));
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Worker {
        client: WorkerClient::new(channel.clone()),
        channel,
        _shutdown: shutdown,
    }
}

/// A started session with its Synthesize stream open and one chunk sent.
struct Session {
    requests: mpsc::UnboundedSender<SynthesizeRequest>,
    responses: tonic::Streaming<SynthesizeResponse>,
}

fn chunk(session: &str, chunk_id: u64, text: &str) -> SynthesizeRequest {
    SynthesizeRequest {
        session_id: session.into(),
        utterance_id: 1,
        chunk_id,
        voice: VOICE.into(),
        text: text.into(),
        first: chunk_id == 1,
        trace_context: Default::default(),
        speed: 1.0,
    }
}

async fn open(worker: &mut Worker, id: &str) -> Session {
    worker
        .client
        .start_session(StartSessionRequest {
            session_id: id.into(),
            voice: VOICE.into(),
        })
        .await
        .unwrap();
    let (requests, inbox) = mpsc::unbounded_channel();
    requests.send(chunk(id, 1, SENTENCE)).unwrap();
    let responses = worker
        .client
        .synthesize(UnboundedReceiverStream::new(inbox))
        .await
        .unwrap()
        .into_inner();
    Session { requests, responses }
}

/// Reads one chunk to its end: (samples, how it ended).
async fn read_chunk(session: &mut Session) -> (usize, &'static str) {
    let mut samples = 0;
    loop {
        let message = timeout(Duration::from_secs(10), session.responses.message())
            .await
            .expect("the worker answers")
            .unwrap()
            .unwrap();
        match message.event.unwrap() {
            Event::Started(_) => {}
            Event::Audio(piece) => {
                assert_eq!(piece.sample_rate, 48_000);
                assert!(
                    !piece.pcm.is_empty() && piece.pcm.len() % 2 == 0,
                    "pieces are whole samples"
                );
                samples += piece.pcm.len() / 2;
            }
            Event::Finished(finished) => {
                assert!((finished.audio_seconds - samples as f64 / 48_000.0).abs() < 0.01);
                return (samples, "finished");
            }
            Event::Failed(_) => return (samples, "failed"),
            Event::Cancelled(_) => return (samples, "cancelled"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_session_holds_its_chunks_while_another_streams_and_stop_touches_only_its_own() {
    let mut worker = worker().await;
    let mut a = open(&mut worker, "a").await;
    let (first, end) = read_chunk(&mut a).await;
    assert_eq!(end, "finished");
    assert!(
        first > 48_000,
        "a sentence is more than a second of audio: {first} samples"
    );

    let pause = ControlRequest {
        session_id: "a".into(),
        command: Command::Pause as i32,
    };
    worker.client.control(pause).await.unwrap();
    a.requests.send(chunk("a", 2, SENTENCE)).unwrap();

    // Session b on the same worker streams at once while a's chunk is held.
    let started = Instant::now();
    let mut b = open(&mut worker, "b").await;
    let (samples, end) = read_chunk(&mut b).await;
    assert_eq!(end, "finished");
    assert!(samples > 48_000);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "b was not held behind a"
    );
    let held = timeout(Duration::from_millis(300), a.responses.message()).await;
    assert!(held.is_err(), "a paused session's chunk waits: {held:?}");

    // STOP on b cancels only b's work; a, resumed, gets its held chunk whole.
    b.requests.send(chunk("b", 2, SENTENCE)).unwrap();
    let stop = ControlRequest {
        session_id: "b".into(),
        command: Command::Stop as i32,
    };
    worker.client.control(stop).await.unwrap();
    let resume = ControlRequest {
        session_id: "a".into(),
        command: Command::Resume as i32,
    };
    worker.client.control(resume).await.unwrap();
    let (resumed, end) = read_chunk(&mut a).await;
    assert_eq!(end, "finished");
    assert!(
        resumed > 48_000,
        "the held chunk is synthesised whole after RESUME"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_statuses_that_name_the_problem() {
    let mut worker = worker().await;
    let unknown = worker
        .client
        .start_session(StartSessionRequest {
            session_id: "x".into(),
            voice: "klingon".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("klingon"), "{}", unknown.message());

    let missing = worker
        .client
        .start_session(StartSessionRequest {
            session_id: String::new(),
            voice: VOICE.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("session_id"));

    let no_session = worker
        .client
        .control(ControlRequest {
            session_id: "nobody".into(),
            command: Command::Pause as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(
        no_session.code(),
        Code::NotFound,
        "a control for an unknown session is not a success"
    );

    let _session = open(&mut worker, "s").await;
    let unspecified = worker
        .client
        .control(ControlRequest {
            session_id: "s".into(),
            command: Command::Unspecified as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(
        unspecified.code(),
        Code::InvalidArgument,
        "the proto3 default never means PAUSE"
    );

    let _second = open(&mut worker, "t").await;
    let full = worker
        .client
        .start_session(StartSessionRequest {
            session_id: "u".into(),
            voice: VOICE.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);

    let in_use = worker
        .client
        .unload_model(UnloadModelRequest { voice: VOICE.into() })
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition, "a voice in use stays");
    let ended = worker
        .client
        .end_session(EndSessionRequest {
            session_id: "t".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ended.existed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voices_load_and_unload_through_the_rpcs_and_health_follows_the_default_voice() {
    let mut worker = worker().await;
    let loaded = worker
        .client
        .load_model(LoadModelRequest {
            voice: "espeak-de".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!loaded.already_resident && loaded.load_seconds > 0.0);
    let again = worker
        .client
        .load_model(LoadModelRequest {
            voice: "espeak-de".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_resident);
    let models = worker
        .client
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let german = models.iter().find(|m| m.voice == "espeak-de").unwrap();
    assert!(german.resident && german.in_use == 0);
    worker
        .client
        .unload_model(UnloadModelRequest {
            voice: "espeak-de".into(),
        })
        .await
        .unwrap();
    let models = worker
        .client
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert!(!models.iter().find(|m| m.voice == "espeak-de").unwrap().resident);

    let mut health = tonic_health::pb::health_client::HealthClient::new(worker.channel.clone());
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "tts.v1.Worker".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(Instant::now() < until, "health never reported SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
