//! A jemalloc arena that keeps its pages, for what a Piper voice's first chunk of an utterance allocates
//! until its first PCM (espeak-ng, the voice's first part, the first decoder window): the engine's
//! `first_chunk_scope` when `engine.first_chunk_warm_arena` is on.
//!
//! ONNX Runtime's CPU arena is off, so every tensor of every run comes from the process's allocator, and
//! jemalloc gives freed pages back to the kernel a few seconds after a burst of synthesis (the server's
//! `malloc_conf`). That keeps a quiet server small, but the first chunk after a listener's pause then
//! faults in and zeroes every page it touches again. Here those allocations come from an arena of their
//! own that never purges: it keeps what the largest first chunks running at once needed (bounded by the
//! engine threads and the first chunk's size), and every later first chunk finds its pages resident.
//! Only the engine thread's allocations move; ONNX Runtime allocates a run's tensors on the thread that
//! runs the session, so a first chunk on the quiet sessions' two intra-op threads takes no page faults
//! either (`tts-core`'s `examples/piper_first_audio.rs`, which includes this file, counts them).
//! Everything else still purges as before (`malloc_conf` in `main.rs`).

use std::sync::OnceLock;

use tikv_jemalloc_ctl::{Access, AsName};

/// The warm arena's index, or `None` when jemalloc would not make one (said once, at WARN).
static ARENA: OnceLock<Option<u32>> = OnceLock::new();

fn arena() -> Option<u32> {
    *ARENA.get_or_init(|| match create() {
        Ok(arena) => Some(arena),
        Err(error) => {
            tracing::warn!(
                error = %error,
                "No jemalloc arena for first chunks: they allocate like every other chunk (slower first audio after a pause)."
            );
            None
        }
    })
}

fn create() -> tikv_jemalloc_ctl::Result<u32> {
    let arena: u32 = b"arenas.create\0".name().read()?;
    for decay in ["dirty", "muzzy"] {
        format!("arena.{arena}.{decay}_decay_ms\0")
            .name()
            .write(-1isize)?;
    }
    Ok(arena)
}

/// While it lives, the thread that made it allocates from the warm arena; dropped, from its own again.
pub(crate) struct Warm {
    previous: Option<u32>,
}

/// Moves the calling thread's allocations to the warm arena until the returned guard is dropped.
pub(crate) fn enter() -> Warm {
    let previous = arena().and_then(|warm| b"thread.arena\0".name().update(warm).ok());
    Warm { previous }
}

/// [`enter`] as the engine's `first_chunk_scope`.
pub(crate) fn scope() -> Box<dyn std::any::Any> {
    Box::new(enter())
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // Writing back an arena this thread just used cannot fail; if it did, the thread would keep
            // allocating from the warm arena, which is only more memory kept.
            let _ = b"thread.arena\0".name().write(previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_arena() -> u32 {
        b"thread.arena\0".name().read().expect("thread.arena")
    }

    #[test]
    fn a_first_chunk_allocates_from_an_arena_that_never_purges_and_then_from_its_own_again() {
        let own = thread_arena();
        let warm = arena().expect("jemalloc makes the warm arena");
        assert_ne!(own, warm);
        for decay in ["dirty", "muzzy"] {
            let ms: isize = format!("arena.{warm}.{decay}_decay_ms\0")
                .name()
                .read()
                .expect("decay");
            assert_eq!(ms, -1, "the warm arena never purges its {decay} pages");
        }
        // Under jemalloc's default `oversize_threshold` (8 MiB), above which an allocation would go to an
        // arena of its own (this binary's `malloc_conf` turns that off; a test binary reads it too).
        let size = 4 << 20;
        {
            let _warm = enter();
            assert_eq!(thread_arena(), warm);
            let _nested = enter();
            assert_eq!(thread_arena(), warm);
            drop(std::hint::black_box(vec![1u8; size]));
        }
        assert_eq!(
            thread_arena(),
            own,
            "the thread allocates from its own arena again"
        );
        tikv_jemalloc_ctl::epoch::advance().expect("epoch");
        let page: usize = b"arenas.page\0".name().read().expect("page size");
        let pages = |what: &str| -> usize {
            format!("stats.arenas.{warm}.{what}\0")
                .name()
                .read()
                .expect("arena stats")
        };
        let kept = (pages("pactive") + pages("pdirty")) * page;
        assert!(
            kept >= size,
            "the freed buffer's pages stay with the warm arena: {kept} bytes"
        );
        assert_eq!(arena(), Some(warm), "one warm arena per process");
    }
}
