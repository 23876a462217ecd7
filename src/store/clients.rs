//! API clients.

use time::OffsetDateTime;

use super::rows::ClientRow;
use super::{AnyPool, Result, Store, StoreError, on_pool};
use crate::model::{ApiClient, ClientStatus};

// A macro: sqlx takes only static SQL, which `concat!` builds.
macro_rules! client_columns {
    () => {
        "client_key, name, api_key_hash, status, expires_at, allowed_origins, allowed_ips, \
         allowed_paths, rate_limit_per_minute, created_at, last_used_at"
    };
}

impl Store {
    pub async fn create_client(&self, client: &ApiClient) -> Result<()> {
        const SQL: &str = concat!(
            "INSERT INTO api_clients (",
            client_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (client_key) DO NOTHING"
        );
        let row = ClientRow::from(client);
        let affected = on_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(&row.client_key)
                .bind(&row.name)
                .bind(&row.api_key_hash)
                .bind(&row.status)
                .bind(row.expires_at)
                .bind(&row.allowed_origins)
                .bind(&row.allowed_ips)
                .bind(&row.allowed_paths)
                .bind(row.rate_limit_per_minute)
                .bind(row.created_at)
                .bind(row.last_used_at)
                .execute(pool)
                .await?
                .rows_affected()
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
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(client_key)
                .bind(status.as_str())
                .execute(pool)
                .await?
                .rows_affected()
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
            sqlx::query(sql)
                .bind(client_key)
                .bind(api_key_hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if affected == 1 {
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
