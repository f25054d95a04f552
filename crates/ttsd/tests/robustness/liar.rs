//! A gRPC worker that lies: it passes its health checks and claims room and a resident voice, then
//! reports timings no chunk can have, or answers for chunks nobody asked about. A fake on purpose: a real
//! worker never does this, and the gateway must survive it when a broken or hostile one does.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tts_proto::v1::synthesize_response::Event as Reply;
use tts_proto::v1::worker_server::{SERVICE_NAME, Worker, WorkerServer};
use tts_proto::v1::{
    AudioPiece, ChunkFinished, ChunkStarted, ControlRequest, ControlResponse, EndSessionRequest,
    EndSessionResponse, GetCapabilitiesRequest, GetCapabilitiesResponse, ListModelsRequest,
    ListModelsResponse, LoadModelRequest, LoadModelResponse, StartSessionRequest, StartSessionResponse,
    SynthesizeRequest, SynthesizeResponse, UnloadModelRequest, UnloadModelResponse,
};
use tts_test_support::{Event, ServerProcess, StreamClient};

use crate::common::{ESPEAK, WAIT, read_utterance, root, temp_path};
use crate::harness::{self, Stand};

/// The voice the liar claims to hold, so that routing prefers it for sessions that ask for it.
const LIED_VOICE: &str = "espeak-en-gb";

/// How the liar answers a chunk, chosen by a word in the chunk's text.
fn lies(request: &SynthesizeRequest) -> Vec<SynthesizeResponse> {
    let reply = |event| SynthesizeResponse {
        chunk_id: request.chunk_id,
        event: Some(event),
    };
    let finished = |engine_seconds: f64, audio_seconds: f64| ChunkFinished {
        queue_wait_seconds: 0.0,
        engine_first_pcm_seconds: Some(0.01),
        engine_seconds,
        audio_seconds,
        worker_first_audio_seconds: Some(0.01),
    };
    // A tenth of a second of a quiet tone at espeak-ng's rate, for the lies that send audio first.
    let tone: Vec<u8> = (0..2205)
        .flat_map(|i| (((i % 50) as i16 - 25) * 40).to_le_bytes())
        .collect();
    let text = request.text.to_lowercase();
    if text.contains("nan") {
        vec![reply(Reply::Started(ChunkStarted {
            queue_wait_seconds: f64::NAN,
        }))]
    } else if text.contains("infinite") {
        vec![
            reply(Reply::Started(ChunkStarted {
                queue_wait_seconds: 0.0,
            })),
            reply(Reply::Audio(AudioPiece {
                pcm: tone.clone(),
                sample_rate: 22_050,
            })),
            reply(Reply::Finished(finished(f64::INFINITY, 0.1))),
        ]
    } else if text.contains("negative") {
        vec![
            reply(Reply::Audio(AudioPiece {
                pcm: vec![1, 2, 3],
                sample_rate: 0,
            })),
            reply(Reply::Finished(finished(0.1, -1.0))),
        ]
    } else if text.contains("absurd") {
        vec![reply(Reply::Finished(finished(1e300, 1e300)))]
    } else {
        // Answers for a chunk that does not exist: ignored, so the real chunk stalls.
        let mut wrong = reply(Reply::Finished(finished(0.1, 0.1)));
        wrong.chunk_id += 1_000;
        vec![wrong]
    }
}

struct Liar;

type Replies = Pin<Box<dyn Stream<Item = Result<SynthesizeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for Liar {
    async fn start_session(
        &self,
        _: Request<StartSessionRequest>,
    ) -> Result<Response<StartSessionResponse>, Status> {
        Ok(Response::new(StartSessionResponse {
            loaded: true,
            load_seconds: f64::NAN,
        }))
    }

    async fn end_session(
        &self,
        _: Request<EndSessionRequest>,
    ) -> Result<Response<EndSessionResponse>, Status> {
        Ok(Response::new(EndSessionResponse { existed: true }))
    }

    type SynthesizeStream = Replies;

    async fn synthesize(
        &self,
        request: Request<Streaming<SynthesizeRequest>>,
    ) -> Result<Response<Replies>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(request)) = requests.next().await {
                for reply in lies(&request) {
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn control(&self, _: Request<ControlRequest>) -> Result<Response<ControlResponse>, Status> {
        Ok(Response::new(ControlResponse {
            cancelled_chunks: u32::MAX,
        }))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse::default()))
    }

    async fn load_model(&self, _: Request<LoadModelRequest>) -> Result<Response<LoadModelResponse>, Status> {
        Err(Status::unimplemented("a liar loads nothing"))
    }

    async fn unload_model(
        &self,
        _: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        Err(Status::unimplemented("a liar unloads nothing"))
    }

    async fn get_capabilities(
        &self,
        _: Request<GetCapabilitiesRequest>,
    ) -> Result<Response<GetCapabilitiesResponse>, Status> {
        Ok(Response::new(GetCapabilitiesResponse {
            worker: "liar".into(),
            engines: vec!["espeak".into()],
            voices: vec![LIED_VOICE.into()],
            resident_voices: vec![LIED_VOICE.into()],
            // Nearly full: a session for a voice the liar does not claim goes to the honest worker.
            max_concurrent_sessions: 1_000,
            active_sessions: 999,
            engine_threads: 64,
            sample_rate: 0,
            ready: true,
            ..Default::default()
        }))
    }
}

/// Serves the liar (and a health service that says it is serving) on a loopback port.
async fn serve_liar() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in ["", SERVICE_NAME] {
        reporter
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(WorkerServer::new(Liar))
            .serve_with_incoming(incoming)
            .await;
        drop(reporter);
    });
    address
}

/// One utterance on a new session with the liar's voice; returns the error codes and the end reason.
async fn lied_to(stand: &Stand, text: &str) -> (Vec<String>, String, usize) {
    let url = stand.server.url(&format!("/v1/stream?voice={LIED_VOICE}"));
    let mut client = StreamClient::connect(&url).await.unwrap();
    let _ = client.next(WAIT).await.unwrap();
    client.send_text(text, true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    let codes = utterance
        .others
        .iter()
        .filter_map(|r| match &r.event {
            Event::Error { code, .. } => Some(code.clone()),
            _ => None,
        })
        .collect();
    let Some(Event::UtteranceEnd { reason, .. }) = utterance.end else {
        panic!("{text}: {:?}", utterance.end)
    };
    client.close().await;
    (codes, reason, utterance.frames.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_reports_impossible_values_fails_only_its_chunks() {
    let turn = harness::turn().await;
    let config = temp_path("robustness-liar.toml");
    std::fs::write(
        &config,
        "[workers]\nhealth_interval_seconds = 0.2\nstall_timeout_seconds = 3.0\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let honest = ServerProcess::start_worker(
        env!("CARGO_BIN_EXE_ttsd"),
        &root(),
        &["--name", "honest", "--voice", ESPEAK, "--config", &config],
    )
    .unwrap();
    harness::prioritise(honest.pid());
    let liar = serve_liar().await;
    let workers = format!("{},{liar}", honest.grpc_addr);
    let stand = Stand::on(turn, || {
        crate::common::start(&["--voice", ESPEAK, "--workers", &workers, "--config", &config])
    });
    let until = Instant::now() + WAIT;
    while stand.scrape().sum("tts_worker_sessions_max", &[]) < 1_064.0 {
        assert!(Instant::now() < until, "both workers up with their capabilities");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::until_speaking(&stand.server, ESPEAK).await;
    let before = stand.scrape();
    stand
        .attack("a worker that lies", async {
            for lie in [
                "A NaN queue wait.",
                "An infinite engine time.",
                "A negative audio length.",
                "An absurd duration.",
            ] {
                let (codes, reason, frames) = lied_to(&stand, lie).await;
                eprintln!("{lie}: {codes:?}, {reason}, {frames} frames");
                assert_eq!(codes, ["SYNTHESIS_FAILED"], "{lie}");
                assert_eq!(reason, "failed", "{lie}");
            }
            // Answers for the wrong chunk: ignored; the real chunk stalls and moves to the honest worker.
            let (codes, reason, frames) = lied_to(&stand, "Answers for another chunk.").await;
            eprintln!("wrong chunk: {codes:?}, {reason}, {frames} frames");
            assert!(codes.is_empty(), "{codes:?}");
            assert_eq!(reason, "completed");
            assert!(frames > 10, "{frames} frames");
        })
        .await;
    let after = stand.scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        delta("tts_errors_sent_total", &[("code", "SYNTHESIS_FAILED")]),
        4.0
    );
    assert_eq!(
        delta("tts_worker_failovers_total", &[("reason", "deadline")]),
        1.0,
        "the stalled chunk, and nothing else, moved"
    );
    let warned = stand.log_lines(&["A worker sent an invalid value; the chunk fails."]);
    assert_eq!(warned.len(), 4, "one WARN per lie: {warned:?}");
}
