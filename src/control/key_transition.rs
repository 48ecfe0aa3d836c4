//! Signed key transitions: when the platform key or the log key is replaced, a
//! statement naming the old and the new key, with the time, is signed by **both**
//! keys (a C2SP signed note with two signature lines) and kept in the catalog.
//! Certificate files carry these statements, so a certificate signed by a newer key
//! verifies against the key an auditor was handed before, and an old one against the
//! newest key, without asking the service.
//!
//! ```text
//! madoguchi key transition
//! platform
//! madoguchi-platform+1a2b3c4d+AQ…   (the key replaced)
//! madoguchi-platform+5e6f7a8b+AQ…   (the key replacing it)
//! 2026-11-29T05:00:00Z
//! log madoguchi.erasure-log+… 42     (platform key only: the log key then, and its size)
//!
//! — madoguchi-platform …
//! — madoguchi-platform …
//! ```
//!
//! A trusted key vouches for its successors one by one, or for its predecessors one
//! by one, never for a mix: whoever obtained a replaced key can sign a transition from
//! it to a key of their own, and that key is then reached only from the replaced key,
//! not from the key that replaced it.
//!
//! Going back is bound to the log: whoever obtained a replaced platform key could
//! sign new certificates with it, so a certificate signed by a key the trusted one
//! replaced counts only if it is in the log before the trusted key took over (its
//! index below the size its transition names), proved under a checkpoint signed by
//! the log key that transition names or one that replaced it. Going forward (an
//! auditor holding an older key) has no such bound: after a leak, auditors hold the
//! new key instead.

use crate::crypto::note::{sign_note_by, NoteSigner, NoteVerifier};

pub const HEADER: &str = "madoguchi key transition";

/// Which signing key a transition is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `platform.key`: co-signs erasure certificates.
    Platform,
    /// `tlog.key`: signs the erasure log's checkpoints.
    Log,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Log => "log",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "platform" => Some(Role::Platform),
            "log" => Some(Role::Log),
            _ => None,
        }
    }
}

/// One verified transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub role: Role,
    /// The replaced key, verifier form.
    pub from: String,
    /// The key replacing it, verifier form.
    pub to: String,
    /// When (RFC 3339).
    pub at: String,
    /// Of the platform key: the log key (verifier form) and the log's size when the
    /// new key took over.
    pub log: Option<(String, u64)>,
}

impl Transition {
    /// The statement's text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{HEADER}\n{}\n{}\n{}\n{}\n",
            self.role.as_str(),
            self.from,
            self.to,
            self.at
        );
        if let Some((key, size)) = &self.log {
            text.push_str(&format!("log {key} {size}\n"));
        }
        text
    }

    /// The statement signed by the old key and the new one.
    pub fn sign(&self, old: &NoteSigner, new: &NoteSigner) -> anyhow::Result<String> {
        anyhow::ensure!(
            same_key(&old.verifier_key(), &self.from) && same_key(&new.verifier_key(), &self.to),
            "the keys signing a transition must be the ones it names"
        );
        anyhow::ensure!(
            (self.role == Role::Platform) == self.log.is_some(),
            "a platform key's transition names the log, a log key's does not"
        );
        sign_note_by(&self.text(), &[old, new]).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Reads a statement; `None` unless both keys it names signed it.
    pub fn open(note: &str) -> Option<Self> {
        let split = note.rfind("\n\n")?;
        let text = &note[..=split];
        let lines: Vec<&str> = text.lines().collect();
        let (role, from, to, at, log) = match lines[..] {
            [HEADER, role, from, to, at] => (role, from, to, at, None),
            [HEADER, role, from, to, at, log] => {
                let mut parts = log.split(' ');
                let (Some("log"), Some(key), Some(size), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                NoteVerifier::parse(key).ok()?;
                (
                    role,
                    from,
                    to,
                    at,
                    Some((key.to_owned(), size.parse().ok()?)),
                )
            }
            _ => return None,
        };
        let role = Role::parse(role)?;
        if (role == Role::Platform) != log.is_some() || same_key(from, to) {
            return None;
        }
        let t = Transition {
            role,
            from: from.to_owned(),
            to: to.to_owned(),
            at: at.to_owned(),
            log,
        };
        for key in [from, to] {
            if NoteVerifier::parse(key).ok()?.open(note).ok()? != text {
                return None;
            }
        }
        Some(t)
    }
}

/// Two verifier keys are the same key (name and public key), however written.
pub fn same_key(a: &str, b: &str) -> bool {
    match (NoteVerifier::parse(a), NoteVerifier::parse(b)) {
        (Ok(a), Ok(b)) => a.name == b.name && a.public_bytes() == b.public_bytes(),
        _ => false,
    }
}

/// A key reached from a trusted one, and through how many transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    pub key: String,
    pub hops: usize,
    /// Reached through predecessors (the key was replaced before the trusted one).
    pub earlier: bool,
}

/// The keys `trusted` vouches for through `role`'s transitions: itself, every key
/// reached by following replacements forward, and every key reached backward.
pub fn vouched(trusted: &str, role: Role, transitions: &[Transition]) -> Vec<Vouched> {
    let mut out = vec![Vouched {
        key: trusted.trim().to_owned(),
        hops: 0,
        earlier: false,
    }];
    for earlier in [false, true] {
        let mut frontier = vec![(trusted.trim().to_owned(), 0usize)];
        while let Some((key, hops)) = frontier.pop() {
            for t in transitions.iter().filter(|t| t.role == role) {
                let (here, next) = if earlier {
                    (&t.to, &t.from)
                } else {
                    (&t.from, &t.to)
                };
                if same_key(here, &key) && !out.iter().any(|v| same_key(&v.key, next)) {
                    out.push(Vouched {
                        key: next.clone(),
                        hops: hops + 1,
                        earlier,
                    });
                    frontier.push((next.clone(), hops + 1));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NoteSigner {
        NoteSigner::generate("madoguchi-platform").unwrap_or_else(|e| panic!("{e}"))
    }

    fn step(old: &NoteSigner, new: &NoteSigner) -> (Transition, String) {
        let log = NoteSigner::generate("madoguchi.erasure-log").unwrap_or_else(|e| panic!("{e}"));
        let t = Transition {
            role: Role::Platform,
            from: old.verifier_key(),
            to: new.verifier_key(),
            at: "2026-11-29T05:00:00Z".into(),
            log: Some((log.verifier_key(), 42)),
        };
        let note = t.sign(old, new).unwrap_or_else(|e| panic!("{e}"));
        (t, note)
    }

    #[test]
    fn a_transition_needs_both_signatures() {
        let (a, b) = (key(), key());
        let (t, note) = step(&a, &b);
        assert_eq!(Transition::open(&note), Some(t.clone()));
        // One signature line only (either key's): refused.
        let lines: Vec<&str> = note.lines().collect();
        let body = note.rsplit_once("\n\n").map(|(b, _)| b).unwrap_or_default();
        for keep in [lines[lines.len() - 2], lines[lines.len() - 1]] {
            assert_eq!(Transition::open(&format!("{body}\n\n{keep}\n")), None);
        }
        // Another time, another role, the keys swapped: refused.
        assert_eq!(
            Transition::open(&note.replace("05:00:00Z", "06:00:00Z")),
            None
        );
        assert_eq!(
            Transition::open(&note.replace("\nplatform\n", "\nlog\n")),
            None
        );
        assert_eq!(Transition::open(&note.replace(" 42\n", " 43\n")), None);
        // A platform key's transition names the log; a log key's does not.
        assert!(Transition {
            log: None,
            ..t.clone()
        }
        .sign(&a, &b)
        .is_err());
        assert!(Transition {
            role: Role::Log,
            ..t.clone()
        }
        .sign(&a, &b)
        .is_err());
        let swapped = Transition {
            from: t.to.clone(),
            to: t.from.clone(),
            ..t.clone()
        };
        assert_eq!(
            Transition::open(&format!("{}{}", swapped.text(), &note[t.text().len()..])),
            None
        );
        // Signed by keys other than those it names: not made.
        assert!(t.sign(&b, &a).is_err());
    }

    #[test]
    fn a_trusted_key_vouches_one_way_only() {
        let (a, b, c) = (key(), key(), key());
        let (ab, _) = step(&a, &b);
        let (bc, _) = step(&b, &c);
        // Someone holding the replaced key `a` makes a key of their own.
        let mallory = key();
        let (am, _) = step(&a, &mallory);
        let all = [ab, bc, am];
        let keys = |trusted: &NoteSigner| -> Vec<(String, usize, bool)> {
            vouched(&trusted.verifier_key(), Role::Platform, &all)
                .into_iter()
                .map(|v| (v.key, v.hops, v.earlier))
                .collect()
        };
        // From the newest key: back to b and a, never to mallory's.
        let from_c = keys(&c);
        assert!(from_c.contains(&(b.verifier_key(), 1, true)));
        assert!(from_c.contains(&(a.verifier_key(), 2, true)));
        assert!(!from_c.iter().any(|k| k.0 == mallory.verifier_key()));
        // From b: forward to c, back to a; not to mallory's.
        let from_b = keys(&b);
        assert!(from_b.contains(&(c.verifier_key(), 1, false)));
        assert!(from_b.contains(&(a.verifier_key(), 1, true)));
        assert!(!from_b.iter().any(|k| k.0 == mallory.verifier_key()));
        // From the replaced key a, both successors are reached (why a leaked key is
        // handed out again: see ops/runbooks/keys.md).
        let from_a = keys(&a);
        assert!(from_a.contains(&(c.verifier_key(), 2, false)));
        assert!(from_a.contains(&(mallory.verifier_key(), 1, false)));
        // Transitions of the other role do not count.
        let log = all
            .iter()
            .map(|t| Transition {
                role: Role::Log,
                log: None,
                ..t.clone()
            })
            .collect::<Vec<_>>();
        assert_eq!(vouched(&c.verifier_key(), Role::Platform, &log).len(), 1);
    }
}
