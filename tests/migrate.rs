//! Processes starting together on a new database migrate it once, and all
//! of them succeed (issue 14, fault 4: one of `serve` and a CLI command
//! started at the same moment failed in 6 of 10 trials).

mod common;

use common::{Backend, TestDb};
use memberd::store::Store;

async fn migrate_together(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move {
                let store = Store::connect(&url).await.map_err(|e| e.to_string())?;
                store.migrate().await.map_err(|e| e.to_string())?;
                store.close().await;
                Ok::<_, String>(())
            })
        })
        .collect();
    for start in starts {
        start
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.current_revision().await.unwrap().0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_together_migrate_once_on_sqlite() {
    for _ in 0..20 {
        migrate_together(Backend::Sqlite).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_together_migrate_once_on_postgres() {
    for _ in 0..5 {
        migrate_together(Backend::Postgres).await;
    }
}
