//! `--dry-run`: the change to a file as `diff -u` shows it, which `patch FILE` applies.

use super::file::Edit;

/// The unified diff of one edit (3 lines of context); empty when it changes nothing. A file made or removed is
/// shown against /dev/null.
pub fn unified(edit: &Edit) -> String {
    if !edit.changes() {
        return String::new();
    }
    let path = edit.path.display().to_string();
    let text = |b: &Option<Vec<u8>>| {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let (old, new) = (text(&edit.old), text(&edit.new));
    let old_name = match edit.old {
        Some(_) => path.clone(),
        None => "/dev/null".to_owned(),
    };
    let new_name = match edit.new {
        Some(_) => path,
        None => "/dev/null".to_owned(),
    };
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .missing_newline_hint(true)
        .header(&old_name, &new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn edit(old: Option<&str>, new: Option<&str>) -> Edit {
        Edit {
            path: PathBuf::from("/etc/x.toml"),
            old: old.map(|s| s.as_bytes().to_vec()),
            new: new.map(|s| s.as_bytes().to_vec()),
            backup: true,
        }
    }

    #[test]
    fn diffs_look_like_diff_u() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\ne\nf\ng\nX\nh\n";
        assert_eq!(
            unified(&edit(Some(old), Some(new))),
            "--- /etc/x.toml\n+++ /etc/x.toml\n@@ -5,4 +5,5 @@\n e\n f\n g\n+X\n h\n"
        );
        assert_eq!(
            unified(&edit(None, Some("a\n"))),
            "--- /dev/null\n+++ /etc/x.toml\n@@ -0,0 +1 @@\n+a\n"
        );
        assert_eq!(
            unified(&edit(Some("a\n"), None)),
            "--- /etc/x.toml\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n"
        );
        assert_eq!(
            unified(&edit(Some("a"), Some("a\nb\n"))),
            "--- /etc/x.toml\n+++ /etc/x.toml\n@@ -1 +1,2 @@\n-a\n\\ No newline at end of file\n+a\n+b\n"
        );
        assert_eq!(unified(&edit(Some("a\n"), Some("a\n"))), "");
    }
}
