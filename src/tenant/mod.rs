//! The municipality app. Every handler here receives a [`TenantCtx`] and can reach
//! nothing else: no catalog, no other tenant's pool.

pub mod forms;
mod home;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::get;
use axum::Router;
use deadpool_postgres::{Object, Pool, PoolError, Timeouts};
use uuid::Uuid;

use crate::crypto::FieldCipher;
use crate::error::AppError;

/// What a tenant handler knows about the municipality it serves.
#[derive(Clone)]
pub struct TenantCtx {
    pub id: Uuid,
    pub slug: Arc<str>,
    pool: Pool,
    wait: Duration,
    cipher: Arc<FieldCipher>,
}

impl std::fmt::Debug for TenantCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCtx")
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

impl TenantCtx {
    /// Made by the front tier only.
    pub(crate) fn new(
        id: Uuid,
        slug: Arc<str>,
        pool: Pool,
        wait: Duration,
        cipher: Arc<FieldCipher>,
    ) -> Self {
        Self {
            id,
            slug,
            pool,
            wait,
            cipher,
        }
    }

    /// A connection to this tenant's own database, as its own role. When the
    /// global connection budget is exhausted for longer than the configured wait,
    /// the request gets 503 with `Retry-After`, never an extra connection.
    pub async fn db(&self) -> Result<Object, AppError> {
        let timeouts = Timeouts {
            wait: Some(self.wait),
            create: Some(self.wait),
            recycle: Some(Duration::from_secs(5)),
        };
        match self.pool.timeout_get(&timeouts).await {
            Ok(c) => Ok(c),
            Err(PoolError::Timeout(_)) => {
                tracing::warn!("no database connection within the wait limit");
                Err(AppError::Unavailable {
                    retry_after_secs: 1,
                })
            }
            Err(PoolError::Backend(e)) => {
                tracing::warn!(error = %e, "tenant database unreachable");
                Err(AppError::Unavailable {
                    retry_after_secs: 5,
                })
            }
            Err(e) => Err(AppError::Internal(anyhow::anyhow!("tenant pool: {e}"))),
        }
    }

    /// This tenant's field cipher (its data key; encrypts personal data).
    pub fn cipher(&self) -> &FieldCipher {
        &self.cipher
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<TenantCtx>()
            .cloned()
            .ok_or(AppError::NotFound)
    }
}

/// Every route of the municipality app.
pub fn router() -> Router {
    Router::new()
        .route("/", get(home::show))
        .fallback(|| async { AppError::NotFound })
}
