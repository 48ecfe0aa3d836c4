//! Published definitions kept in memory.
//!
//! A published version never changes, so the form page and submit read only the
//! form's row and take the parsed definition from here. One store serves every
//! municipality of the process. It is bounded by weight (each definition weighs
//! its stored JSON's length in bytes), not by a count: a town's two-field survey
//! and a prefecture's 200-field application do not cost the same. When full it
//! evicts by quick_cache's S3-FIFO policy: a definition asked for once goes before
//! those asked for again, so one municipality walking through all its forms once
//! does not push out the forms the others are busy with, and nothing is dropped
//! all at once.

use std::sync::Arc;

use uuid::Uuid;

use super::definition::FormDefinition;

/// Which definition: the municipality, the form and its published version.
pub type Key = (Uuid, i64, i32);

/// The store's budget: the sum of the kept definitions' JSON lengths. Parsed, a
/// definition takes about three times its JSON in memory (the benchmark's ten-field
/// form: 1,668 bytes of JSON, 5.5 KB resident), so this keeps the server's share
/// near 100 MiB: some 18,000 ten-field forms, ten for each of 1,788 municipalities.
pub const BUDGET_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<Key, Kept> for ByLength {
    fn weight(&self, _key: &Key, kept: &Kept) -> u64 {
        kept.weight.max(1)
    }
}

#[derive(Clone)]
struct Kept {
    def: Arc<FormDefinition>,
    weight: u64,
}

pub struct Definitions {
    kept: quick_cache::sync::Cache<Key, Kept, ByLength>,
    /// Asked for and not kept (then read from the database): a steady rate of
    /// these says the budget is too small for the forms in use.
    missed: prometheus_client::metrics::counter::Counter,
    budget: u64,
}

impl Definitions {
    /// A store holding at most `budget` bytes of definitions.
    pub fn new(budget: u64) -> Self {
        // quick_cache sizes its tables by an item estimate; 4 KB is about a
        // ten-field form's stored JSON with room to spare.
        let items = usize::try_from(budget / 4096).unwrap_or(usize::MAX).max(16);
        Self {
            kept: quick_cache::sync::Cache::with_weighter(items, budget, ByLength),
            missed: Default::default(),
            budget,
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<FormDefinition>> {
        let def = self.kept.get(key).map(|k| k.def);
        if def.is_none() {
            self.missed.inc();
        }
        def
    }

    /// Keeps `def`, weighing `json_bytes`. A definition heavier than the store's
    /// share for it is not kept (it is read from the database each time).
    pub fn insert(&self, key: Key, def: Arc<FormDefinition>, json_bytes: u64) {
        self.kept.insert(
            key,
            Kept {
                def,
                weight: json_bytes,
            },
        );
    }

    /// Drops every municipality's definitions that `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&Uuid) -> bool) {
        self.kept.retain(|(tenant, _, _), _| keep(tenant));
    }

    /// How many of `tenant`'s definitions are kept.
    pub fn count(&self, tenant: &Uuid) -> usize {
        self.kept
            .iter()
            .filter(|((t, _, _), _)| t == tenant)
            .count()
    }

    /// The kept definitions' weight in bytes.
    pub fn weight(&self) -> u64 {
        self.kept.weight()
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// How many times a definition asked for was not kept.
    pub fn missed(&self) -> &prometheus_client::metrics::counter::Counter {
        &self.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Arc<FormDefinition> {
        match FormDefinition::from_json(include_str!("../../../ops/bench/ten-fields.json")) {
            Ok(d) => Arc::new(d),
            Err(problems) => panic!("the benchmark's form: {}", problems.len()),
        }
    }

    #[test]
    fn stays_within_its_budget_and_keeps_the_busy_forms_through_a_scan() {
        let store = Definitions::new(256 * 1024);
        let def = def();
        let busy = Uuid::from_u128(1);
        // One municipality's ten forms, asked for again and again.
        for round in 0..5 {
            for form in 0..10 {
                let key = (busy, form, 1);
                if store.get(&key).is_none() {
                    assert_eq!(round, 0, "form {form} was dropped while busy");
                    store.insert(key, Arc::clone(&def), 2048);
                }
            }
        }
        // Other municipalities' forms, each asked for once: far more than fit.
        for tenant in 2..200u128 {
            for form in 0..10 {
                store.insert((Uuid::from_u128(tenant), form, 1), Arc::clone(&def), 2048);
            }
            // Meanwhile the busy municipality goes on being asked.
            for form in 0..10 {
                assert!(
                    store.get(&(busy, form, 1)).is_some(),
                    "form {form} pushed out by municipality {tenant}'s walk"
                );
            }
        }
        assert!(store.weight() <= 256 * 1024, "{}", store.weight());
        assert_eq!(store.count(&busy), 10);
        // Dropping a municipality leaves the others.
        store.retain(|t| *t != busy);
        assert_eq!(store.count(&busy), 0);
        assert!(store.count(&Uuid::from_u128(199)) > 0);
    }

    #[test]
    fn a_definition_heavier_than_the_store_is_not_kept() {
        let store = Definitions::new(64 * 1024);
        store.insert((Uuid::from_u128(1), 1, 1), def(), 1024 * 1024);
        assert!(store.get(&(Uuid::from_u128(1), 1, 1)).is_none());
        assert_eq!(store.weight(), 0);
        assert_eq!(store.missed().get(), 1);
    }
}
