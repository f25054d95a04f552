//! One link's inbox: what the session asks of its worker, bounded, with PAUSE and RESUME coalesced.
//!
//! Jobs, STOPs and the session's end keep their order in a queue. PAUSE and RESUME do not queue: they
//! set the state the session wants, and the link sends one Control call when that state differs from
//! what the worker was last told. A storm of PAUSE/RESUME while a call is in flight therefore collapses to
//! the final state, and each awaited call stands for any number of messages. Jobs the session has already
//! stopped are dropped from the queue (counted as discarded) and consecutive STOPs merge, so the queue holds
//! at most a STOP, one live job and the end. `capacity` bounds the jobs queued on top of that: past it a
//! job is refused and its utterance fails with `OVERLOADED`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tts_core::pool::Job;

use crate::protocol::Command;

/// What the link takes next.
pub(crate) enum Next {
    Job(Job),
    Stop,
    End,
    /// The session wants the worker paused (true) or playing (false).
    Pause(bool),
}

enum Queued {
    Job(Job),
    Stop,
    End,
}

/// Why a job did not go in.
pub(crate) enum Refused {
    /// `capacity` jobs are queued; the job is dropped.
    Full,
    /// The link has ended; start another.
    Closed(Job),
}

/// What a control did to the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Controlled {
    Queued,
    /// Merged with a PAUSE/RESUME or STOP not yet taken by the link.
    Coalesced,
}

pub(crate) struct Inbox {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
}

struct State {
    queue: VecDeque<Queued>,
    /// The session's latest PAUSE/RESUME intent, until the link takes it.
    pause: Option<bool>,
    closed: bool,
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                pause: None,
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a job; returns how many stopped jobs were dropped to make the queue current.
    pub(crate) fn push_job(&self, job: Job) -> Result<usize, Refused> {
        let mut state = self.state();
        if state.closed {
            return Err(Refused::Closed(job));
        }
        let discarded = state.prune();
        let queued = state.queue.iter().filter(|q| matches!(q, Queued::Job(_))).count();
        if queued >= self.capacity {
            return Err(Refused::Full);
        }
        state.queue.push_back(Queued::Job(job));
        drop(state);
        self.ready.notify_one();
        Ok(discarded)
    }

    /// Takes a PAUSE, RESUME or STOP the session has applied; returns what it did and how many stopped
    /// jobs were dropped.
    pub(crate) fn control(&self, command: Command) -> (Controlled, usize) {
        let mut state = self.state();
        let (outcome, discarded) = match command {
            Command::Pause | Command::Resume => {
                let coalesced = state.pause.replace(command == Command::Pause).is_some();
                (coalesced, 0)
            }
            Command::Stop => {
                let discarded = state.prune();
                // The session plays again after a STOP (docs/protocol.md), whatever it was before.
                state.pause = Some(false);
                let merged = matches!(state.queue.back(), Some(Queued::Stop));
                if !merged {
                    state.queue.push_back(Queued::Stop);
                }
                (merged, discarded)
            }
        };
        drop(state);
        self.ready.notify_one();
        let outcome = if outcome {
            Controlled::Coalesced
        } else {
            Controlled::Queued
        };
        (outcome, discarded)
    }

    /// The session is over: the link ends once it reaches this.
    pub(crate) fn end(&self) {
        self.state().queue.push_back(Queued::End);
        self.ready.notify_one();
    }

    /// The next thing to do: queued messages in order first, then the wanted pause state.
    pub(crate) async fn next(&self) -> Next {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.state();
                if let Some(queued) = state.queue.pop_front() {
                    return match queued {
                        Queued::Job(job) => Next::Job(job),
                        Queued::Stop => Next::Stop,
                        Queued::End => Next::End,
                    };
                }
                if let Some(paused) = state.pause.take() {
                    return Next::Pause(paused);
                }
            }
            notified.await;
        }
    }

    /// The link has ended: later jobs start a new one.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.queue.clear();
    }

    /// Queued jobs (for tests and the depth gauge).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.state().queue.len()
    }
}

impl State {
    /// Drops jobs the session has stopped since they were queued.
    fn prune(&mut self) -> usize {
        let before = self.queue.len();
        self.queue
            .retain(|q| !matches!(q, Queued::Job(job) if job.cancel.is_cancelled()));
        before - self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tts_core::pool::CancelSource;
    use tts_core::voices::VoiceCatalog;

    use super::*;

    fn job(cancel: &CancelSource) -> Job {
        let catalog = VoiceCatalog::discover(std::path::Path::new("/nonexistent")).unwrap();
        Job {
            voice: Arc::new(catalog.get("espeak-en-us").unwrap().clone()),
            text: "Hello.".into(),
            first: true,
            cancel: cancel.token(),
            session_id: "s".into(),
            utterance_id: 1,
            speed: 1.0,
            parent: tracing::Span::none(),
            events: Box::new(|_| {}),
        }
    }

    async fn take(inbox: &Inbox) -> &'static str {
        match tokio::time::timeout(Duration::from_secs(5), inbox.next()).await {
            Ok(Next::Job(_)) => "job",
            Ok(Next::Stop) => "stop",
            Ok(Next::End) => "end",
            Ok(Next::Pause(true)) => "pause",
            Ok(Next::Pause(false)) => "resume",
            Err(_) => "nothing",
        }
    }

    #[tokio::test]
    async fn a_pause_resume_storm_collapses_to_the_final_state() {
        let inbox = Inbox::new(4);
        let mut coalesced = 0;
        for i in 0..1000 {
            let command = if i % 2 == 0 {
                Command::Pause
            } else {
                Command::Resume
            };
            if inbox.control(command).0 == Controlled::Coalesced {
                coalesced += 1;
            }
        }
        inbox.control(Command::Pause);
        assert_eq!(coalesced, 999);
        assert_eq!(take(&inbox).await, "pause");
        assert_eq!(take(&inbox).await, "nothing", "one state, not a thousand calls");
    }

    #[tokio::test]
    async fn stops_drop_stopped_jobs_merge_and_keep_their_order_with_live_ones() {
        let inbox = Inbox::new(4);
        let cancel = CancelSource::new();
        inbox.push_job(job(&cancel)).ok().unwrap();
        cancel.cancel_all();
        assert_eq!(inbox.control(Command::Stop), (Controlled::Queued, 1));
        assert_eq!(inbox.control(Command::Stop), (Controlled::Coalesced, 0));
        inbox.push_job(job(&cancel)).ok().unwrap();
        inbox.control(Command::Pause);
        inbox.end();
        assert_eq!(inbox.queued(), 3);
        let order = [
            take(&inbox).await,
            take(&inbox).await,
            take(&inbox).await,
            take(&inbox).await,
        ];
        assert_eq!(order, ["stop", "job", "end", "pause"]);
    }

    #[tokio::test]
    async fn past_capacity_jobs_are_refused_and_a_closed_inbox_hands_them_back() {
        let inbox = Inbox::new(1);
        let cancel = CancelSource::new();
        inbox.push_job(job(&cancel)).ok().unwrap();
        assert!(matches!(inbox.push_job(job(&cancel)), Err(Refused::Full)));
        inbox.close();
        assert!(matches!(inbox.push_job(job(&cancel)), Err(Refused::Closed(_))));
    }

    #[tokio::test]
    async fn the_link_wakes_for_work_pushed_while_it_waits() {
        let inbox = Inbox::new(2);
        let waiter = {
            let inbox = inbox.clone();
            tokio::spawn(async move { take(&inbox).await })
        };
        tokio::task::yield_now().await;
        inbox.control(Command::Resume);
        assert_eq!(waiter.await.unwrap(), "resume");
    }
}
