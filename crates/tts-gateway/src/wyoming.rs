//! The Wyoming protocol server (`docs/wyoming.md`): what Home Assistant speaks to Piper, served from the
//! same voices, synthesizer, limits and metrics as the WebSocket API.
//!
//! `describe` → `info` (one `tts` program listing every installed voice); `synthesize` → `audio-start`,
//! `audio-chunk`s as the engine makes them, `audio-stop`; the streaming `synthesize-start` /
//! `synthesize-chunk` / `synthesize-stop` events → audio per chunk of text as soon as it is complete, then
//! `synthesize-stopped`. Audio is 16-bit mono at the voice's native rate, as wyoming-piper sends it.
//!
//! Each connection is a reader task (framing, limits) and a task that serves its events; a framing error
//! ends that connection with an `error` event.

mod codec;
mod connection;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tts_core::voices::{EngineKind, VoiceInfo};

use crate::{Gateway, GatewayState};

/// Serves Wyoming on `listener` until `shutdown` resolves. Open connections end when the gateway's
/// shutdown flag flips (their current synthesis is cut short).
pub async fn run(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(error = %error, "Cannot set TCP_NODELAY on a Wyoming connection.");
                }
                tracing::debug!(peer = %peer, "Wyoming connection accepted.");
                tokio::spawn(connection::serve(stream, gateway.state.clone()));
            }
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %error, "Cannot accept a Wyoming connection.");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The `info` event's data: one TTS program whose voices are the installed voices.
fn info(state: &GatewayState) -> Value {
    let voices: Vec<Value> = state.catalog.iter().map(voice_info).collect();
    json!({
        "asr": [], "tts": [{
            "name": "ttsd",
            "description": "ttsd realtime streaming text-to-speech",
            "attribution": {"name": "ttsd", "url": ""},
            "installed": true,
            "version": env!("CARGO_PKG_VERSION"),
            "voices": voices,
            "supports_synthesize_streaming": true,
        }],
        "handle": [], "intent": [], "wake": [], "mic": [], "snd": [],
    })
}

fn voice_info(voice: &VoiceInfo) -> Value {
    let (engine, url) = match voice.engine {
        EngineKind::Piper => ("Piper", "https://github.com/rhasspy/piper"),
        EngineKind::Espeak => ("eSpeak NG", "https://github.com/espeak-ng/espeak-ng"),
    };
    json!({
        "name": voice.id,
        "description": format!("{} ({engine}, {} Hz)", voice.id, voice.sample_rate),
        "attribution": {"name": engine, "url": url},
        "installed": true,
        "version": null,
        "languages": [wyoming_language(&voice.language)],
        "speakers": null,
    })
}

/// `en-us` → `en_US`, the form wyoming-piper reports and Home Assistant matches on.
fn wyoming_language(language: &str) -> String {
    match language.split_once(['-', '_']) {
        Some((lang, region)) => format!("{}_{}", lang.to_ascii_lowercase(), region.to_ascii_uppercase()),
        None => language.to_ascii_lowercase(),
    }
}

/// The voice a `synthesize` event asks for: by name, else the first of its language, else the default.
fn pick_voice(state: &GatewayState, voice: Option<&Value>) -> Result<Arc<VoiceInfo>, String> {
    let name = voice.and_then(|v| v.get("name")).and_then(Value::as_str);
    let language = voice.and_then(|v| v.get("language")).and_then(Value::as_str);
    if let Some(name) = name {
        return state
            .catalog
            .get(name)
            .map(|v| Arc::new(v.clone()))
            .map_err(|unknown| unknown.to_string());
    }
    if let Some(language) = language {
        let wanted = wyoming_language(language);
        if wyoming_language(&state.default_voice.language) == wanted {
            return Ok(state.default_voice.clone());
        }
        if let Some(voice) = state
            .catalog
            .iter()
            .find(|v| wyoming_language(&v.language) == wanted)
        {
            return Ok(Arc::new(voice.clone()));
        }
        return Err(format!("no installed voice speaks {language:?}"));
    }
    Ok(state.default_voice.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_take_wyoming_pipers_form() {
        assert_eq!(wyoming_language("en-us"), "en_US");
        assert_eq!(wyoming_language("en_GB"), "en_GB");
        assert_eq!(wyoming_language("de"), "de");
    }
}
