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

/// A database's shape, in terms both backends share: each table's columns
/// (name and whether it may be null), its primary key, its unique sets of
/// columns (constraints and unique indexes alike), its other indexes, and
/// its foreign keys. Types are left out: the backends spell them apart
/// (TEXT and VARCHAR, INTEGER and BIGINT) for the same values.
#[derive(Debug, PartialEq, Eq, Default)]
struct Shape {
    tables: std::collections::BTreeMap<String, Table>,
}

#[derive(Debug, PartialEq, Eq, Default)]
struct Table {
    columns: std::collections::BTreeSet<(String, bool)>,
    primary_key: Vec<String>,
    unique: std::collections::BTreeSet<Vec<String>>,
    indexes: std::collections::BTreeSet<Vec<String>>,
    foreign_keys: std::collections::BTreeSet<(Vec<String>, String, Vec<String>)>,
}

async fn sqlite_shape(url: &str) -> Shape {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut shape = Shape::default();
    for name in names {
        let mut table = Table::default();
        let columns = sqlx::query("SELECT name, \"notnull\", pk FROM pragma_table_info(?)")
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let mut key: Vec<(i64, String)> = Vec::new();
        for c in &columns {
            let column: String = c.get(0);
            let not_null: bool = c.get::<i64, _>(1) != 0;
            let pk: i64 = c.get(2);
            // A primary key column is never null, whether or not SQLite was told.
            table.columns.insert((column.clone(), !not_null && pk == 0));
            if pk > 0 {
                key.push((pk, column));
            }
        }
        key.sort();
        table.primary_key = key.into_iter().map(|(_, c)| c).collect();
        let indexes = sqlx::query("SELECT name, \"unique\", origin FROM pragma_index_list(?)")
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for index in &indexes {
            let index_name: String = index.get(0);
            let unique: bool = index.get::<i64, _>(1) != 0;
            let origin: String = index.get(2);
            if origin == "pk" {
                continue;
            }
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&index_name)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            if unique {
                table.unique.insert(columns);
            } else {
                table.indexes.insert(columns);
            }
        }
        let fks = sqlx::query(
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut by_id: std::collections::BTreeMap<i64, (Vec<String>, String, Vec<String>)> =
            Default::default();
        for fk in &fks {
            let entry = by_id.entry(fk.get(0)).or_default();
            entry.1 = fk.get(1);
            entry.0.push(fk.get(2));
            entry
                .2
                .push(fk.get::<Option<String>, _>(3).unwrap_or_default());
        }
        table.foreign_keys = by_id.into_values().collect();
        shape.tables.insert(name, table);
    }
    shape
}

async fn postgres_shape(url: &str) -> Shape {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut shape = Shape::default();
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, is_nullable = 'YES' FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for c in &columns {
        let table: String = c.get(0);
        shape
            .tables
            .entry(table)
            .or_default()
            .columns
            .insert((c.get(1), c.get(2)));
    }
    // Every index, with its columns in order: primary key, unique, or neither.
    let indexes = sqlx::query(
        "SELECT t.relname::text, i.indisprimary, i.indisunique, \
                array_agg(a.attname::text ORDER BY k.ord) \
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
         WHERE n.nspname = 'public' AND t.relname NOT LIKE '\\_sqlx%' \
         GROUP BY t.relname, i.indexrelid, i.indisprimary, i.indisunique",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for index in &indexes {
        let table = shape.tables.entry(index.get(0)).or_default();
        let columns: Vec<String> = index.get(3);
        match (index.get::<bool, _>(1), index.get::<bool, _>(2)) {
            (true, _) => table.primary_key = columns,
            (false, true) => {
                table.unique.insert(columns);
            }
            (false, false) => {
                table.indexes.insert(columns);
            }
        }
    }
    let fks = sqlx::query(
        "SELECT c.conrelid::regclass::text, f.relname::text, \
                array(SELECT attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) \
                      JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n ORDER BY k.o), \
                array(SELECT attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o) \
                      JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n ORDER BY k.o) \
         FROM pg_constraint c JOIN pg_class f ON f.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = f.relnamespace \
         WHERE c.contype = 'f' AND n.nspname = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for fk in &fks {
        let table = shape.tables.entry(fk.get(0)).or_default();
        table.foreign_keys.insert((fk.get(2), fk.get(1), fk.get(3)));
    }
    shape
}

/// Issue 15: the two backends' migrations are written twice; nothing held
/// them to one schema.
#[tokio::test]
async fn sqlite_and_postgres_migrate_to_the_same_shape() {
    let Some(postgres) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let sqlite = TestDb::create(Backend::Sqlite).await.unwrap();
    for db in [&sqlite, &postgres] {
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        store.close().await;
    }
    let sqlite_url = sqlite.url.clone();
    let (sqlite, postgres) = (
        sqlite_shape(&sqlite.url).await,
        postgres_shape(&postgres.url).await,
    );
    let names = |s: &Shape| s.tables.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&sqlite), names(&postgres), "the same tables");
    let mut differences = Vec::new();
    for (name, table) in &sqlite.tables {
        let other = &postgres.tables[name];
        if table != other {
            differences.push(format!(
                "{name}:\n  SQLite     {table:?}\n  PostgreSQL {other:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} tables differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    // The comparison sees what it claims to: keys, indexes and foreign keys.
    let users = &sqlite.tables["users"];
    assert_eq!(users.primary_key, ["id"]);
    assert!(
        users.unique.contains(&vec!["authentik_sub".to_owned()]),
        "{users:?}"
    );
    let (mut indexes, mut foreign_keys) = (0, 0);
    for table in sqlite.tables.values() {
        indexes += table.indexes.len() + table.unique.len();
        foreign_keys += table.foreign_keys.len();
    }
    assert!(
        sqlite.tables.len() >= 20 && indexes >= 15 && foreign_keys >= 10,
        "{} tables, {indexes} indexes, {foreign_keys} foreign keys",
        sqlite.tables.len()
    );
    // And it notices a difference: one index more on one side.
    common::tamper(&sqlite_url, "CREATE INDEX extra ON users (email)").await;
    assert_ne!(
        sqlite_shape(&sqlite_url).await.tables["users"],
        postgres.tables["users"]
    );
}
