//! Every reason a WebSocket session answers with an `error` message, and the one place each becomes an
//! [`ErrorCode`]. Code elsewhere names what went wrong (a [`SessionError`] variant); it never picks a code.

use tts_core::engine::EngineError;
use tts_core::pool::SubmitError;
use tts_core::voices::UnknownVoice;

use super::{Command, ErrorCode};

/// What went wrong, as the client is told: `Display` is the `message`, [`SessionError::code`] the `code`.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The message is not one of the protocol's (bad JSON, missing or wrong-typed fields, unknown type).
    #[error("{0}")]
    Malformed(String),
    #[error("binary messages are not accepted from clients; send JSON text messages")]
    BinaryMessage,
    #[error("message is {bytes} bytes; the limit is {limit} bytes per message")]
    MessageTooLarge { bytes: usize, limit: usize },
    #[error("text has {chars} characters; the limit is {limit} per message")]
    TextTooLong { chars: usize, limit: usize },
    #[error("the session already has {pending} characters waiting; the limit is {limit}")]
    TooManyCharacters { pending: usize, limit: usize },
    #[error("the session already has {limit} utterances waiting or playing; the limit is {limit}")]
    TooManyUtterances { limit: usize },
    #[error("text is empty")]
    EmptyText,
    #[error("the voice can change only between utterances (after a final text)")]
    VoiceChangeMidUtterance,
    #[error(transparent)]
    UnknownVoice(#[from] UnknownVoice),
    #[error("{} received while nothing is playing or queued", .0.as_str())]
    NothingPlaying(Command),
    #[error("RESUME received while not paused")]
    NotPaused,
    #[error("too many invalid or ill-timed messages; closing the session")]
    TooManyErrors,
    /// Draining: utterances already open finish, no new one starts.
    #[error("the server is shutting down: utterances already open finish, no new one starts")]
    NoNewUtterance,
    /// Draining: the session is refused before `session_start`.
    #[error("the server is shutting down; connect again to reach another instance")]
    ShuttingDown,
    #[error("the server is at its limit of {0} concurrent sessions")]
    AtSessionLimit(usize),
    /// Admission on measured engine headroom refused the session.
    #[error("the server's engines have no headroom for another session; try again later or elsewhere")]
    NoEngineHeadroom,
    /// The pool did not take a chunk.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// An engine (or the remote worker running it) failed a chunk.
    #[error("{}", synthesis_message(.voice, .error))]
    Synthesis { voice: String, error: EngineError },
}

impl SessionError {
    /// The code sent with this error: the only place a session's errors are mapped to codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::Malformed(_)
            | SessionError::BinaryMessage
            | SessionError::EmptyText
            | SessionError::VoiceChangeMidUtterance
            | SessionError::NothingPlaying(_)
            | SessionError::NotPaused
            | SessionError::TooManyErrors => ErrorCode::InvalidMessage,
            SessionError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            SessionError::TextTooLong { .. }
            | SessionError::TooManyCharacters { .. }
            | SessionError::TooManyUtterances { .. } => ErrorCode::TextTooLong,
            SessionError::UnknownVoice(_) => ErrorCode::UnknownVoice,
            SessionError::NoNewUtterance
            | SessionError::ShuttingDown
            | SessionError::AtSessionLimit(_)
            | SessionError::NoEngineHeadroom
            | SessionError::Submit(SubmitError::QueueFull(_))
            | SessionError::Submit(SubmitError::VoicesInUse(_)) => ErrorCode::Overloaded,
            SessionError::Submit(SubmitError::ShutDown) => ErrorCode::InternalError,
            SessionError::Synthesis {
                error: EngineError::WorkerUnavailable(_),
                ..
            } => ErrorCode::WorkerUnavailable,
            SessionError::Synthesis { .. } => ErrorCode::SynthesisFailed,
        }
    }
}

impl From<&SessionError> for ErrorCode {
    fn from(error: &SessionError) -> Self {
        error.code()
    }
}

fn synthesis_message(voice: &str, error: &EngineError) -> String {
    match error {
        // Says it all: no voice to blame.
        EngineError::WorkerUnavailable(_) => error.to_string(),
        _ => format!("synthesis failed for voice {voice}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant with the code a client gets for it.
    fn every_variant() -> Vec<(SessionError, ErrorCode)> {
        let unknown = UnknownVoice {
            requested: "nope".to_owned(),
            available: vec!["espeak-en-us".to_owned()],
        };
        let engine = |error: EngineError| SessionError::Synthesis {
            voice: "espeak-en-us".to_owned(),
            error,
        };
        vec![
            (SessionError::Malformed("x".to_owned()), ErrorCode::InvalidMessage),
            (SessionError::BinaryMessage, ErrorCode::InvalidMessage),
            (
                SessionError::MessageTooLarge { bytes: 2, limit: 1 },
                ErrorCode::MessageTooLarge,
            ),
            (
                SessionError::TextTooLong { chars: 2, limit: 1 },
                ErrorCode::TextTooLong,
            ),
            (
                SessionError::TooManyCharacters { pending: 2, limit: 1 },
                ErrorCode::TextTooLong,
            ),
            (
                SessionError::TooManyUtterances { limit: 1 },
                ErrorCode::TextTooLong,
            ),
            (SessionError::EmptyText, ErrorCode::InvalidMessage),
            (SessionError::VoiceChangeMidUtterance, ErrorCode::InvalidMessage),
            (SessionError::UnknownVoice(unknown), ErrorCode::UnknownVoice),
            (
                SessionError::NothingPlaying(Command::Stop),
                ErrorCode::InvalidMessage,
            ),
            (SessionError::NotPaused, ErrorCode::InvalidMessage),
            (SessionError::TooManyErrors, ErrorCode::InvalidMessage),
            (SessionError::NoNewUtterance, ErrorCode::Overloaded),
            (SessionError::ShuttingDown, ErrorCode::Overloaded),
            (SessionError::AtSessionLimit(16), ErrorCode::Overloaded),
            (SessionError::NoEngineHeadroom, ErrorCode::Overloaded),
            (
                SessionError::Submit(SubmitError::QueueFull(64)),
                ErrorCode::Overloaded,
            ),
            (
                SessionError::Submit(SubmitError::VoicesInUse(2)),
                ErrorCode::Overloaded,
            ),
            (
                SessionError::Submit(SubmitError::ShutDown),
                ErrorCode::InternalError,
            ),
            (
                engine(EngineError::WorkerUnavailable("all down".to_owned())),
                ErrorCode::WorkerUnavailable,
            ),
            (engine(EngineError::Cancelled), ErrorCode::SynthesisFailed),
            (
                engine(EngineError::Espeak("bad".to_owned())),
                ErrorCode::SynthesisFailed,
            ),
            (
                engine(EngineError::OnnxRuntime("missing".to_owned())),
                ErrorCode::SynthesisFailed,
            ),
            (
                engine(EngineError::Load {
                    voice: "v".to_owned(),
                    path: "/x".into(),
                    reason: "r".to_owned(),
                }),
                ErrorCode::SynthesisFailed,
            ),
            (
                engine(EngineError::Inference {
                    voice: "v".to_owned(),
                    reason: "r".to_owned(),
                }),
                ErrorCode::SynthesisFailed,
            ),
            (
                engine(EngineError::Panicked {
                    voice: "v".to_owned(),
                    message: "m".to_owned(),
                }),
                ErrorCode::SynthesisFailed,
            ),
        ]
    }

    #[test]
    fn every_error_maps_to_its_code() {
        for (error, code) in every_variant() {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(ErrorCode::from(&error), code);
            assert!(!error.to_string().is_empty(), "{error:?} has a message");
        }
    }

    #[test]
    fn every_code_is_reachable() {
        let reached: Vec<ErrorCode> = every_variant().into_iter().map(|(_, code)| code).collect();
        for code in ErrorCode::ALL {
            assert!(reached.contains(&code), "{code:?} is never sent");
        }
    }

    #[test]
    fn messages_are_the_sentences_clients_already_read() {
        assert_eq!(
            SessionError::TooManyUtterances { limit: 3 }.to_string(),
            "the session already has 3 utterances waiting or playing; the limit is 3"
        );
        assert_eq!(
            SessionError::NothingPlaying(Command::Pause).to_string(),
            "PAUSE received while nothing is playing or queued"
        );
        let failed = SessionError::Synthesis {
            voice: "espeak-en-us".to_owned(),
            error: EngineError::Espeak("boom".to_owned()),
        };
        assert_eq!(
            failed.to_string(),
            "synthesis failed for voice espeak-en-us: espeak-ng failed: boom"
        );
    }
}
