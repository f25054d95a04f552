//! The worker's model admin routes under the admin port's access rule, over a real socket.

use std::future::Future;
use std::pin::Pin;

use tts_core::voices::{EngineKind, VoiceCatalog, VoiceInfo};
use tts_worker::models::{LoadFailure, LoadTimings, ModelManagerConfig, VoiceLoader};

use super::*;

/// Loads nothing, at once.
struct InstantLoader;

impl VoiceLoader for InstantLoader {
    fn load(
        &self,
        _voice: Arc<VoiceInfo>,
    ) -> Pin<Box<dyn Future<Output = Result<LoadTimings, LoadFailure>> + Send>> {
        Box::pin(async { Ok(LoadTimings::default()) })
    }

    fn unload(&self, _voice: &VoiceInfo) {}
}

/// Serves `model_admin` with `access` on 127.0.0.1 and returns its base URL.
async fn serve(access: AdminAccess) -> String {
    let voice = VoiceInfo {
        id: "v".into(),
        engine: EngineKind::Espeak,
        language: "en-us".into(),
        sample_rate: 22_050,
        model_path: None,
        espeak_voice: "en-us".into(),
    };
    let mut registry = Registry::default();
    let models = ModelManager::new(
        ModelManagerConfig::default(),
        Arc::new(VoiceCatalog::from_voices([voice])),
        Arc::new(InstantLoader),
        ModelMetrics::register(&mut registry),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let base = format!("http://{}", listener.local_addr().expect("has an address"));
    tokio::spawn(async move { axum::serve(listener, model_admin(models, access)).await });
    base
}

/// `method path` with an optional bearer token, on a blocking thread (the client is blocking).
async fn call(base: &str, method: &'static str, path: &'static str, bearer: Option<&'static str>) -> u16 {
    let base = base.to_owned();
    tokio::task::spawn_blocking(move || {
        let host = base.trim_start_matches("http://").to_owned();
        let mut stream = std::net::TcpStream::connect(&host).expect("connects");
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("writes");
        let mut reply = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut reply);
        reply
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    })
    .await
    .expect("the client thread ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_unload_off_loopback_need_the_admin_token() {
    let open = serve(AdminAccess::new(None, false)).await;
    assert_eq!(call(&open, "POST", "/admin/models/v/load", Some("x")).await, 403);
    assert_eq!(call(&open, "POST", "/admin/models/v/unload", None).await, 403);
    assert_eq!(
        call(&open, "GET", "/admin/models", None).await,
        200,
        "the list stays open"
    );

    let guarded = serve(AdminAccess::new(Some("adm1n".into()), false)).await;
    for route in ["/admin/models/v/load", "/admin/models/v/unload"] {
        assert_eq!(call(&guarded, "POST", route, None).await, 401, "{route}");
        assert_eq!(call(&guarded, "POST", route, Some("adm1")).await, 401, "{route}");
    }
    assert_eq!(
        call(&guarded, "POST", "/admin/models/v/load", Some("adm1n")).await,
        200
    );
    assert_eq!(
        call(&guarded, "POST", "/admin/models/v/unload", Some("adm1n")).await,
        200
    );

    let local = serve(AdminAccess::new(None, true)).await;
    assert_eq!(call(&local, "POST", "/admin/models/v/load", None).await, 200);
}
