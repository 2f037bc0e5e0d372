//! The deadline of the caller a commit is made for.
//!
//! cqrs-es's `EventStore::commit` has no parameter for it, so it travels in a task-local: the
//! API wraps a request's whole handling in [`with_commit_deadline`], and every commit made inside
//! carries that deadline to the group-commit writer. The writer never writes a commit whose
//! caller's deadline has passed: a caller that was told its command ran out of time must not find
//! it committed later by a process that stalled and resumed.

use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static COMMIT_DEADLINE: Instant;
}

/// Runs `future` so that the commits it makes are abandoned, not written, once `deadline` has
/// passed (they fail with [`crate::StoreError::DeadlinePassed`]).
pub async fn with_commit_deadline<F: Future>(deadline: Instant, future: F) -> F::Output {
    COMMIT_DEADLINE.scope(deadline, future).await
}

/// The deadline of the current task's caller, if it runs under [`with_commit_deadline`].
pub(crate) fn current() -> Option<Instant> {
    COMMIT_DEADLINE.try_with(|deadline| *deadline).ok()
}
