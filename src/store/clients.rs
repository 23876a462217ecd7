//! API clients.

use time::OffsetDateTime;

use super::rows::ClientRow;
use super::{AnyPool, Begin, ChangeTx, Result, Store, StoreError, on_pool};
use crate::audit::Event;
use crate::model::{ApiClient, ClientStatus};

// A macro: sqlx takes only static SQL, which `concat!` builds.
macro_rules! client_columns {
    () => {
        "client_key, name, api_key_hash, status, expires_at, allowed_origins, allowed_ips, \
         allowed_paths, rate_limit_per_minute, capabilities, created_at, last_used_at"
    };
}

impl Store {
    pub async fn create_client(&self, client: &ApiClient) -> Result<()> {
        const SQL: &str = concat!(
            "INSERT INTO api_clients (",
            client_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (client_key) DO NOTHING"
        );
        let row = ClientRow::from(client);
        let mut after = client_settings(client);
        after["status"] = client.status.as_str().into();
        let event =
            Event::new("client.create", format!("client:{}", client.client_key)).after(after);
        let affected = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let affected = sqlx::query(SQL)
                .bind(&row.client_key)
                .bind(&row.name)
                .bind(&row.api_key_hash)
                .bind(&row.status)
                .bind(row.expires_at)
                .bind(&row.allowed_origins)
                .bind(&row.allowed_ips)
                .bind(&row.allowed_paths)
                .bind(row.rate_limit_per_minute)
                .bind(&row.capabilities)
                .bind(row.created_at)
                .bind(row.last_used_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if affected == 1 {
                tx.audit(None, event).await?;
                tx.commit().await?;
            }
            affected
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists("client"))
        }
    }

    pub async fn client(&self, client_key: &str) -> Result<Option<ApiClient>> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM api_clients WHERE client_key = $1"
        );
        let row: Option<ClientRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(client_key)
            .fetch_optional(pool)
            .await?);
        row.map(ApiClient::try_from).transpose()
    }

    pub async fn clients(&self) -> Result<Vec<ApiClient>> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM api_clients ORDER BY created_at, client_key"
        );
        let rows: Vec<ClientRow> =
            on_pool!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await?);
        rows.into_iter().map(ApiClient::try_from).collect()
    }

    pub async fn set_client_status(&self, client_key: &str, status: ClientStatus) -> Result<()> {
        let sql = "UPDATE api_clients SET status = $2 WHERE client_key = $1";
        let action = match status {
            ClientStatus::Active => "client.enable",
            ClientStatus::Disabled => "client.disable",
        };
        let affected = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let affected = sqlx::query(sql)
                .bind(client_key)
                .bind(status.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if affected == 1 {
                tx.audit(
                    None,
                    Event::new(action, format!("client:{client_key}"))
                        .after(serde_json::json!({"status": status.as_str()})),
                )
                .await?;
                tx.commit().await?;
            }
            affected
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound("client"))
        }
    }

    pub async fn set_client_key_hash(&self, client_key: &str, api_key_hash: &str) -> Result<()> {
        let sql = "UPDATE api_clients SET api_key_hash = $2 WHERE client_key = $1";
        let affected = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let affected = sqlx::query(sql)
                .bind(client_key)
                .bind(api_key_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if affected == 1 {
                tx.audit(
                    None,
                    Event::new("client.rotate_key", format!("client:{client_key}")),
                )
                .await?;
                tx.commit().await?;
            }
            affected
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound("client"))
        }
    }

    /// Replaces the client's name, allowlists, expiry and rate limit.
    pub async fn update_client(&self, client: &ApiClient) -> Result<()> {
        let row = ClientRow::from(client);
        let event = Event::new("client.update", format!("client:{}", client.client_key))
            .after(client_settings(client));
        let updated = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE api_clients SET name = $2, expires_at = $3, allowed_origins = $4, allowed_ips = $5, \
                 allowed_paths = $6, rate_limit_per_minute = $7, capabilities = $8 WHERE client_key = $1",
            )
            .bind(&row.client_key)
            .bind(&row.name)
            .bind(row.expires_at)
            .bind(&row.allowed_origins)
            .bind(&row.allowed_ips)
            .bind(&row.allowed_paths)
            .bind(row.rate_limit_per_minute)
            .bind(&row.capabilities)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 1 {
                tx.audit(None, event).await?;
                tx.commit().await?;
            }
            updated
        });
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound("client"))
        }
    }

    pub async fn touch_client(&self, client_key: &str, at: OffsetDateTime) -> Result<()> {
        let sql = "UPDATE api_clients SET last_used_at = $2 WHERE client_key = $1";
        on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(client_key)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

/// A client's settings as its audit records show them (never the key's hash).
fn client_settings(client: &ApiClient) -> serde_json::Value {
    serde_json::json!({
        "name": client.name,
        "expires_at": client.expires_at.map(|t| t.unix_timestamp()),
        "allowed_origins": client.allowed_origins,
        "allowed_ips": client.allowed_ips,
        "allowed_paths": client.allowed_paths,
        "rate_limit_per_minute": client.rate_limit_per_minute,
        "capabilities": client.capabilities,
    })
}
