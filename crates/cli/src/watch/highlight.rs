//! Which cells of the watch view changed recently: a pure map from cell key ("b1/status",
//! "demo-0/leo/2") to its last value and the time it last changed, so the TUI can paint a
//! changed cell for a while and the eye finds what moved during a failover.
use std::collections::HashMap;

/// How long a changed cell stays highlighted.
pub const HIGHLIGHT_MS: i64 = 2_000;

#[derive(Debug, Default)]
pub struct Highlights {
    values: HashMap<String, String>,
    changed_at_ms: HashMap<String, i64>,
}

impl Highlights {
    /// Records this refresh's cell values. Cells seen for the first time are not "changed"
    /// (the first screen would otherwise be all yellow).
    pub fn update(&mut self, now_ms: i64, cells: impl IntoIterator<Item = (String, String)>) {
        for (key, value) in cells {
            match self.values.get(&key) {
                Some(old) if *old == value => {}
                Some(_) => {
                    self.changed_at_ms.insert(key.clone(), now_ms);
                    self.values.insert(key, value);
                }
                None => {
                    self.values.insert(key, value);
                }
            }
        }
        self.changed_at_ms.retain(|_, at| now_ms - *at < HIGHLIGHT_MS);
    }

    pub fn is_hot(&self, key: &str, now_ms: i64) -> bool {
        self.changed_at_ms.get(key).is_some_and(|at| now_ms - *at < HIGHLIGHT_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(leader: &str) -> Vec<(String, String)> {
        vec![("demo-0/leader".into(), leader.into()), ("demo-0/epoch".into(), "0".into())]
    }

    #[test]
    fn a_changed_cell_is_hot_for_two_seconds_and_new_cells_are_not() {
        let mut h = Highlights::default();
        h.update(0, cells("1"));
        assert!(!h.is_hot("demo-0/leader", 0));
        h.update(250, cells("2"));
        assert!(h.is_hot("demo-0/leader", 250));
        assert!(!h.is_hot("demo-0/epoch", 250));
        h.update(500, cells("2"));
        assert!(h.is_hot("demo-0/leader", 2_249));
        h.update(2_250, cells("2"));
        assert!(!h.is_hot("demo-0/leader", 2_250));
    }
}
