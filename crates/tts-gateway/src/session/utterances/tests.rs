use tts_core::audio::FRAME_SAMPLES;
use tts_core::voices::EngineKind;

use super::*;

fn voice(id: &str) -> Arc<VoiceInfo> {
    Arc::new(VoiceInfo {
        id: id.to_owned(),
        engine: EngineKind::Espeak,
        language: "en-us".to_owned(),
        sample_rate: 22_050,
        model_path: None,
        espeak_voice: "en-us".to_owned(),
    })
}

fn chunk(text: &str, first: bool) -> Chunk {
    Chunk {
        text: text.to_owned(),
        first,
    }
}

/// An utterance with these chunks (the first marked first), complete.
fn push_final(queue: &mut Utterances, generation: u64, texts: &[&str]) -> u64 {
    let id = queue.push(generation, voice("a"), &tracing::Span::none());
    let chunks = texts.iter().enumerate().map(|(i, t)| chunk(t, i == 0)).collect();
    queue.add_text(chunks, true, Instant::now());
    id
}

/// Takes the next chunk and marks it submitted, as the driver does when the pool accepts it.
fn submit(queue: &mut Utterances) -> Option<(u64, u64, String)> {
    let next = queue.next_chunk(Instant::now())?;
    queue.submitted(&next);
    Some((next.utterance_id, next.generation, next.chunk.text))
}

/// Runs the chunk at the pool to its end with `frames` whole frames of audio.
fn synthesise(queue: &mut Utterances, id: u64, generation: u64, frames: usize) {
    let now = Instant::now();
    assert!(queue.started(id, generation, now).is_some());
    queue.audio(id, generation, &vec![1; frames * FRAME_SAMPLES], now);
    assert!(queue.finished(id, generation, now).is_some());
}

#[test]
fn chunks_are_submitted_in_order_one_at_a_time() {
    let mut queue = Utterances::new();
    let a = push_final(&mut queue, 0, &["one", "two"]);
    let b = push_final(&mut queue, 0, &["three"]);
    assert_eq!(submit(&mut queue), Some((a, 0, "one".to_owned())));
    assert!(
        queue.next_chunk(Instant::now()).is_none(),
        "one chunk at the pool at a time"
    );
    synthesise(&mut queue, a, 0, 1);
    assert_eq!(submit(&mut queue), Some((a, 0, "two".to_owned())));
    synthesise(&mut queue, a, 0, 1);
    assert_eq!(submit(&mut queue), Some((b, 0, "three".to_owned())));
    synthesise(&mut queue, b, 0, 1);
    assert!(submit(&mut queue).is_none());
    // Utterances leave in order, each once its frames are sent.
    assert!(queue.pop_finished().is_none(), "a's frames are not sent yet");
    assert!(queue.pop_frame().is_some() && queue.pop_frame().is_some());
    assert_eq!(queue.pop_finished().map(|u| (u.id, u.frames_sent)), Some((a, 2)));
    assert!(queue.pop_frame().is_some());
    assert_eq!(queue.pop_finished().map(|u| u.id), Some(b));
    assert!(queue.is_empty());
}

#[test]
fn an_open_utterance_waits_for_more_text_and_later_ones_wait_behind_it() {
    let mut queue = Utterances::new();
    let a = queue.push(0, voice("a"), &tracing::Span::none());
    queue.add_text(vec![chunk("Hello.", true)], false, Instant::now());
    assert!(queue.is_open());
    assert_eq!(submit(&mut queue).map(|s| s.0), Some(a));
    synthesise(&mut queue, a, 0, 1);
    assert!(submit(&mut queue).is_none(), "no more text yet");
    assert!(
        !queue.front().unwrap().synth_done,
        "not final: more text may come"
    );
    queue.add_text(vec![chunk("World.", false)], true, Instant::now());
    assert!(!queue.is_open());
    assert_eq!(submit(&mut queue).map(|s| s.2), Some("World.".to_owned()));
    let b = push_final(&mut queue, 0, &["Next."]);
    synthesise(&mut queue, a, 0, 1);
    assert!(queue.front().unwrap().synth_done);
    assert_eq!(submit(&mut queue).map(|s| s.0), Some(b));
}

#[test]
fn pending_chars_and_buffered_frames_follow_chunks_and_frames() {
    let mut queue = Utterances::new();
    let a = push_final(&mut queue, 0, &["héllo", "abc"]);
    assert_eq!(queue.pending_chars, 8, "characters, not bytes");
    assert_eq!(submit(&mut queue).map(|s| s.0), Some(a));
    assert_eq!(queue.pending_chars, 3);
    let now = Instant::now();
    queue.started(a, 0, now);
    queue.audio(a, 0, &vec![1; FRAME_SAMPLES * 2 + 10], now);
    assert_eq!(
        queue.buffered_frames(),
        2,
        "the 10 extra samples wait in the framer"
    );
    queue.finished(a, 0, now);
    submit(&mut queue);
    assert_eq!(queue.pending_chars, 0);
    queue.started(a, 0, now);
    queue.finished(a, 0, now);
    assert_eq!(
        queue.buffered_frames(),
        3,
        "the framer's padded last frame is flushed at the end"
    );
    assert!(queue.pop_frame().is_some());
    assert_eq!(queue.buffered_frames(), 2);
    let stopped = queue.stop();
    assert_eq!(stopped.frames, 2);
    assert_eq!((queue.pending_chars, queue.buffered_frames()), (0, 0));
}

#[test]
fn a_failed_chunk_fails_its_utterance_and_drops_its_other_chunks() {
    let mut queue = Utterances::new();
    let a = push_final(&mut queue, 0, &["one", "two", "three"]);
    let b = push_final(&mut queue, 0, &["four"]);
    assert_eq!(submit(&mut queue).map(|s| s.0), Some(a));
    assert_eq!(queue.failed(a, 0).map(|v| v.id.clone()), Some("a".to_owned()));
    assert_eq!(queue.pending_chars, 4, "only b's chunk is left");
    let front = queue.pop_finished().expect("a ends at once: nothing to play");
    assert!(front.failed);
    assert_eq!(submit(&mut queue).map(|s| s.0), Some(b));
}

#[test]
fn a_refused_chunk_fails_its_utterance() {
    let mut queue = Utterances::new();
    let a = push_final(&mut queue, 0, &["one", "two"]);
    let next = queue.next_chunk(Instant::now()).unwrap();
    queue.submitted(&next);
    queue.refused(next.utterance_id, next.generation);
    assert!(!queue.has_in_flight());
    assert_eq!(queue.pending_chars, 0);
    let front = queue.pop_finished().unwrap();
    assert!(front.id == a && front.failed);
}

#[test]
fn stop_takes_queued_and_playing_utterances_and_counts_a_chunk_cancelled_only_if_started() {
    let mut queue = Utterances::new();
    let a = push_final(&mut queue, 0, &["one", "two"]);
    push_final(&mut queue, 0, &["three"]);
    submit(&mut queue);
    let stopped = queue.stop();
    assert_eq!(
        stopped.utterances.iter().map(|u| u.id).collect::<Vec<_>>(),
        [a, a + 1]
    );
    assert!(stopped.cancelled.is_none(), "no engine had taken the chunk");
    assert!(queue.is_empty() && !queue.has_in_flight());

    // After the STOP (a new generation), a new utterance; an engine takes its chunk, then STOP again.
    let c = push_final(&mut queue, 1, &["four"]);
    assert!(c > a + 1, "ids keep increasing");
    assert!(
        queue.started(a, 0, Instant::now()).is_none(),
        "events of stopped utterances are ignored"
    );
    assert_eq!(submit(&mut queue).map(|s| s.0), Some(c));
    queue.started(c, 1, Instant::now());
    let stopped = queue.stop();
    assert_eq!(stopped.cancelled.map(|v| v.id.clone()), Some("a".to_owned()));
    assert_eq!(stopped.utterances.len(), 1);
}

#[test]
fn take_cancelled_forgets_the_chunk_and_names_its_voice_once() {
    let mut queue = Utterances::new();
    let a = push_final(&mut queue, 0, &["one"]);
    submit(&mut queue);
    queue.started(a, 0, Instant::now());
    assert!(queue.take_cancelled().is_some());
    assert!(queue.take_cancelled().is_none(), "counted once");
}

#[test]
fn events_with_a_stale_generation_are_ignored() {
    let mut queue = Utterances::new();
    let a = push_final(&mut queue, 3, &["one"]);
    submit(&mut queue);
    assert!(queue.started(a, 2, Instant::now()).is_none());
    queue.audio(a, 2, &[1; FRAME_SAMPLES], Instant::now());
    assert_eq!(queue.buffered_frames(), 0);
    assert!(queue.finished(a, 2, Instant::now()).is_none());
    assert!(
        queue.has_in_flight(),
        "a stale Finished does not free the pool slot"
    );
}

#[test]
fn caps_refuse_characters_and_utterances_past_their_limits() {
    let caps = Caps {
        max_pending_chars: 10,
        max_queued_utterances: 2,
    };
    let mut queue = Utterances::new();
    assert!(queue.room_for(10, 0, &caps).is_ok());
    assert!(matches!(
        queue.room_for(11, 0, &caps),
        Err(SessionError::TooManyCharacters {
            pending: 0,
            limit: 10
        })
    ));
    push_final(&mut queue, 0, &["abcdef"]);
    assert!(
        matches!(
            queue.room_for(3, 2, &caps),
            Err(SessionError::TooManyCharacters {
                pending: 8,
                limit: 10
            })
        ),
        "characters still in the segmenter count too"
    );
    push_final(&mut queue, 0, &["x"]);
    assert!(matches!(
        queue.room_for(1, 0, &caps),
        Err(SessionError::TooManyUtterances { limit: 2 })
    ));
    // An open utterance takes more text whatever the utterance count.
    queue.push(0, voice("a"), &tracing::Span::none());
    assert!(queue.room_for(1, 0, &caps).is_ok());
}

/// The driver calls these on every frame, message and engine event: with 10,000 utterances queued, the
/// utterances they look at must stay proportional to the events, not to events × queue length.
#[test]
fn ten_thousand_queued_utterances_cost_constant_work_per_event() {
    const N: u64 = 10_000;
    let mut queue = Utterances::new();
    for _ in 0..N {
        push_final(&mut queue, 0, &["a"]);
    }
    let mut events = 0u64;
    let mut finished = 0u64;
    while !queue.is_empty() {
        // What the driver asks on each turn of its loop.
        assert!(queue.pending_chars <= N as usize);
        assert!(queue.buffered_frames() <= 1);
        if let Some((id, generation, _)) = submit(&mut queue) {
            synthesise(&mut queue, id, generation, 1);
            events += 4;
        }
        while queue.pop_frame().is_some() {
            events += 1;
        }
        while queue.pop_finished().is_some() {
            finished += 1;
        }
    }
    assert_eq!(finished, N);
    assert_eq!(events, 5 * N);
    assert!(
        queue.visits.0 <= 10 * N,
        "{} utterances looked at for {N} utterances and {events} events",
        queue.visits.0
    );
}

#[test]
fn ten_thousand_utterances_stopped_at_once_are_each_looked_at_once() {
    const N: u64 = 10_000;
    let mut queue = Utterances::new();
    for _ in 0..N {
        push_final(&mut queue, 0, &["a"]);
    }
    submit(&mut queue);
    let before = queue.visits.0;
    let stopped = queue.stop();
    assert_eq!(stopped.utterances.len() as u64, N);
    assert!(queue.visits.0 - before <= N + 1, "{}", queue.visits.0 - before);
}
