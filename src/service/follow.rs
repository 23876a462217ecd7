//! Keeping the index current when other processes change the policy: other
//! memberd instances on the same PostgreSQL, or the CLI on either backend.
//!
//! PostgreSQL announces every committed revision (`LISTEN memberd_revision`),
//! so an instance catches up within milliseconds; a poll every second covers
//! notifications lost while the listening connection was down, and SQLite,
//! which has no notifications.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::directory::Directory;
use crate::store::Store;

pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Follows the change log until the returned task is aborted (at shutdown,
/// before the pool closes: the listener holds one of its connections).
pub fn spawn(directory: Directory, store: Store, poll: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut listener = match store.listen_revisions().await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for revisions; polling only");
                None
            }
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = directory.engine().gap_seen() => {}
                () = notified(&mut listener) => {}
            }
            if let Err(e) = directory.catch_up().await {
                tracing::warn!(error = %e, "catching up with the change log failed");
            }
        }
    })
}

/// Resolves on the next notification; never without a listener.
async fn notified(listener: &mut Option<PgListener>) {
    let Some(l) = listener else {
        return std::future::pending().await;
    };
    if let Err(e) = l.recv().await {
        // recv reconnects on its next call; a pause keeps a dead server
        // from turning this into a busy loop.
        tracing::warn!(error = %e, "revision notifications interrupted");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
