//! The worker's request handling (`tts_worker::WorkerService`), with the real espeak-ng engine.
//!
//! The input is a script of calls, each `[op][length u16 LE][bytes]`: the bytes are a protobuf request
//! message for the unary RPCs (StartSession, EndSession, Control, LoadModel, UnloadModel, ListModels,
//! GetCapabilities), decoded with prost as tonic would, or, for Synthesize, the raw gRPC request body
//! (length-prefixed frames) decoded by tonic's own stream decoder. After the script every session is
//! ended. Invariants: no panic; every gRPC status and every chunk failure message is bounded by a
//! constant plus the input's length (no amplification); responses only name chunks that were sent;
//! every Synthesize response stream ends once the sessions are gone; no session outlives the script.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use prometheus_client::registry::Registry;
use prost::Message;
use tonic::codec::{Codec, Streaming};
use tonic::{Request, Status};
use tts_core::engine::EngineSettings;
use tts_core::pool::{Pool, PoolConfig};
use tts_core::voices::VoiceCatalog;
use tts_proto::v1::synthesize_response::Event;
use tts_proto::v1::worker_server::Worker;
use tts_proto::v1::{
    ControlRequest, EndSessionRequest, GetCapabilitiesRequest, ListModelsRequest, LoadModelRequest,
    StartSessionRequest, SynthesizeRequest, SynthesizeResponse, UnloadModelRequest,
};
use tts_worker::models::{LoadReason, ModelManager, ModelManagerConfig, ModelMetrics, PoolLoader};
use tts_worker::{WorkerMetrics, WorkerService, WorkerSettings};

const VOICE: &str = "espeak-en-us";
/// Calls in one input at most.
const MAX_CALLS: usize = 32;
/// How long a Synthesize response stream may stay open once its session has ended.
const STREAM_END_DEADLINE: Duration = Duration::from_secs(8);

struct Harness {
    runtime: tokio::runtime::Runtime,
    service: WorkerService,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let service = runtime.block_on(service());
        Harness { runtime, service }
    })
}

async fn service() -> WorkerService {
    let catalog = Arc::new(VoiceCatalog::discover(std::path::Path::new("/nonexistent")).expect("voices"));
    let pool = Arc::new(
        Pool::start(PoolConfig {
            threads: 1,
            queue_capacity: 64,
            engine: EngineSettings {
                onnx_intra_threads: 1,
                onnx_quiet_intra_threads: 1,
                piper_noise: None,
            },
        })
        .expect("the engine pool"),
    );
    let mut registry = Registry::default();
    let models = ModelManager::new(
        ModelManagerConfig::default(),
        catalog.clone(),
        Arc::new(PoolLoader::new(pool.clone())),
        ModelMetrics::register(&mut registry),
    );
    models
        .load(VOICE, LoadReason::Startup)
        .await
        .expect("the espeak voice loads");
    WorkerService::new(
        WorkerSettings {
            name: "fuzz".into(),
            max_sessions: 4,
            default_voice: VOICE.into(),
        },
        pool,
        catalog,
        models,
        WorkerMetrics::register(&mut registry),
    )
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    harness.runtime.block_on(run_script(&harness.service, data));
});

async fn run_script(service: &WorkerService, mut data: &[u8]) {
    let bound = 512 + 2 * data.len();
    // Chunk ids sent on any stream: a session's new stream takes over the old one's audio.
    let mut sent = HashSet::new();
    let mut streams = Vec::new();
    for _ in 0..MAX_CALLS {
        let [op, lo, hi, rest @ ..] = data else {
            break;
        };
        let length = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (bytes, rest) = rest.split_at(length);
        data = rest;
        if let Err(status) = call(service, *op, bytes, &mut sent, &mut streams).await {
            check_status(&status, bound);
        }
    }
    service.end_all_sessions();
    for mut stream in streams {
        let end = tokio::time::timeout(STREAM_END_DEADLINE, async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(response) => check_response(&response, &sent, bound),
                    Err(status) => check_status(&status, bound),
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "a Synthesize stream stayed open after its session ended"
        );
    }
    assert_eq!(service.active_sessions(), 0, "every session ended");
}

type ResponseStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<SynthesizeResponse, Status>> + Send>>;

async fn call(
    service: &WorkerService,
    op: u8,
    bytes: &[u8],
    sent: &mut HashSet<u64>,
    streams: &mut Vec<ResponseStream>,
) -> Result<(), Status> {
    let decode = |e: prost::DecodeError| Status::internal(format!("decode: {e}"));
    match op % 8 {
        0 => {
            let request = StartSessionRequest::decode(bytes).map_err(decode)?;
            service.start_session(Request::new(request)).await.map(drop)
        }
        1 => {
            let request = EndSessionRequest::decode(bytes).map_err(decode)?;
            service.end_session(Request::new(request)).await.map(drop)
        }
        2 => {
            let request = ControlRequest::decode(bytes).map_err(decode)?;
            service.control(Request::new(request)).await.map(drop)
        }
        3 => {
            let request = LoadModelRequest::decode(bytes).map_err(decode)?;
            service.load_model(Request::new(request)).await.map(drop)
        }
        4 => {
            let request = UnloadModelRequest::decode(bytes).map_err(decode)?;
            service.unload_model(Request::new(request)).await.map(drop)
        }
        5 => {
            ListModelsRequest::decode(bytes).map_err(decode)?;
            let models = service.list_models(Request::new(ListModelsRequest {})).await?;
            assert!(models.into_inner().models.iter().any(|m| m.voice == VOICE));
            Ok(())
        }
        6 => {
            GetCapabilitiesRequest::decode(bytes).map_err(decode)?;
            let caps = service
                .get_capabilities(Request::new(GetCapabilitiesRequest {}))
                .await?
                .into_inner();
            assert!(caps.active_sessions <= caps.max_concurrent_sessions);
            Ok(())
        }
        _ => synthesize(service, bytes, sent, streams).await,
    }
}

/// Synthesize with `body` as the request's gRPC body: what tonic's decoder makes of it is what the
/// service gets.
async fn synthesize(
    service: &WorkerService,
    body: &[u8],
    sent: &mut HashSet<u64>,
    streams: &mut Vec<ResponseStream>,
) -> Result<(), Status> {
    sent.extend(chunk_ids(body));
    let mut codec = tonic_prost::ProstCodec::<SynthesizeResponse, SynthesizeRequest>::default();
    let inbound = Streaming::new_request(
        codec.decoder(),
        http_body_util::Full::new(Bytes::copy_from_slice(body)),
        None,
        Some(64 * 1024),
    );
    let response = service.synthesize(Request::new(inbound)).await?;
    streams.push(response.into_inner());
    Ok(())
}

/// The chunk ids of the well-formed frames at the start of a gRPC body.
fn chunk_ids(mut body: &[u8]) -> HashSet<u64> {
    let mut ids = HashSet::new();
    while let [0, a, b, c, d, rest @ ..] = body {
        let length = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        if length > rest.len() {
            break;
        }
        let (message, rest) = rest.split_at(length);
        match SynthesizeRequest::decode(message) {
            Ok(request) => ids.insert(request.chunk_id),
            Err(_) => break,
        };
        body = rest;
    }
    ids
}

fn check_status(status: &Status, bound: usize) {
    assert!(
        status.message().len() <= bound,
        "a {}-byte status for a {}-byte input: {:?}",
        status.message().len(),
        bound,
        status.code()
    );
}

fn check_response(response: &SynthesizeResponse, sent: &HashSet<u64>, bound: usize) {
    assert!(
        sent.contains(&response.chunk_id),
        "a response for chunk {}, which was never sent",
        response.chunk_id
    );
    if let Some(Event::Failed(failed)) = &response.event {
        assert!(
            failed.message.len() <= bound,
            "a {}-byte chunk failure",
            failed.message.len()
        );
    }
}
