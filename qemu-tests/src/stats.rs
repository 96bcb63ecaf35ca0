// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Parsing hyp-stub's stats block.

use std::collections::BTreeMap;

/// The `key=value` lines between `hyp-stub stats:` and `hyp-stub stats end`.
#[derive(Debug, Default, Clone)]
pub struct Stats(pub BTreeMap<String, String>);

impl Stats {
    /// Finds the last stats block in `console`.
    pub fn parse(console: &str) -> Option<Self> {
        let start = console.rfind("hyp-stub stats:\n")?;
        let body = &console[start + "hyp-stub stats:\n".len()..];
        let end = body.find("hyp-stub stats end")?;
        let mut map = BTreeMap::new();
        for line in body[..end].lines() {
            let (k, v) = line.trim().split_once('=')?;
            map.insert(k.to_string(), v.to_string());
        }
        Some(Self(map))
    }

    /// A numeric value (0 if absent).
    pub fn num(&self, key: &str) -> u64 {
        self.0.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// A text value.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Sum of the values of keys starting with `prefix`.
    pub fn sum(&self, prefix: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_block() {
        let console = "noise\nhyp-stub stats:\nexits_total=3\nexit_hvc=1\nexit_smc=2\ncall_0x80000000=1\nmmio_guard_policy=from-boot\nhyp-stub stats end\n";
        let s = Stats::parse(console).unwrap();
        assert_eq!(s.num("exits_total"), 3);
        assert_eq!(s.sum("exit_"), 3);
        assert_eq!(s.num("call_0x80000000"), 1);
        assert_eq!(s.text("mmio_guard_policy"), Some("from-boot"));
        assert!(
            Stats::parse("hyp-stub stats:\nx=1\n").is_none(),
            "unterminated"
        );
    }
}
