//! [`Decisions`]: what a global stage decided, by record position, in compact form.
//!
//! Global stages decide the same thing about many records: every copy of one text is "a
//! duplicate of X", every record of a split is "tag split=train", every selected record of a
//! pool is "tag mix_pool=general". So a decision is stored once, in a table, and each position
//! holds only its index into it: 16 bytes per decided position, plus one [`Decision`] (its
//! strings) per distinct decision. 2M copies of one record cost 32 MB, not the 812 MB of a map
//! holding a reason per copy (#18).

use crate::sample::DropReason;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// What a global stage decides about one record position: tags to add, and whether to drop it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Decision {
    /// Drop the record, saying why.
    pub drop: Option<DropReason>,
    /// Tags to set on the record (kept or dropped), e.g. a cluster id.
    pub tags: Vec<(String, String)>,
    /// Extra copies of a kept record to write (upsampling by a mix).
    pub repeat: u32,
}

impl Decision {
    /// A plain drop.
    pub fn drop(reason: DropReason) -> Decision {
        Decision {
            drop: Some(reason),
            tags: Vec::new(),
            repeat: 0,
        }
    }
}

/// Decisions of a global stage by record position; positions without one are plain keeps.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// (position, index into `table`), ascending by position once sealed.
    at: Vec<(u64, u32)>,
    /// Distinct decisions.
    table: Vec<Decision>,
    /// Hash of a decision → its index in `table` (the first with that hash).
    index: HashMap<u64, u32>,
    /// Whether `at` is ascending with unique positions.
    sorted: bool,
}

fn hash_of(d: &Decision) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    d.hash(&mut h);
    h.finish()
}

impl Decisions {
    /// No decisions.
    pub fn new() -> Decisions {
        Decisions {
            sorted: true,
            ..Default::default()
        }
    }

    /// Decide about `pos`; a later decision about the same position replaces an earlier one.
    pub fn insert(&mut self, pos: u64, decision: Decision) {
        let idx = self.intern(decision);
        if self.at.last().is_some_and(|&(last, _)| last >= pos) {
            self.sorted = false;
        }
        self.at.push((pos, idx));
    }

    /// Sort by position (the last decision about a position wins) and release spare capacity.
    /// Stages call it before looking decisions up; collecting into `Decisions` seals.
    pub fn seal(&mut self) {
        if !self.sorted {
            sort_last_wins(&mut self.at);
            self.sorted = true;
        }
        self.at.shrink_to_fit();
    }

    /// Every partition's decisions as one (each distinct decision stored once).
    pub fn merge(parts: Vec<Decisions>) -> Decisions {
        let mut out = Decisions::new();
        for part in parts {
            let mut map = Vec::with_capacity(part.table.len());
            for d in part.table {
                map.push(out.intern(d));
            }
            out.sorted &= part.sorted
                && match (out.at.last(), part.at.first()) {
                    (Some(a), Some(b)) => a.0 < b.0,
                    _ => true,
                };
            out.at.reserve(part.at.len());
            out.at
                .extend(part.at.into_iter().map(|(p, i)| (p, map[i as usize])));
        }
        out.seal();
        out
    }

    /// The decisions about positions from `offset` on, moved down by `offset` (the records
    /// before it are an earlier run's).
    pub fn shifted(self, offset: u64) -> Decisions {
        self.within(offset..u64::MAX)
    }

    /// The decisions about positions in `range`, moved down by its start (one task's share).
    pub fn within(mut self, range: std::ops::Range<u64>) -> Decisions {
        self.seal();
        let start = self.at.partition_point(|&(p, _)| p < range.start);
        let end = self.at.partition_point(|&(p, _)| p < range.end);
        self.at.truncate(end);
        self.at.drain(..start);
        for e in &mut self.at {
            e.0 -= range.start;
        }
        self.at.shrink_to_fit();
        self
    }

    /// The index of `decision` in the table, added when new.
    fn intern(&mut self, decision: Decision) -> u32 {
        let h = hash_of(&decision);
        match self.index.get(&h) {
            Some(&i) if self.table.get(i as usize) == Some(&decision) => i,
            found => {
                let i = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
                let new = found.is_none();
                self.table.push(decision);
                if new {
                    self.index.insert(h, i);
                }
                i
            }
        }
    }

    /// The decision about `pos`, if any.
    pub fn get(&self, pos: &u64) -> Option<&Decision> {
        let i = if self.sorted {
            self.at.binary_search_by_key(pos, |&(p, _)| p).ok()?
        } else {
            // Not sealed yet: the last decision about `pos` (slow, but right).
            self.at.iter().rposition(|&(p, _)| p == *pos)?
        };
        self.table.get(self.at[i].1 as usize)
    }

    /// How many positions have a decision.
    pub fn len(&self) -> usize {
        if self.sorted {
            self.at.len()
        } else {
            self.iter().count()
        }
    }

    /// Whether no position has a decision.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// How many distinct decisions are stored.
    pub fn distinct(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes held (positions, table entries, index; not the strings inside decisions).
    pub fn heap_bytes(&self) -> usize {
        self.at.capacity() * std::mem::size_of::<(u64, u32)>()
            + self.table.capacity() * std::mem::size_of::<Decision>()
            + self.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }

    /// (position, table index) in position order, the last per position: `at` itself once
    /// sealed, else a sorted copy of it.
    fn ordered(&self) -> std::borrow::Cow<'_, [(u64, u32)]> {
        if self.sorted {
            std::borrow::Cow::Borrowed(&self.at)
        } else {
            let mut at = self.at.clone();
            sort_last_wins(&mut at);
            std::borrow::Cow::Owned(at)
        }
    }

    /// (position, decision) in position order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (u64, &Decision)> + '_> {
        let table = &self.table;
        let look = move |&(p, i): &(u64, u32)| table.get(i as usize).map(|d| (p, d));
        match self.ordered() {
            std::borrow::Cow::Borrowed(at) => Box::new(at.iter().filter_map(look)),
            std::borrow::Cow::Owned(at) => Box::new(at.into_iter().filter_map(move |e| look(&e))),
        }
    }

    /// The decided positions, ascending.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(p, _)| p)
    }

    /// The decisions in position order.
    pub fn values(&self) -> impl Iterator<Item = &Decision> + '_ {
        self.iter().map(|(_, d)| d)
    }
}

/// Sort entries by position, keeping the last entry per position.
fn sort_last_wins(at: &mut Vec<(u64, u32)>) {
    // Stable: equal positions keep insertion order, and the last one is kept.
    at.sort_by_key(|&(pos, _)| pos);
    let mut out: Vec<(u64, u32)> = Vec::with_capacity(at.len());
    for e in at.drain(..) {
        match out.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => out.push(e),
        }
    }
    *at = out;
}

/// Decisions that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not the JSON [`Decisions::to_json`] writes.
    #[error("unreadable decisions: {0}")]
    Json(#[from] serde_json::Error),
    /// A position that points past the table of decisions.
    #[error("unreadable decisions: index {index} past the table of {len}")]
    Index {
        /// The index found.
        index: u32,
        /// The table's length.
        len: usize,
    },
}

/// A decision as JSON: `[code, detail, duplicate_of, tags, repeat]`.
type Row = (
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<(String, String)>,
    u32,
);

/// The exchange form between tasks: the distinct decisions once, then `[position, index]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    table: Vec<Row>,
    at: Vec<(u64, u32)>,
}

impl Decisions {
    /// The largest repeat count of any decision (0 when none upsamples).
    pub fn max_repeat(&self) -> u32 {
        self.table.iter().map(|d| d.repeat).max().unwrap_or(0)
    }

    /// As JSON, each distinct decision once (what task 0 hands the other tasks).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let table = self
            .table
            .iter()
            .map(|d| {
                (
                    d.drop.as_ref().map(|r| r.code.to_string()),
                    d.drop.as_ref().and_then(|r| r.detail.clone()),
                    d.drop.as_ref().and_then(|r| r.duplicate_of.clone()),
                    d.tags.clone(),
                    d.repeat,
                )
            })
            .collect();
        serde_json::to_vec(&Wire {
            table,
            at: self.ordered().into_owned(),
        })
    }

    /// Read [`Decisions::to_json`] back.
    pub fn from_json(bytes: &[u8]) -> Result<Decisions, DecodeError> {
        let w: Wire = serde_json::from_slice(bytes)?;
        let table: Vec<Decision> = w
            .table
            .into_iter()
            .map(|(code, detail, duplicate_of, tags, repeat)| Decision {
                drop: code.map(|c| DropReason {
                    code: crate::sample::intern_code(&c),
                    detail,
                    duplicate_of,
                }),
                tags,
                repeat,
            })
            .collect();
        if let Some(&(_, i)) = w.at.iter().find(|&&(_, i)| i as usize >= table.len()) {
            return Err(DecodeError::Index {
                index: i,
                len: table.len(),
            });
        }
        let mut d = Decisions {
            at: w.at,
            table,
            index: HashMap::new(),
            sorted: false,
        };
        d.seal();
        Ok(d)
    }
}

impl PartialEq for Decisions {
    fn eq(&self, other: &Decisions) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Decisions {}

impl FromIterator<(u64, Decision)> for Decisions {
    fn from_iter<I: IntoIterator<Item = (u64, Decision)>>(iter: I) -> Decisions {
        let mut d = Decisions::new();
        d.extend(iter);
        d.seal();
        d
    }
}

impl Extend<(u64, Decision)> for Decisions {
    fn extend<I: IntoIterator<Item = (u64, Decision)>>(&mut self, iter: I) {
        for (pos, decision) in iter {
            self.insert(pos, decision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(of: &str) -> Decision {
        Decision::drop(DropReason {
            code: "duplicate",
            detail: Some(format!("same as {of}")),
            duplicate_of: Some(of.to_string()),
        })
    }

    #[test]
    fn equal_decisions_are_stored_once_and_found_by_position() {
        let mut d = Decisions::new();
        for pos in (1..1000).rev() {
            d.insert(pos * 2, dup(if pos % 2 == 0 { "a" } else { "b" }));
        }
        assert_eq!(d.distinct(), 2);
        assert!(d.get(&4).is_some_and(|x| *x == dup("a")));
        d.seal();
        assert_eq!(d.len(), 999);
        assert_eq!(d.get(&4), Some(&dup("a")));
        assert_eq!(d.get(&6), Some(&dup("b")));
        assert_eq!(d.get(&5), None);
        assert_eq!(d.keys().next(), Some(2));
        assert!(d.keys().zip(d.keys().skip(1)).all(|(a, b)| a < b));
    }

    #[test]
    fn the_last_decision_about_a_position_wins() {
        let mut d = Decisions::new();
        d.insert(3, dup("a"));
        d.insert(1, dup("b"));
        d.insert(3, dup("c"));
        assert_eq!(d.get(&3), Some(&dup("c")));
        assert_eq!(d.len(), 2);
        let pairs: Vec<(u64, Decision)> = d.iter().map(|(p, x)| (p, x.clone())).collect();
        assert_eq!(pairs, vec![(1, dup("b")), (3, dup("c"))]);
        d.seal();
        assert_eq!(d.get(&3), Some(&dup("c")));
        let again: Decisions = pairs.into_iter().collect();
        assert_eq!(again, d);
        assert_eq!(
            Decisions::from_json(&d.to_json().expect("json")).expect("back"),
            d.clone()
        );
        let mut other = Decisions::new();
        other.insert(7, dup("a"));
        other.insert(5, dup("z"));
        let merged = Decisions::merge(vec![d.clone(), other]);
        assert_eq!(merged.distinct(), 4);
        assert_eq!(
            merged
                .iter()
                .map(|(p, x)| (p, x.clone()))
                .collect::<Vec<_>>(),
            vec![(1, dup("b")), (3, dup("c")), (5, dup("z")), (7, dup("a"))]
        );
        let shifted = merged.shifted(3);
        assert_eq!(shifted.keys().collect::<Vec<_>>(), vec![0, 2, 4]);
        assert_eq!(shifted.get(&2), Some(&dup("z")));
        assert!(matches!(
            Decisions::from_json(br#"{"table":[],"at":[[1,0]]}"#),
            Err(DecodeError::Index { index: 0, len: 0 })
        ));
    }

    #[test]
    fn a_duplicate_costs_sixteen_bytes_of_position() {
        let mut d = Decisions::new();
        for pos in 0..100_000 {
            d.insert(pos, dup("kept"));
        }
        d.seal();
        assert_eq!(d.distinct(), 1);
        assert!(d.heap_bytes() <= 100_000 * 16 + 1024, "{}", d.heap_bytes());
    }
}
