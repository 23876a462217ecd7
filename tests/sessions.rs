//! The session stores' shared suite: the database (SQLite, PostgreSQL) and
//! Redis answer every question the same way.

mod common;

use common::Backend;
use memberd::model::{AuthentikSub, Session, SessionId, UserId, UserUpsert};
use memberd::service::sessions::{RedisSessions, SessionStore};
use memberd::store::{RefreshOutcome, Store};
use time::{Duration, OffsetDateTime};

struct Fixture {
    sessions: SessionStore,
    store: Store,
    _db: common::TestStore,
}

async fn fixture(kind: &str) -> Option<Fixture> {
    let backend = if kind == "postgres" {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let db = common::test_store(backend).await?;
    let store = db.store.clone();
    let sessions = if kind == "redis" {
        let url = common::redis_url().await?;
        let prefix = format!("memberd-test-{}:", uuid::Uuid::new_v4().simple());
        SessionStore::Redis(RedisSessions::connect(&url, prefix).await.unwrap())
    } else {
        SessionStore::Database(store.clone())
    };
    Some(Fixture {
        sessions,
        store,
        _db: db,
    })
}

impl Fixture {
    async fn user(&self, sub: &str) -> UserId {
        let upsert = UserUpsert {
            authentik_sub: AuthentikSub::parse(sub).unwrap(),
            email: None,
            display_name: None,
            is_active: None,
        };
        self.store.upsert_user(&upsert).await.unwrap().user.id
    }

    async fn session(&self, user_id: UserId, refresh: &str, at: OffsetDateTime) -> Session {
        let session = Session {
            id: SessionId::new(),
            user_id,
            created_at: at,
            last_used_at: at,
            expires_at: at + Duration::hours(1),
            absolute_expires_at: at + Duration::hours(3),
            ip: Some("192.0.2.7".into()),
            user_agent: Some("tests".into()),
            revoked_at: None,
        };
        self.sessions.create(&session, refresh).await.unwrap();
        session
    }
}

fn now() -> OffsetDateTime {
    memberd::store::now()
}

macro_rules! on_every_store {
    ($(async fn $name:ident($f:ident) $body:block)*) => {
        mod sqlite { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let Some($f) = fixture("sqlite").await else { return }; $body }
        )* }
        mod postgres { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let Some($f) = fixture("postgres").await else { return }; $body }
        )* }
        mod redis { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let Some($f) = fixture("redis").await else { return }; $body }
        )* }
    };
}

on_every_store! {

async fn a_session_reads_back_as_created_and_lists_with_its_owner(f) {
    let alice = f.user("alice").await;
    let bob = f.user("bob").await;
    let at = now();
    let a1 = f.session(alice, "r-a1", at).await;
    let a2 = f.session(alice, "r-a2", at + Duration::seconds(1)).await;
    f.session(bob, "r-b1", at).await;
    assert_eq!(f.sessions.active(a1.id, at).await.unwrap(), Some(a1.clone()));
    assert_eq!(f.sessions.active(SessionId::new(), at).await.unwrap(), None);
    let listed = f.sessions.list(alice, at).await.unwrap();
    assert_eq!(listed, vec![a2.clone(), a1.clone()], "newest first, only alice's");
    assert_eq!(f.sessions.active(a1.id, a1.expires_at).await.unwrap(), None, "over at its expiry");
}

async fn refresh_rotates_slides_and_caps_at_the_absolute_end(f) {
    let alice = f.user("alice").await;
    let at = now();
    let session = f.session(alice, "r-1", at).await;
    let later = at + Duration::minutes(30);
    let RefreshOutcome::Rotated(renewed) = f.sessions.refresh("r-1", "r-2", later, later + Duration::hours(1)).await.unwrap() else {
        panic!("the current token rotates");
    };
    assert_eq!(renewed.id, session.id);
    assert_eq!(renewed.last_used_at, later);
    assert_eq!(renewed.expires_at, later + Duration::hours(1));
    let much_later = at + Duration::minutes(80);
    let RefreshOutcome::Rotated(capped) = f.sessions.refresh("r-2", "r-3", much_later, much_later + Duration::hours(2)).await.unwrap() else {
        panic!("the second token rotates");
    };
    assert_eq!(capped.expires_at, session.absolute_expires_at);
    assert_eq!(f.sessions.active(session.id, much_later).await.unwrap().unwrap().expires_at, session.absolute_expires_at);
    assert_eq!(f.sessions.refresh("nope", "r-x", later, later).await.unwrap(), RefreshOutcome::Invalid);
}

// Regression (issue 13, finding 6): on Redis a refresh read the session,
// then wrote it back; a revoke landing between the two was undone.
async fn a_refresh_racing_a_revoke_never_brings_the_session_back(f) {
    let alice = f.user("alice").await;
    for trial in 0..60 {
        let at = now();
        let token = format!("race-{trial}");
        let session = f.session(alice, &token, at).await;
        let (sessions, next) = (f.sessions.clone(), format!("race-{trial}-next"));
        let refresh = tokio::spawn(async move {
            sessions.refresh(&token, &next, at, at + Duration::hours(1)).await.unwrap()
        });
        let sessions = f.sessions.clone();
        let revoke = tokio::spawn(async move { sessions.revoke(session.id, None).await.unwrap() });
        refresh.await.unwrap();
        assert!(revoke.await.unwrap(), "trial {trial}: the session existed");
        assert_eq!(
            f.sessions.active(session.id, at).await.unwrap(),
            None,
            "trial {trial}: a revoked session stays revoked"
        );
    }
}

async fn a_spent_token_revokes_its_session(f) {
    let alice = f.user("alice").await;
    let at = now();
    let session = f.session(alice, "r-1", at).await;
    assert!(matches!(f.sessions.refresh("r-1", "r-2", at, at + Duration::hours(1)).await.unwrap(), RefreshOutcome::Rotated(_)));
    assert_eq!(f.sessions.refresh("r-1", "r-3", at, at + Duration::hours(1)).await.unwrap(), RefreshOutcome::Reused(session.id));
    // The service revokes on reuse (the database store already has); either way the session is over.
    f.sessions.revoke(session.id, None).await.unwrap();
    assert_eq!(f.sessions.active(session.id, at).await.unwrap(), None);
    assert_eq!(f.sessions.refresh("r-2", "r-4", at, at + Duration::hours(1)).await.unwrap(), RefreshOutcome::Invalid);
}

async fn of_two_racing_refreshes_with_one_token_one_wins(f) {
    let alice = f.user("alice").await;
    let at = now();
    let session = f.session(alice, "r-1", at).await;
    let (a, b) = tokio::join!(
        f.sessions.refresh("r-1", "r-a", at, at + Duration::hours(1)),
        f.sessions.refresh("r-1", "r-b", at, at + Duration::hours(1)),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let rotated = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Rotated(_))).count();
    let reused = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Reused(_))).count();
    let invalid = outcomes.iter().filter(|o| **o == RefreshOutcome::Invalid).count();
    // One spends the token; the other is reuse, which ends the session. The
    // spender answers Rotated, or Invalid when the reuse ended the session
    // before its write (which must not bring the session back: finding 6).
    assert_eq!(reused, 1, "{outcomes:?}");
    assert_eq!(rotated + invalid, 1, "{outcomes:?}");
    f.sessions.revoke(session.id, None).await.unwrap();
    assert_eq!(f.sessions.active(session.id, at).await.unwrap(), None, "{outcomes:?}");
}

async fn revocation_respects_the_owner_and_can_take_them_all(f) {
    let alice = f.user("alice").await;
    let bob = f.user("bob").await;
    let at = now();
    let a1 = f.session(alice, "r-a1", at).await;
    let a2 = f.session(alice, "r-a2", at).await;
    let b1 = f.session(bob, "r-b1", at).await;
    assert!(!f.sessions.revoke(a1.id, Some(bob)).await.unwrap(), "not bob's to revoke");
    assert!(f.sessions.revoke(a1.id, Some(alice)).await.unwrap());
    assert!(!f.sessions.revoke(a1.id, Some(alice)).await.unwrap(), "already revoked");
    assert_eq!(f.sessions.list(alice, at).await.unwrap(), vec![a2.clone()]);
    assert_eq!(f.sessions.refresh("r-a1", "r-x", at, at + Duration::hours(1)).await.unwrap(), RefreshOutcome::Invalid);
    assert_eq!(f.sessions.revoke_all(alice).await.unwrap(), 1);
    assert_eq!(f.sessions.active(a2.id, at).await.unwrap(), None);
    assert!(f.sessions.active(b1.id, at).await.unwrap().is_some());
}

}

/// Pruning on the database: ended sessions, spent throttles, keys past their grace.
async fn pruning(backend: Backend) {
    let Some(db) = common::test_store(backend).await else {
        return;
    };
    let f = Fixture {
        sessions: SessionStore::Database(db.store.clone()),
        store: db.store.clone(),
        _db: db,
    };
    let alice = f.user("alice").await;
    let at = now();
    let old = f.session(alice, "r-old", at - Duration::days(3)).await;
    let current = f.session(alice, "r-now", at).await;
    assert_eq!(
        f.store
            .delete_sessions_ended_before(at - Duration::days(1))
            .await
            .unwrap(),
        1
    );
    assert!(f.store.session(old.id).await.unwrap().is_none());
    assert!(f.store.session(current.id).await.unwrap().is_some());

    let t = at.unix_timestamp();
    f.store
        .reserve_attempt("user:old", t - 100_000, 900)
        .await
        .unwrap();
    f.store
        .reserve_attempt("user:recent", t, 900)
        .await
        .unwrap();
    assert_eq!(f.store.prune_throttles(t - 50_000).await.unwrap(), 1);
    assert_eq!(f.store.throttle("user:recent").await.unwrap().failures, 1);
}

#[tokio::test]
async fn pruning_on_sqlite() {
    pruning(Backend::Sqlite).await;
}

#[tokio::test]
async fn pruning_on_postgres() {
    pruning(Backend::Postgres).await;
}

/// Identities on the database: link, relink, refuse another user's.
async fn identities(backend: Backend) {
    let Some(db) = common::test_store(backend).await else {
        return;
    };
    let f = Fixture {
        sessions: SessionStore::Database(db.store.clone()),
        store: db.store.clone(),
        _db: db,
    };
    let ada = f.user("ada").await;
    let bob = f.user("bob").await;
    assert!(
        f.store
            .link_identity("https://idp", "s-1", ada)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .link_identity("https://idp", "s-1", ada)
            .await
            .unwrap()
    );
    assert!(
        f.store
            .link_identity("https://idp", "s-1", bob)
            .await
            .is_err()
    );
    assert!(
        f.store
            .link_identity("https://other", "s-1", bob)
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.identity_user("https://idp", "s-1").await.unwrap(),
        Some(ada)
    );
    assert_eq!(
        f.store.identity_user("https://idp", "s-2").await.unwrap(),
        None
    );
    assert_eq!(f.store.identities_of(bob).await.unwrap().len(), 1);
}

#[tokio::test]
async fn identities_on_sqlite() {
    identities(Backend::Sqlite).await;
}

#[tokio::test]
async fn identities_on_postgres() {
    identities(Backend::Postgres).await;
}
