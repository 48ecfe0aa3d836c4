//! The municipality app. Every handler here receives a [`TenantCtx`] and can reach
//! nothing else: no catalog, no other tenant's pool.

pub mod admin;
pub mod api;
pub mod audit;
#[cfg(test)]
mod bench_sql;
pub mod cases;
pub mod forms;
mod help;
mod home;
pub mod http;
pub mod identity;
pub mod mail;
pub mod mine;
pub mod rekey;
pub mod spreadsheet;
pub mod staff;
pub mod status;

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post};
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
    /// The municipality's name, for page headers.
    pub name: Arc<str>,
    /// `scheme://host[:port]` as this request reached us, for links shown to people.
    pub base_url: String,
    /// Whether the request came over TLS: cookies are then `Secure`.
    pub secure_cookies: bool,
    /// The client's address (from a trusted proxy, or the socket).
    pub client_ip: Option<std::net::IpAddr>,
    /// The network zone of the listener the request came through.
    pub zone: crate::front::conn::Zone,
    /// The operator's help desk for administrators, if configured.
    pub helpdesk: Option<Arc<str>>,
    /// ClamAV's daemon, when attached files are scanned.
    pub clamd: Option<Arc<crate::scan::Clamd>>,
    /// Places for workbooks (XLSX exports) built at once on the whole server.
    pub workbooks: Arc<tokio::sync::Semaphore>,
    /// Staff sign-ins and setup-link posts counted per address on the whole server
    /// (only wrong ones are limited).
    pub sign_ins: Arc<crate::front::limits::Attempts>,
    pub setups: Arc<crate::front::limits::Attempts>,
    pool: Pool,
    wait: Duration,
    cipher: Arc<FieldCipher>,
    mail: Arc<crate::front::mail::MailQueue>,
    /// The way to identity providers (本人確認).
    idp: identity::oidc::Idp,
    /// The connections this request holds now.
    held: Arc<Held>,
}

/// The database connections a request holds now, so that what they run can be
/// cancelled when the request runs out of time (the front tier does; dropping the
/// request does not stop a statement the server is running).
#[derive(Default)]
pub struct Held {
    tokens: Mutex<Vec<(u64, tokio_postgres::CancelToken)>>,
    next: AtomicU64,
}

impl Held {
    fn add(&self, token: tokio_postgres::CancelToken) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = self.tokens.lock() {
            t.push((key, token));
        }
        key
    }

    /// Takes a connection off the list; false when it was no longer there (taken
    /// by [`Held::take`]: its request ran out of time).
    fn remove(&self, key: u64) -> bool {
        match self.tokens.lock() {
            Ok(mut t) => {
                let before = t.len();
                t.retain(|(k, _)| *k != key);
                t.len() < before
            }
            Err(_) => false,
        }
    }

    /// The connections held now, taken out of the list: each is closed instead of
    /// going back to the pool when its request lets go of it ([`Db`]).
    pub fn take(&self) -> Vec<tokio_postgres::CancelToken> {
        self.tokens
            .lock()
            .map(|mut t| t.drain(..).map(|(_, token)| token).collect())
            .unwrap_or_default()
    }
}

/// A connection from the tenant's pool, listed in the request's [`Held`] while it is
/// held; it goes back to the pool when dropped, unless its request ran out of time
/// meanwhile ([`Held::take`]): what it ran was being cancelled, maybe half-way
/// through a transaction, so it is closed instead and the pool's other connections
/// go on serving.
pub struct Db {
    /// Always `Some` until dropped.
    obj: Option<Object>,
    held: Arc<Held>,
    key: u64,
}

impl Deref for Db {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &deadpool_postgres::ClientWrapper {
        match &self.obj {
            Some(o) => o,
            None => unreachable!("a connection is taken out only when it is dropped"),
        }
    }
}

impl DerefMut for Db {
    fn deref_mut(&mut self) -> &mut deadpool_postgres::ClientWrapper {
        match &mut self.obj {
            Some(o) => o,
            None => unreachable!("a connection is taken out only when it is dropped"),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if !self.held.remove(self.key) {
            // Out of the pool, and closed as the client goes.
            if let Some(o) = self.obj.take() {
                drop(Object::take(o));
            }
        }
    }
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: Uuid,
        slug: Arc<str>,
        name: Arc<str>,
        base_url: String,
        secure_cookies: bool,
        pool: Pool,
        wait: Duration,
        cipher: Arc<FieldCipher>,
        mail: Arc<crate::front::mail::MailQueue>,
        idp: identity::oidc::Idp,
        held: Arc<Held>,
    ) -> Self {
        Self {
            id,
            slug,
            name,
            base_url,
            secure_cookies,
            client_ip: None,
            zone: crate::front::conn::Zone::Internet,
            helpdesk: None,
            clamd: None,
            workbooks: Arc::new(tokio::sync::Semaphore::new(
                cases::export::WORKBOOKS_AT_ONCE,
            )),
            sign_ins: crate::front::limits::Attempts::new(
                crate::front::limits::SIGN_IN_EVERY,
                crate::front::limits::SIGN_IN_BURST,
            ),
            setups: crate::front::limits::Attempts::new(
                crate::front::limits::SETUP_EVERY,
                crate::front::limits::SETUP_BURST,
            ),
            pool,
            wait,
            cipher,
            mail,
            idp,
            held,
        }
    }

    /// The way to the municipality's identity provider.
    pub fn idp(&self) -> &identity::oidc::Idp {
        &self.idp
    }

    /// Mail was queued in this tenant's outbox (and committed): deliver it now.
    pub fn mail_queued(&self) {
        self.mail.queued(self.id);
    }

    /// Whether mail queued now will be sent: without a relay it waits in the outbox.
    pub fn mail_on(&self) -> bool {
        self.mail.delivering()
    }

    /// A connection to this tenant's own database, as its own role. When the
    /// global connection budget is exhausted for longer than the configured wait,
    /// the request gets 503 with `Retry-After`, never an extra connection.
    pub async fn db(&self) -> Result<Db, AppError> {
        let timeouts = Timeouts {
            wait: Some(self.wait),
            create: Some(self.wait),
            recycle: Some(Duration::from_secs(5)),
        };
        match self.pool.timeout_get(&timeouts).await {
            Ok(c) => {
                let key = self.held.add(c.cancel_token());
                Ok(Db {
                    obj: Some(c),
                    held: Arc::clone(&self.held),
                    key,
                })
            }
            Err(PoolError::Timeout(_)) => {
                tracing::warn!("no database connection within the wait limit");
                Err(AppError::Unavailable {
                    retry_after_secs: 1,
                })
            }
            // Closed under it: the front tier renews a pool after the database
            // failed; the next request gets the new one.
            Err(PoolError::Closed) => Err(AppError::Unavailable {
                retry_after_secs: 1,
            }),
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

/// Forms with a few short fields (sign-in, account setup, status lookup) take at
/// most this many bytes; everything else up to `http::MAX_FORM_BODY`.
pub const SMALL_FORM_BODY: usize = 16 * 1024;

fn small_body() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(SMALL_FORM_BODY)
}

/// Every route of the municipality app.
pub fn router(rates: &crate::config::RateLimits) -> Router {
    use admin::forms as b;
    use forms::citizen as c;
    use staff::pages as s;
    // One quota for a citizen's page POSTs and final submit.
    let submits = crate::front::limits::submit_limit(rates);
    // One quota for looking up and for reopening a returned application.
    let lookups = crate::front::limits::post_limit(
        Duration::from_secs(status::LOOKUP_EVERY_SECS),
        status::LOOKUP_BURST,
    );
    Router::new()
        .route("/", get(home::show))
        .route("/help", get(help::citizen_guide))
        // Citizens
        // A page may carry files (添付ファイル).
        .route("/f/{form}", {
            let r = get(c::show)
                .post(c::post_page)
                .layer::<_, std::convert::Infallible>(axum::extract::DefaultBodyLimit::max(
                    forms::attachments::MAX_PAGE_BODY,
                ));
            match &submits {
                Some(l) => r.layer(l.clone()),
                None => r,
            }
        })
        .route("/f/{form}/confirm", get(c::confirm))
        .route("/f/{form}/files/{file}", get(forms::attachments::own_file))
        .route("/f/{form}/submit", {
            let r = post(c::submit);
            match &submits {
                Some(l) => r.layer(l.clone()),
                None => r,
            }
        })
        .route("/f/{form}/done", get(c::done))
        // 本人確認: to the provider, and back.
        .route("/f/{form}/identity", {
            let r = get(forms::verify::start);
            match &submits {
                Some(l) => r.layer(l.clone()),
                None => r,
            }
        })
        .route(identity::CALLBACK_PATH, get(forms::verify::callback))
        // 一時保存: a link mailed to go on later, on any device.
        .route("/f/{form}/save", {
            let r = get(forms::resume::save_form)
                .post(forms::resume::send_link)
                .layer::<_, std::convert::Infallible>(small_body());
            match &submits {
                Some(l) => r.layer(l.clone()),
                None => r,
            }
        })
        .route("/f/{form}/resume/{key}", {
            let r = get(forms::resume::link_page).post(forms::resume::take_up);
            match &submits {
                Some(l) => r.layer(l.clone()),
                None => r,
            }
        })
        .route(
            "/status",
            get(status::form)
                .post(status::lookup)
                .layer::<_, std::convert::Infallible>(small_body())
                .layer(lookups.clone()),
        )
        .route(
            "/status/withdraw",
            post(status::withdraw)
                .layer::<_, std::convert::Infallible>(small_body())
                .layer(lookups.clone()),
        )
        .route(
            "/my",
            get(mine::show)
                .post(mine::ask)
                .layer::<_, std::convert::Infallible>(small_body())
                .layer(lookups.clone()),
        )
        // The key (32 random bytes) is not guessed: no lookup quota.
        .route("/my/open/{key}", get(mine::link_page).post(mine::open))
        .route("/my/sign-out", post(mine::sign_out))
        .route(
            "/status/resubmit",
            post(status::resubmit)
                .layer::<_, std::convert::Infallible>(small_body())
                .layer(lookups),
        )
        // Staff: account
        .route("/admin", get(|| async { http::see_other("/admin/forms") }))
        .route(
            "/admin/login",
            get(s::login_form)
                .post(s::login)
                .layer::<_, std::convert::Infallible>(small_body()),
        )
        .route("/admin/logout", post(s::logout))
        .route("/admin/help", get(help::staff_manual))
        .route("/admin/help/training", get(help::training_text))
        .route("/admin/help/api", get(help::api_guide))
        .route(
            "/admin/setup/{token}",
            get(s::setup_form)
                .post(s::setup)
                .layer::<_, std::convert::Infallible>(small_body()),
        )
        .route("/admin/staff", get(s::staff_list).post(s::staff_add))
        .route("/admin/staff/{id}", post(s::staff_update))
        .route("/admin/departments", post(s::department_add))
        .route(
            "/admin/departments/{id}/contact",
            post(s::department_contact),
        )
        .route("/admin/contact", post(s::site_contact))
        .route("/admin/notice", post(s::site_notice))
        // Staff: form builder
        .route("/admin/forms", get(b::list).post(b::create))
        .route("/admin/forms/{id}", get(b::show))
        .route("/admin/forms/{id}/settings", post(b::save_settings))
        .route("/admin/forms/{id}/fields", post(b::add_field))
        .route(
            "/admin/forms/{id}/fields/{field}",
            get(b::edit_field).post(b::save_field),
        )
        .route("/admin/forms/{id}/fields/{field}/move", post(b::move_field))
        .route("/admin/forms/{id}/pages", post(b::pages))
        .route("/admin/forms/{id}/publish", post(b::publish))
        .route("/admin/forms/{id}/close", post(b::close))
        .route("/admin/forms/{id}/duplicate", post(b::duplicate))
        .route("/admin/forms/{id}/export", get(b::export))
        // A definition may be 512 KB of JSON; sent url-encoded, Japanese text takes
        // up to 9 bytes a character.
        .route(
            "/admin/forms/{id}/import",
            post(b::import).layer::<_, std::convert::Infallible>(
                axum::extract::DefaultBodyLimit::max(forms::definition::MAX_DOCUMENT * 10),
            ),
        )
        .route("/admin/forms/{id}/preview", get(b::preview_page))
        .route("/admin/forms/{id}/qr", get(b::qr))
        .route(
            "/admin/forms/{id}/proxy",
            get(forms::proxy::show).post(forms::proxy::post),
        )
        .route("/admin/forms/{id}/totals", get(cases::totals::show))
        .route("/admin/forms/{id}/totals.csv", get(cases::totals::csv))
        // Staff: cases
        .route("/admin/inbox", get(cases::pages::inbox))
        .route("/admin/inbox/bulk", post(cases::pages::bulk))
        .route("/admin/export.csv", get(cases::export::csv_export))
        .route("/admin/export.xlsx", get(cases::export::xlsx_export))
        .route("/admin/export.zip", get(cases::export::zip_export))
        .route("/admin/submissions/{id}", get(cases::pages::detail))
        .route(
            "/admin/submissions/{id}/status",
            post(cases::pages::set_status),
        )
        .route("/admin/submissions/{id}/assign", post(cases::pages::assign))
        .route("/admin/submissions/{id}/delete", post(cases::pages::delete))
        .route(
            "/admin/submissions/{id}/files/{file}",
            get(cases::pages::attachment),
        )
        .route(
            "/admin/submissions/{id}/notes",
            post(cases::pages::add_note),
        )
        .route(
            "/admin/access",
            get(admin::access::show).post(admin::access::save),
        )
        .route("/admin/access/totp", post(admin::access::save_totp))
        .route("/admin/audit", get(audit::pages::list))
        .route(
            "/admin/api-tokens",
            get(api::tokens::list).post(api::tokens::add),
        )
        .route("/admin/api-tokens/{id}/revoke", post(api::tokens::revoke))
        .route(
            "/admin/identity",
            get(identity::admin::show)
                .post(identity::admin::save)
                .layer::<_, std::convert::Infallible>(small_body()),
        )
        .route(
            "/admin/identity/remove",
            post(identity::admin::remove).layer::<_, std::convert::Infallible>(small_body()),
        )
        .route("/admin/audit.csv", get(audit::pages::csv))
        .route("/admin/audit/retention", post(audit::pages::set_retention))
        .merge(api::router())
        .layer(axum::extract::DefaultBodyLimit::max(http::MAX_FORM_BODY))
        .layer(axum::middleware::from_fn(admin::access::guard))
        .layer(axum::middleware::from_fn(admin::access::embed_headers))
        .layer(axum::middleware::from_fn(no_store))
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/api/") {
                axum::response::IntoResponse::into_response(api::not_found())
            } else {
                axum::response::IntoResponse::into_response(AppError::NotFound)
            }
        })
}

/// Every municipality page is someone's: a case with its answers, a citizen's form
/// with what they typed, a setup page with its TOTP secret. None is kept by the
/// browser (a shared counter PC's Back button after sign-out, its disk cache), unless
/// the handler said otherwise.
async fn no_store(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    resp
}
