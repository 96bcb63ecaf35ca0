// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `docs/benchmarks.md` is written by several commands (`bench`, `soak`,
//! `fuzz`); each owns one section, between `<!-- begin NAME -->` and
//! `<!-- end NAME -->`, and rewrites only that one.

use crate::paths;

const HEADER: &str = "<!-- SPDX-License-Identifier: GPL-2.0 OR MIT -->\n# Benchmarks\n\n\
Each section below is written by the `cargo xtask` command it names, which\n\
rewrites that section only. QEMU TCG on this machine; counts (exits,\n\
hypercalls, patches, executions) are deterministic, times are not.\n";

/// `text` with section `name` set to `body` (appended if absent).
fn with_section(text: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- begin {name} -->\n");
    let end = format!("<!-- end {name} -->\n");
    let section = format!("{begin}{}\n{end}", body.trim_end());
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &text[..b], &text[e + end.len()..])
        }
        _ => {
            let mut out = if text.trim().is_empty() {
                HEADER.to_string()
            } else {
                text.to_string()
            };
            if !out.ends_with("\n\n") {
                out.push('\n');
            }
            out + &section
        }
    }
}

/// Sets section `name` of `docs/benchmarks.md` to `body`.
///
/// # Errors
/// The file could not be read or written.
pub fn write_benchmarks_section(name: &str, body: &str) -> Result<(), String> {
    let path = paths::repo().join("docs/benchmarks.md");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    std::fs::write(&path, with_section(&text, name, body))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_and_others_kept() {
        let t = with_section("", "bench", "## Bench\nold");
        assert!(t.starts_with(HEADER));
        let t = with_section(&t, "soak", "## Soak\n1");
        let t = with_section(&t, "bench", "## Bench\nnew");
        assert!(t.contains("<!-- begin bench -->\n## Bench\nnew\n<!-- end bench -->\n"));
        assert!(!t.contains("old"));
        assert!(t.find("begin bench").unwrap() < t.find("begin soak").unwrap());
        assert_eq!(t.matches("# Benchmarks").count(), 1);
        let t2 = with_section(&t, "soak", "## Soak\n2");
        assert!(t2.contains("## Soak\n2\n") && !t2.contains("## Soak\n1"));
    }
}
