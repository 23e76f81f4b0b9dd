//! The membership key: what the Secret says, and what this speaker signs and accepts.
//!
//! The key authenticates every heartbeat, so losing it darkens every IP: a speaker without a
//! key hears nobody and has no quorum. The ring therefore keeps the last good key whatever
//! happens to the Secret:
//!
//! - **Deleted, emptied, or too short** (fewer than [`MIN_KEY_LEN`] octets: `openssl rand
//!   -base64 32` gives 44): the last good key stays in use; the problem is reported once, as a
//!   Warning Event and a metric, until a good key is seen again.
//! - **Rotated** (a new good key): both keys are accepted for the rotation window. For its
//!   first half this speaker still signs with the old key, so a peer whose watch has not
//!   delivered the new key yet still accepts it; then it signs with the new one, which every
//!   peer accepts by then (each accepts both from the moment it sees the new key). After the
//!   window only the new key is accepted.
//!
//! Pure: the caller passes the Secret's content and the time.

use std::time::{Duration, Instant};

use crate::decide::membership::admission::AcceptedKey;
use crate::decide::membership::datagram::{KEY_ID_LEN, key_id};

/// The shortest key accepted, in octets (HMAC-SHA256 wants at least its output's length).
pub const MIN_KEY_LEN: usize = 32;

/// What the Secret holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKey<'a> {
    /// No Secret, or no `secretkey` in it.
    Missing,
    /// The key's octets (possibly empty).
    Present(&'a [u8]),
}

/// Why the Secret's key is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyProblem {
    /// No Secret, or no `secretkey` in it.
    Missing,
    /// An empty key.
    Empty,
    /// Shorter than [`MIN_KEY_LEN`] (the length).
    TooShort(usize),
}

impl KeyProblem {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            KeyProblem::Missing => "missing",
            KeyProblem::Empty => "empty",
            KeyProblem::TooShort(_) => "too_short",
        }
    }

    /// The Event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyProblem::Missing => "MembershipKeyMissing",
            KeyProblem::Empty => "MembershipKeyEmpty",
            KeyProblem::TooShort(_) => "MembershipKeyTooShort",
        }
    }

    /// What the Event says, given whether a previous key is kept.
    pub fn note(&self, secret: &str, kept: bool) -> String {
        let what = match self {
            KeyProblem::Missing => {
                format!("the membership key Secret {secret} (key secretkey) is missing")
            }
            KeyProblem::Empty => format!("the membership key in Secret {secret} is empty"),
            KeyProblem::TooShort(n) => format!(
                "the membership key in Secret {secret} has {n} octets, fewer than {MIN_KEY_LEN}: refused"
            ),
        };
        if kept {
            format!("{what}; herald-speaker keeps using the last good key")
        } else {
            format!("{what}; herald-speaker has no key and answers for no IP until one is set")
        }
    }
}

/// What an observation of the Secret changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEvent {
    /// The first good key.
    Loaded,
    /// A new good key replaced the previous one, which is accepted for the window.
    Rotated,
    /// A problem appeared (reported once until a good key is seen again); `kept`: a previous
    /// key is still used.
    Problem {
        /// What is wrong.
        problem: KeyProblem,
        /// A good key is still in use.
        kept: bool,
    },
}

#[derive(Clone, Debug)]
struct Key {
    bytes: Vec<u8>,
    id: [u8; KEY_ID_LEN],
}

impl Key {
    fn new(bytes: &[u8]) -> Key {
        Key {
            bytes: bytes.to_vec(),
            id: key_id(bytes),
        }
    }
}

/// The keys held.
#[derive(Clone, Debug)]
pub struct KeyRing {
    window: Duration,
    current: Option<Key>,
    previous: Option<(Key, Instant)>,
    problem: Option<KeyProblem>,
}

impl KeyRing {
    /// No key yet; a rotation accepts the old key for `window`.
    pub fn new(window: Duration) -> KeyRing {
        KeyRing {
            window,
            current: None,
            previous: None,
            problem: None,
        }
    }

    /// Takes in what the Secret holds at `now`.
    pub fn observe(&mut self, secret: SecretKey<'_>, now: Instant) -> Option<KeyEvent> {
        let problem = match secret {
            SecretKey::Missing => Some(KeyProblem::Missing),
            SecretKey::Present([]) => Some(KeyProblem::Empty),
            SecretKey::Present(k) if k.len() < MIN_KEY_LEN => Some(KeyProblem::TooShort(k.len())),
            SecretKey::Present(_) => None,
        };
        if let Some(problem) = problem {
            if self.problem == Some(problem) {
                return None;
            }
            self.problem = Some(problem);
            return Some(KeyEvent::Problem {
                problem,
                kept: self.current.is_some(),
            });
        }
        self.problem = None;
        let SecretKey::Present(bytes) = secret else {
            return None;
        };
        match &self.current {
            Some(current) if current.bytes == bytes => None,
            Some(_) => {
                let old = self.current.replace(Key::new(bytes));
                self.previous = old.map(|k| (k, now));
                Some(KeyEvent::Rotated)
            }
            None => {
                self.current = Some(Key::new(bytes));
                Some(KeyEvent::Loaded)
            }
        }
    }

    /// Whether a key is held.
    pub fn is_keyed(&self) -> bool {
        self.current.is_some()
    }

    fn previous_within(&self, now: Instant, part: Duration) -> Option<&Key> {
        self.previous
            .as_ref()
            .filter(|(_, at)| now.saturating_duration_since(*at) < part)
            .map(|(k, _)| k)
    }

    /// The key to sign with at `now`: the old one for the first half of a rotation window.
    pub fn signing(&self, now: Instant) -> Option<&[u8]> {
        self.previous_within(now, self.window / 2)
            .or(self.current.as_ref())
            .map(|k| k.bytes.as_slice())
    }

    /// The keys accepted at `now`: the current one, and the previous one within the window.
    pub fn accepted(&self, now: Instant) -> Vec<AcceptedKey<'_>> {
        self.current
            .iter()
            .chain(self.previous_within(now, self.window))
            .map(|k| AcceptedKey {
                id: k.id,
                key: &k.bytes,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"first key, thirty-two octets....";
    const B: &[u8] = b"second key, thirty-two octets...";
    const WINDOW: Duration = Duration::from_secs(60);

    fn ids(ring: &KeyRing, now: Instant) -> Vec<[u8; KEY_ID_LEN]> {
        ring.accepted(now).iter().map(|k| k.id).collect()
    }

    #[test]
    fn the_last_good_key_survives_a_deleted_emptied_or_short_secret() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(WINDOW);
        assert!(!ring.is_keyed());
        assert_eq!(
            ring.observe(SecretKey::Missing, t0),
            Some(KeyEvent::Problem {
                problem: KeyProblem::Missing,
                kept: false
            })
        );
        assert_eq!(
            ring.observe(SecretKey::Present(A), t0),
            Some(KeyEvent::Loaded)
        );
        assert_eq!(ring.observe(SecretKey::Present(A), t0), None);
        for (secret, problem) in [
            (SecretKey::Missing, KeyProblem::Missing),
            (SecretKey::Present(b""), KeyProblem::Empty),
            (SecretKey::Present(b"short"), KeyProblem::TooShort(5)),
        ] {
            assert_eq!(
                ring.observe(secret, t0),
                Some(KeyEvent::Problem {
                    problem,
                    kept: true
                })
            );
            // Reported once, not on every look.
            assert_eq!(ring.observe(secret, t0), None);
            assert_eq!(ring.signing(t0), Some(A));
            assert_eq!(ids(&ring, t0), [key_id(A)]);
        }
        // 31 octets: still too short.
        let short = &B[..31];
        assert!(matches!(
            ring.observe(SecretKey::Present(short), t0),
            Some(KeyEvent::Problem {
                problem: KeyProblem::TooShort(31),
                ..
            })
        ));
        // The same key back: nothing changes, and a later problem is reported again.
        assert_eq!(ring.observe(SecretKey::Present(A), t0), None);
        assert!(ring.observe(SecretKey::Missing, t0).is_some());
    }

    #[test]
    fn a_rotation_signs_old_then_new_and_accepts_both_for_the_window() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(WINDOW);
        ring.observe(SecretKey::Present(A), t0);
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(
            ring.observe(SecretKey::Present(B), t1),
            Some(KeyEvent::Rotated)
        );
        // First half: sign with the old key (laggards accept it), accept both.
        assert_eq!(ring.signing(t1), Some(A));
        assert_eq!(ids(&ring, t1), [key_id(B), key_id(A)]);
        let half = t1 + WINDOW / 2;
        assert_eq!(ring.signing(half), Some(B));
        assert_eq!(ids(&ring, half), [key_id(B), key_id(A)]);
        let end = t1 + WINDOW;
        assert_eq!(ids(&ring, end), [key_id(B)]);
    }

    #[test]
    fn a_laggard_and_an_early_speaker_always_share_a_key() {
        // Speaker x sees the new key at t1, speaker y at t1 + lag (its watch is slower): at
        // every moment what one signs is accepted by the other, for any lag below half the
        // window.
        let t0 = Instant::now();
        for lag_s in [0u64, 1, 5, 29] {
            let (mut x, mut y) = (KeyRing::new(WINDOW), KeyRing::new(WINDOW));
            x.observe(SecretKey::Present(A), t0);
            y.observe(SecretKey::Present(A), t0);
            let t1 = t0 + Duration::from_secs(10);
            let lag = Duration::from_secs(lag_s);
            for s in 0..120u64 {
                let now = t1 + Duration::from_millis(s * 500);
                if now >= t1 {
                    x.observe(SecretKey::Present(B), t1.max(now.min(t1)));
                }
                if now >= t1 + lag {
                    y.observe(SecretKey::Present(B), t1 + lag);
                }
                for (from, to) in [(&x, &y), (&y, &x)] {
                    let signed = key_id(from.signing(now).unwrap());
                    assert!(
                        ids(to, now).contains(&signed),
                        "lag {lag_s} s, at {s}: not accepted"
                    );
                }
            }
        }
    }
}
