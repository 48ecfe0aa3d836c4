//! Declarative tenant manifests (`tenants/<slug>.toml`), applied idempotently:
//! a manifest applied twice changes nothing the second time.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::catalog::TenantState;
use crate::control::migrate::SchemaTarget;
use crate::control::provision::{provision_at, reconcile, TenantSpec};
use crate::platform::Platform;

/// The file format.
///
/// ```toml
/// slug = "chiyoda"
/// name = "千代田区"
/// code = "131016"
/// hosts = ["chiyoda.localhost"]
/// state = "active"        # optional: "active" or "suspended"; left out, a new
///                         # tenant is active and an existing one stays as it is
///                         # (a manifest never resumes a tenant suspended by hand)
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub slug: String,
    pub name: String,
    pub code: String,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// A training site (研修用): set when the tenant is created, never changed after.
    #[serde(default)]
    pub training: bool,
}

/// What applying one manifest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated(Vec<String>),
    Unchanged,
}

pub fn read(path: &Path) -> anyhow::Result<Manifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The manifests of a directory (every `*.toml`, sorted), or the one file given.
pub fn paths(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut out: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        out.sort();
        Ok(out)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// Creates the manifest's tenant (its schema at `schema`) or brings an existing one
/// in line with it (its schema is `migrate`'s business, not this).
pub async fn apply(p: &Platform, m: &Manifest, schema: SchemaTarget) -> anyhow::Result<Applied> {
    let mut spec = TenantSpec::parse(&m.slug, &m.name, &m.code, &m.hosts)?;
    spec.training = m.training;
    let wanted_state = match m.state.as_deref() {
        None => None,
        Some("active") => Some(TenantState::Active),
        Some("suspended") => Some(TenantState::Suspended),
        Some(other) => anyhow::bail!("state must be \"active\" or \"suspended\", not {other:?}"),
    };
    let existing = p.catalog.tenant_by_slug(spec.slug.as_str()).await?;
    let (rec, mut applied) = match existing {
        Some(rec)
            if matches!(
                rec.state,
                TenantState::Decommissioning | TenantState::Erased
            ) =>
        {
            anyhow::bail!(
                "tenant {} is {}; its manifest can no longer be applied",
                rec.slug,
                rec.state
            )
        }
        Some(rec) if rec.state != TenantState::Provisioning => {
            // A municipality's site never becomes a training site, whose applications
            // are deleted at every reset; nor the other way round.
            if rec.training != m.training {
                anyhow::bail!(
                    "テナント「{}」の training は作成時にだけ決められます（いまは {}） / tenant {}'s `training` is fixed when it is created (it is {})",
                    rec.slug,
                    rec.training,
                    rec.slug,
                    rec.training
                );
            }
            let changes = reconcile(p, &rec, &spec).await?;
            let applied = if changes.is_empty() {
                Applied::Unchanged
            } else {
                Applied::Updated(changes)
            };
            (rec, applied)
        }
        _ => (provision_at(p, &spec, schema).await?, Applied::Created),
    };
    let current = p
        .catalog
        .tenant_by_id(rec.id)
        .await?
        .context("tenant vanished")?;
    // Without a state, a new tenant is active (as provisioned) and an existing one
    // keeps its state: an operator's suspension is not undone by the manifests.
    let Some(wanted_state) = wanted_state else {
        return Ok(applied);
    };
    if current.state != wanted_state {
        let open = [TenantState::Active, TenantState::Suspended];
        if !crate::control::tenant_admin::move_state(p, &current, &open, wanted_state).await? {
            anyhow::bail!(
                "tenant {} changed state meanwhile (decommissioning?); its manifest was not applied",
                rec.slug
            );
        }
        let change = format!("state: {} -> {}", current.state, wanted_state);
        applied = match applied {
            Applied::Unchanged => Applied::Updated(vec![change]),
            Applied::Updated(mut v) => {
                v.push(change);
                Applied::Updated(v)
            }
            Applied::Created => Applied::Created,
        };
    }
    Ok(applied)
}
