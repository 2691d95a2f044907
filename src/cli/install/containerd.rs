//! containerd (and Kubernetes through it): a runtime handler in config.toml whose `BinaryName` is
//! `wg-oci-runtime` and whose `pod_annotations` and `container_annotations` pass `wg.*` through, edited in place
//! (toml_edit: every other byte of the file kept, comments included) for config versions 2 (containerd 1.3 and
//! later, 2.x too) and 3 (2.x). A version 1 file (no `version` key) is refused, a missing or empty one becomes a
//! version 2 file.
//!
//! A new handler starts as a copy of the default runtime's entry (`default_runtime_name`, else `runc`) when that
//! is runc.v2, as nvidia-ctk's is: its options (`SystemdCgroup`, which must match the kubelet's cgroup driver,
//! `Root`, ...) and settings hold for our containers too; keys at containerd's zero value (what `containerd
//! config default` writes for every key) are not copied. A handler of that name that is already ours gets our
//! keys set (anything else the operator added to it is kept); one that runs something else is refused.

use super::file::{self, Edit};
use std::path::{Path, PathBuf};
use toml_edit::{Array, DocumentMut, Item, Key, Table, Value};

const RUNC_V2: &str = "io.containerd.runc.v2";
const ANNOTATIONS: &str = "wg.*";
const ANNOTATION_KEYS: [&str; 2] = ["pod_annotations", "container_annotations"];

/// The CRI plugin's table of runtimes in a config of this version.
fn runtimes_path(version: i64) -> [&'static str; 4] {
    if version == 3 {
        [
            "plugins",
            "io.containerd.cri.v1.runtime",
            "containerd",
            "runtimes",
        ]
    } else {
        [
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
        ]
    }
}

/// A table's path as a TOML header shows it.
fn dotted(path: &[&str]) -> String {
    path.iter()
        .map(|k| Key::new(*k).display_repr().into_owned())
        .collect::<Vec<_>>()
        .join(".")
}

/// What an install or uninstall would do to config.toml.
#[derive(Debug)]
pub struct Change {
    pub edit: Edit,
    /// The file's config version (2 for a file this makes).
    pub version: i64,
    /// Install: whether a handler of that name was there (and is updated). Uninstall: whether there was one.
    pub existed: bool,
    /// Uninstall: the removed handler's `BinaryName`, when no other handler of the file runs it.
    pub freed_binary: Option<PathBuf>,
}

/// The document and its version; a missing file, or one with nothing in it but comments, is `None`'s version.
fn parse(path: &Path, old: Option<&[u8]>) -> Result<(DocumentMut, Option<i64>), String> {
    let shown = path.display();
    let text = match old {
        Some(bytes) => {
            std::str::from_utf8(bytes).map_err(|e| format!("{shown}: not UTF-8: {e}"))?
        }
        None => "",
    };
    let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let message = e.message().trim().replace('\n', "; ");
        match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("{shown}:{line}:{column}: {message}")
            }
            None => format!("{shown}: {message}"),
        }
    })?;
    // toml_edit keeps every byte of what it parses but a missing last newline, which it adds; should it ever
    // change more, nothing is edited.
    let kept = doc.to_string();
    if kept != text && kept.strip_suffix('\n') != Some(text) {
        return Err(format!(
            "{shown}: cannot be edited without changing lines other than the handler's; edit it by hand"
        ));
    }
    let version = match doc.get("version") {
        None if doc.as_table().is_empty() => None,
        None => {
            return Err(format!(
                "{shown}: no `version` key, so containerd reads it as config version 1, whose plugin names \
                 this does not edit: convert it to version 2 (containerd 1.3 and later) or 3 (containerd 2.x), \
                 then run this again"
            ))
        }
        Some(v) => match v.as_integer() {
            Some(v @ (2 | 3)) => Some(v),
            _ => {
                return Err(format!(
                    "{shown}: version = {}: this edits config versions 2 and 3",
                    v.to_string().trim()
                ))
            }
        },
    };
    Ok((doc, version))
}

/// The table at `path` under `root`; missing ones are made (implicit, so they show no header of their own) when
/// `create`, else None.
fn table_at<'a>(
    root: &'a mut Table,
    path: &[&str],
    create: bool,
    file: &Path,
) -> Result<Option<&'a mut Table>, String> {
    let mut table = root;
    for (i, key) in path.iter().enumerate() {
        if !table.contains_key(key) {
            if !create {
                return Ok(None);
            }
            let mut new = Table::new();
            new.set_implicit(true);
            table.insert(key, Item::Table(new));
        }
        table = match table.get_mut(key) {
            Some(Item::Table(t)) => t,
            _ => {
                return Err(format!(
                    "{}: {} is not a table of its own (an inline table or a value); make it [{0}] and run this \
                     again",
                    file.display(),
                    dotted(&path[..=i])
                ))
            }
        };
    }
    Ok(Some(table))
}

fn binary_of(entry: &Table) -> Option<&str> {
    entry
        .get("options")
        .and_then(Item::as_table_like)
        .and_then(|o| o.get("BinaryName"))
        .and_then(Item::as_str)
}

/// Whether a handler runs wg-oci-runtime (or a link to it named for a profile).
fn is_ours(entry: &Table) -> bool {
    binary_of(entry)
        .and_then(|b| Path::new(b).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "wg-oci-runtime" || n.starts_with(crate::runtime::BOUND_NAME_PREFIX))
}

fn refuse_foreign(file: &Path, name: &str, entry: &Table) -> String {
    format!(
        "{}: runtime handler {name:?} runs {}, not wg-oci-runtime: left alone; choose another --name",
        file.display(),
        binary_of(entry).map_or_else(|| "runc".to_owned(), |b| format!("{b:?}"))
    )
}

/// A value as a fresh one would be written (its comments and spacing are the entry it came from's).
fn plain(value: &Value) -> Value {
    let mut value = value.clone();
    value.decor_mut().clear();
    value
}

/// Whether a value is what containerd takes for a key that is not there (Go's zero value): `containerd config
/// default` writes every key so, and a copy of those says nothing.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.value().is_empty(),
        Value::Integer(i) => *i.value() == 0,
        Value::Boolean(b) => !*b.value(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// `[...]` with `wg.*` added to `array`'s patterns, if not there.
fn with_our_annotations(array: Option<&Array>) -> Array {
    let mut array = array.cloned().unwrap_or_default();
    if !array.iter().any(|v| v.as_str() == Some(ANNOTATIONS)) {
        array.push(ANNOTATIONS);
    }
    array
}

/// The blank lines before a decor's prefix's first comment (if any) and the indentation of its last line: how a
/// table or key is laid out, without the comments that were there.
fn layout(prefix: Option<&str>) -> (usize, String) {
    let prefix = prefix.unwrap_or_default();
    let newlines = prefix
        .split(|c: char| !c.is_whitespace())
        .next()
        .unwrap_or_default()
        .matches('\n')
        .count();
    let indent = prefix.rsplit('\n').next().unwrap_or_default();
    let indent = if indent.chars().all(|c| c == ' ' || c == '\t') {
        indent
    } else {
        ""
    };
    (newlines, indent.to_owned())
}

fn header_prefix(table: &Table) -> Option<&str> {
    table.decor().prefix().and_then(|p| p.as_str())
}

fn first_key_prefix(table: &Table) -> Option<String> {
    table
        .iter()
        .find(|(_, item)| item.is_value())
        .and_then(|(key, _)| {
            table
                .key(key)
                .and_then(|k| k.leaf_decor().prefix())
                .and_then(|p| p.as_str())
                .map(str::to_owned)
        })
}

/// Our handler, new: the default runtime's entry (`base`) copied when it is runc.v2, with our keys set; laid out
/// like `sibling` (an existing handler: the same indents, a blank line before if it has one).
fn new_entry(name: &str, base: Option<&Table>, sibling: Option<&Table>, binary: &str) -> Table {
    let base = base.filter(|b| b.get("runtime_type").and_then(Item::as_str) == Some(RUNC_V2));
    let mut entry = Table::new();
    entry.insert("runtime_type", toml_edit::value(RUNC_V2));
    for key in ANNOTATION_KEYS {
        let from = base.and_then(|b| b.get(key)).and_then(Item::as_array);
        entry.insert(key, toml_edit::value(with_our_annotations(from)));
    }
    let mut options = Table::new();
    options.insert("BinaryName", toml_edit::value(binary));
    for (key, item) in base.iter().flat_map(|b| b.iter()) {
        if entry.contains_key(key) {
            continue;
        }
        match (key, item) {
            (_, Item::Value(v)) if !v.is_inline_table() && !is_zero(v) => {
                entry.insert(key, Item::Value(plain(v)));
            }
            ("options", _) => {
                for (k, v) in item.as_table_like().into_iter().flat_map(|t| t.iter()) {
                    match v.as_value() {
                        Some(v) if !options.contains_key(k) && !is_zero(v) => {
                            options.insert(k, Item::Value(plain(v)));
                        }
                        _ => {}
                    }
                }
            }
            // Nothing else is a runc handler's; not copied.
            _ => {}
        }
    }

    // Laid out like the handlers beside it.
    let sibling_options = sibling
        .and_then(|s| s.get("options"))
        .and_then(Item::as_table);
    let (newlines, indent) = layout(sibling.and_then(header_prefix));
    let key_indent = sibling.and_then(first_key_prefix);
    let (options_newlines, options_indent) = match sibling_options {
        Some(o) => layout(header_prefix(o)),
        None => (newlines, indent.clone()),
    };
    let options_key_indent = sibling_options
        .and_then(first_key_prefix)
        .or(key_indent.clone());
    entry.decor_mut().set_prefix(format!(
        "{}{indent}# wg-oci-hook: pods of RuntimeClass handler {name:?} run through wg-oci-runtime\n{indent}",
        "\n".repeat(newlines.max(1))
    ));
    options
        .decor_mut()
        .set_prefix(format!("{}{options_indent}", "\n".repeat(options_newlines)));
    for (table, indent) in [(&mut entry, key_indent), (&mut options, options_key_indent)] {
        let keys: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
        for key in keys {
            if let (Some(mut k), Some(indent)) = (table.key_mut(&key), indent.as_deref()) {
                k.leaf_decor_mut().set_prefix(indent);
            }
        }
    }
    entry.insert("options", Item::Table(options));
    entry
}

/// The greatest position of a table in the document: where its last table is.
fn last_position(table: &Table) -> isize {
    table
        .iter()
        .filter_map(|(_, item)| item.as_table())
        .map(|t| t.position().unwrap_or(0).max(last_position(t)))
        .max()
        .unwrap_or(0)
}

/// Sets `key` to `value` in a table, keeping the comments and spacing around the value; whether it changed.
fn set(table: &mut dyn toml_edit::TableLike, key: &str, value: Value) -> bool {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) if old.to_string().trim() == value.to_string().trim() => false,
        Some(old) => {
            let decor = old.decor().clone();
            *old = value;
            *old.decor_mut() = decor;
            true
        }
        None => {
            table.insert(key, Item::Value(value));
            true
        }
    }
}

/// An existing handler of ours, brought up to date: our keys set, the rest kept; whether anything changed.
fn update_entry(entry: &mut Table, binary: &str) -> Result<bool, String> {
    let mut changed = false;
    if entry.get("runtime_type").and_then(Item::as_str) != Some(RUNC_V2) {
        changed |= set(entry, "runtime_type", RUNC_V2.into());
    }
    for key in ANNOTATION_KEYS {
        let array = match entry.get(key) {
            None => None,
            Some(item) => Some(
                item.as_array()
                    .ok_or_else(|| format!("{key} is not an array"))?
                    .clone(),
            ),
        };
        if array
            .as_ref()
            .is_none_or(|a| !a.iter().any(|v| v.as_str() == Some(ANNOTATIONS)))
        {
            changed |= set(
                entry,
                key,
                Value::Array(with_our_annotations(array.as_ref())),
            );
        }
    }
    let options = entry
        .get_mut("options")
        .and_then(Item::as_table_like_mut)
        .ok_or("options is not a table")?;
    if options.get("BinaryName").and_then(Item::as_str) != Some(binary) {
        changed |= set(options, "BinaryName", binary.into());
    }
    Ok(changed)
}

/// The file's contents as plain TOML, without the handler `name` (and tables that held only it) nor, unless
/// `keep_version`, the version: what must be the same before and after an edit.
fn the_rest(text: &[u8], path: &[&str], name: &str, keep_version: bool) -> Option<toml::Table> {
    let mut doc: toml::Table = toml::from_str(std::str::from_utf8(text).ok()?).ok()?;
    fn strip(table: &mut toml::Table, path: &[&str], name: &str) {
        match path.split_first() {
            None => {
                table.remove(name);
            }
            Some((first, rest)) => {
                if let Some(toml::Value::Table(t)) = table.get_mut(*first) {
                    strip(t, rest, name);
                    if t.is_empty() {
                        table.remove(*first);
                    }
                }
            }
        }
    }
    strip(&mut doc, path, name);
    if !keep_version {
        doc.remove("version");
    }
    Some(doc)
}

/// Checks an edit: the new file parses, its handler `name` is as meant (or gone, `binary` None), and nothing else
/// differs from the old file.
fn verify(
    file: &Path,
    old: Option<&[u8]>,
    new: &[u8],
    path: &[&str],
    name: &str,
    binary: Option<&str>,
) -> Result<(), String> {
    let fail = || {
        format!(
            "{}: the edit did not come out as meant (this is a bug of wg-oci-hook); nothing written",
            file.display()
        )
    };
    let parsed: toml::Table = std::str::from_utf8(new)
        .ok()
        .and_then(|t| toml::from_str(t).ok())
        .ok_or_else(fail)?;
    let mut entry = Some(&toml::Value::Table(parsed));
    for key in path.iter().chain([&name]) {
        entry = entry.and_then(|e| e.get(*key));
    }
    let ok = match (entry, binary) {
        (None, None) => true,
        (Some(entry), Some(binary)) => {
            let annotated = |key: &str| {
                entry
                    .get(key)
                    .and_then(toml::Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(ANNOTATIONS)))
            };
            entry.get("runtime_type").and_then(toml::Value::as_str) == Some(RUNC_V2)
                && entry
                    .get("options")
                    .and_then(|o| o.get("BinaryName"))
                    .and_then(toml::Value::as_str)
                    == Some(binary)
                && ANNOTATION_KEYS.iter().all(|k| annotated(k))
        }
        _ => false,
    };
    let old = old.unwrap_or_default();
    let keep_version = the_rest(old, &[], "", true).is_some_and(|t| t.contains_key("version"));
    if !ok || the_rest(old, path, name, keep_version) != the_rest(new, path, name, keep_version) {
        return Err(fail());
    }
    Ok(())
}

/// Adds (or brings up to date) the handler `name` running `binary`.
pub fn install(config: &Path, name: &str, binary: &Path) -> Result<Change, String> {
    let binary = binary
        .to_str()
        .ok_or_else(|| format!("{}: not UTF-8, cannot go in TOML", binary.display()))?;
    let old = file::read(config)?;
    let (mut doc, version) = parse(config, old.as_deref())?;
    let version = match version {
        Some(v) => v,
        None => {
            doc.insert("version", toml_edit::value(2));
            2
        }
    };
    let path = runtimes_path(version);
    let default = table_at(doc.as_table_mut(), &path[..3], false, config)?
        .and_then(|c| c.get("default_runtime_name"))
        .and_then(Item::as_str)
        .filter(|d| *d != name)
        .unwrap_or("runc")
        .to_owned();
    let doc_end = doc.as_table().clone();
    let runtimes = table_at(doc.as_table_mut(), &path, true, config)?.expect("made");
    let existed = match runtimes.get_mut(name) {
        Some(Item::Table(entry)) => {
            if !is_ours(entry) {
                return Err(refuse_foreign(config, name, entry));
            }
            update_entry(entry, binary).map_err(|e| {
                format!(
                    "{}: {}.{}: {e}",
                    config.display(),
                    dotted(&path),
                    dotted(&[name])
                )
            })?;
            true
        }
        Some(_) => {
            return Err(format!(
                "{}: {}.{} is not a table of its own: left alone; choose another --name",
                config.display(),
                dotted(&path),
                dotted(&[name])
            ))
        }
        None => {
            let base = runtimes.get(&default).and_then(Item::as_table);
            let sibling = base.or_else(|| runtimes.iter().find_map(|(_, i)| i.as_table()));
            let mut entry = new_entry(name, base, sibling, binary);
            // Beside the other handlers (toml_edit puts a new table after the one before it); with none, at the end
            // of the file rather than amid the tables of other plugins.
            if sibling.is_none() {
                entry.set_position(Some(last_position(&doc_end) + 1));
            }
            runtimes.insert(name, Item::Table(entry));
            false
        }
    };
    let new = doc.to_string().into_bytes();
    if Some(&new) != old.as_ref() {
        verify(config, old.as_deref(), &new, &path, name, Some(binary))?;
    }
    Ok(Change {
        edit: Edit {
            path: config.to_owned(),
            old,
            new: Some(new),
            backup: true,
        },
        version,
        existed,
        freed_binary: None,
    })
}

/// Removes the handler `name`, if there is one.
pub fn uninstall(config: &Path, name: &str) -> Result<Change, String> {
    let old = file::read(config)?;
    let nothing = |old: Option<Vec<u8>>, version| Change {
        edit: Edit {
            path: config.to_owned(),
            new: old.clone(),
            old,
            backup: true,
        },
        version,
        existed: false,
        freed_binary: None,
    };
    let (mut doc, version) = parse(config, old.as_deref())?;
    let Some(version) = version else {
        return Ok(nothing(old, 2));
    };
    let path = runtimes_path(version);
    let default = table_at(doc.as_table_mut(), &path[..3], false, config)?
        .and_then(|c| c.get("default_runtime_name"))
        .and_then(Item::as_str)
        .map(str::to_owned);
    let Some(runtimes) = table_at(doc.as_table_mut(), &path, false, config)? else {
        return Ok(nothing(old, version));
    };
    let binary = match runtimes.get(name) {
        None => return Ok(nothing(old, version)),
        Some(Item::Table(entry)) if is_ours(entry) => {
            if default.as_deref() == Some(name) {
                return Err(format!(
                    "{}: runtime handler {name:?} is the default_runtime_name: set another default first",
                    config.display()
                ));
            }
            binary_of(entry).unwrap_or_default().to_owned()
        }
        Some(Item::Table(entry)) => return Err(refuse_foreign(config, name, entry)),
        Some(_) => {
            return Err(format!(
                "{}: {}.{} is not a runtime handler: left alone",
                config.display(),
                dotted(&path),
                dotted(&[name])
            ))
        }
    };
    runtimes.remove(name);
    let still_used = runtimes
        .iter()
        .any(|(_, item)| item.as_table().and_then(binary_of) == Some(binary.as_str()));
    let new = doc.to_string().into_bytes();
    verify(config, old.as_deref(), &new, &path, name, None)?;
    Ok(Change {
        edit: Edit {
            path: config.to_owned(),
            old,
            new: Some(new),
            backup: true,
        },
        version,
        existed: true,
        freed_binary: (!still_used).then(|| PathBuf::from(binary)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const V2_DEFAULT: &str =
        include_str!("../../../tests/fixtures/containerd-1.6-config-default.toml");
    const V2_DEBIAN: &str =
        include_str!("../../../tests/fixtures/containerd-1.6-debian-config.toml");
    const V3: &str = include_str!("../../../tests/fixtures/containerd-2.x-config-v3.toml");
    const RUNTIME: &str = "/usr/local/bin/wg-oci-runtime";

    /// A config.toml in a directory of its own, holding `text` (no file for None).
    struct Config {
        dir: PathBuf,
        path: PathBuf,
    }

    impl Config {
        fn new(test: &str, text: Option<&str>) -> Config {
            let dir =
                std::env::temp_dir().join(format!("wgoh-containerd-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let path = dir.join("config.toml");
            if let Some(text) = text {
                fs::write(&path, text).unwrap();
            }
            Config { dir, path }
        }

        fn text(&self) -> String {
            fs::read_to_string(&self.path).unwrap()
        }

        fn install(&self, name: &str, binary: &str) -> Change {
            let change = install(&self.path, name, Path::new(binary)).unwrap();
            change.edit.apply().unwrap();
            change
        }

        fn uninstall(&self, name: &str) -> Change {
            let change = uninstall(&self.path, name).unwrap();
            change.edit.apply().unwrap();
            change
        }
    }

    impl Drop for Config {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn handler<'a>(doc: &'a toml::Table, version: i64, name: &str) -> Option<&'a toml::Value> {
        let mut at = doc.get("plugins");
        for key in &runtimes_path(version)[1..] {
            at = at?.get(*key);
        }
        at?.get(name)
    }

    /// Install twice, uninstall twice: the second of each changes nothing, and the file ends as it began.
    fn round_trip(test: &str, original: &str, version: i64) -> String {
        let config = Config::new(test, Some(original));
        let first = config.install("wg", RUNTIME);
        assert!(first.edit.changes() && !first.existed, "{test}");
        assert_eq!(first.version, version);
        let installed = config.text();
        let doc: toml::Table = toml::from_str(&installed).unwrap();
        let entry = handler(&doc, version, "wg").unwrap_or_else(|| panic!("{test}: {installed}"));
        assert_eq!(entry["runtime_type"].as_str(), Some(RUNC_V2));
        assert_eq!(entry["options"]["BinaryName"].as_str(), Some(RUNTIME));
        for key in ANNOTATION_KEYS {
            assert_eq!(entry[key], toml::Value::Array(vec!["wg.*".into()]), "{key}");
        }
        // Only lines added, every one of the original kept in order: a diff of additions.
        let diff = similar::TextDiff::from_lines(original, &installed);
        assert!(
            diff.iter_all_changes()
                .all(|c| c.tag() != similar::ChangeTag::Delete),
            "{test}: a line of the original changed:\n{}",
            diff.unified_diff()
        );

        let again = install(&config.path, "wg", Path::new(RUNTIME)).unwrap();
        assert!(
            !again.edit.changes() && again.existed,
            "{test}: a second install changed it"
        );

        let gone = config.uninstall("wg");
        assert!(gone.existed && gone.edit.changes());
        assert_eq!(gone.freed_binary.as_deref(), Some(Path::new(RUNTIME)));
        assert_eq!(
            config.text(),
            original,
            "{test}: uninstall did not give the file back"
        );
        let again = uninstall(&config.path, "wg").unwrap();
        assert!(!again.existed && !again.edit.changes());
        installed
    }

    #[test]
    fn version_2_containerd_config_default_gets_the_handler_beside_runc() {
        let installed = round_trip("v2default", V2_DEFAULT, 2);
        // Right after runc's tables, laid out as they are.
        let at = installed
            .find("\n        # wg-oci-hook: pods of RuntimeClass handler \"wg\"")
            .unwrap();
        let runc_options = installed
            .find("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]")
            .unwrap();
        let next = installed
            .find("[plugins.\"io.containerd.grpc.v1.cri\".containerd.untrusted_workload_runtime]")
            .unwrap();
        assert!(runc_options < at && at < next, "{installed}");
        assert!(
            installed.contains(
                "\n          runtime_type = \"io.containerd.runc.v2\"\n          pod_annotations = [\"wg.*\"]\n"
            ),
            "{installed}"
        );
        // runc's options at their zero values are not copied.
        let doc: toml::Table = toml::from_str(&installed).unwrap();
        let options = handler(&doc, 2, "wg").unwrap()["options"]
            .as_table()
            .unwrap();
        assert_eq!(options.keys().collect::<Vec<_>>(), ["BinaryName"]);
    }

    #[test]
    fn version_3_gets_the_cri_runtime_plugins_table_and_runcs_settings() {
        let installed = round_trip("v3", V3, 3);
        let doc: toml::Table = toml::from_str(&installed).unwrap();
        let entry = handler(&doc, 3, "wg").unwrap();
        // The default runtime's settings that are not containerd's zero values: the cgroup driver above all.
        assert_eq!(entry["options"]["SystemdCgroup"].as_bool(), Some(true));
        assert_eq!(entry["sandboxer"].as_str(), Some("podsandbox"));
        assert!(entry.get("runtime_path").is_none());
        // Comments kept, runc's own one not copied.
        assert!(installed.contains("SystemdCgroup = true # kubelet's cgroupDriver is systemd\n"));
        assert_eq!(installed.matches("cgroupDriver").count(), 1, "{installed}");
        assert!(handler(&doc, 2, "wg").is_none());
    }

    #[test]
    fn debians_shipped_config_gets_the_handler_at_its_end() {
        let installed = round_trip("debian", V2_DEBIAN, 2);
        assert!(installed.starts_with(V2_DEBIAN), "{installed}");
        assert!(installed[V2_DEBIAN.len()..].starts_with("\n# wg-oci-hook: "));
    }

    #[test]
    fn a_second_handler_is_laid_out_like_the_first() {
        let config = Config::new("second", Some(V2_DEBIAN));
        config.install("wg", RUNTIME);
        let first = config.text();
        config.install("wg-vpn", "/usr/local/bin/wg-oci-runtime@vpn");
        let second = config.text();
        let added = &second[first.len()..];
        assert!(second.starts_with(&first), "{second}");
        assert!(
            added.starts_with("\n# wg-oci-hook: pods of RuntimeClass handler \"wg-vpn\""),
            "{added:?}"
        );
        assert_eq!(
            &first[V2_DEBIAN.len()..],
            added.replace("wg-vpn", "wg").replace("@vpn", "")
        );
    }

    #[test]
    fn a_missing_empty_or_comment_only_file_becomes_version_2() {
        for (test, text) in [
            ("missing", None),
            ("empty", Some("")),
            ("comments", Some("# containerd's config\n")),
        ] {
            let config = Config::new(test, text);
            let change = config.install("wg", RUNTIME);
            assert_eq!((change.version, change.existed), (2, false), "{test}");
            let installed = config.text();
            assert!(
                installed.starts_with("version = 2\n"),
                "{test}: {installed}"
            );
            let doc: toml::Table = toml::from_str(&installed).unwrap();
            assert!(handler(&doc, 2, "wg").is_some(), "{test}: {installed}");
            // Uninstall leaves a version 2 file with nothing in it: containerd's defaults.
            config.uninstall("wg");
            let left: toml::Table = toml::from_str(&config.text()).unwrap();
            assert_eq!(left.keys().collect::<Vec<_>>(), ["version"], "{test}");
        }
        // Nothing to remove from a file that is not there: no file made.
        let config = Config::new("uninstall-missing", None);
        let change = uninstall(&config.path, "wg").unwrap();
        assert!(!change.edit.changes() && !change.existed);
    }

    #[test]
    fn version_1_other_versions_and_broken_files_are_refused_naming_the_file() {
        for (test, text, needle) in [
            (
                "v1",
                "[plugins.cri.containerd]\n  snapshotter = \"overlayfs\"\n",
                "no `version` key, so containerd reads it as config version 1",
            ),
            ("v4", "version = 4\n", "version = 4: this edits config versions 2 and 3"),
            (
                "string",
                "version = \"2\"\n",
                "version = \"2\": this edits config versions 2 and 3",
            ),
            // What appending the old printed snippet twice made: containerd refused to start on it.
            (
                "twice",
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wg]\n\
                 runtime_type = \"io.containerd.runc.v2\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wg]\n\
                 runtime_type = \"io.containerd.runc.v2\"\n",
                "config.toml:4:58: duplicate key",
            ),
            (
                "inline",
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = {}\n",
                "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes is not a table of its own",
            ),
        ] {
            let config = Config::new(test, Some(text));
            for e in [
                install(&config.path, "wg", Path::new(RUNTIME)).unwrap_err(),
                uninstall(&config.path, "wg")
                    .err()
                    .unwrap_or_else(|| needle.to_owned()),
            ] {
                assert!(e.contains(needle), "{test}: {e}");
                assert!(!e.contains('\n'), "{test}: {e}");
                if e != needle {
                    assert!(e.starts_with(&config.path.display().to_string()), "{test}: {e}");
                }
            }
            assert_eq!(config.text(), text, "{test}");
        }
    }

    #[test]
    fn a_handler_of_ours_is_brought_up_to_date_keeping_what_the_operator_added() {
        let original = "version = 2\n\
            [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wg]\n\
            \x20 runtime_type = \"io.containerd.runc.v2\" # ours\n\
            \x20 pod_annotations = [\"io.example.*\"]\n\
            \x20 privileged_without_host_devices = true\n\
            [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wg.options]\n\
            \x20 # moved since\n\
            \x20 BinaryName = \"/opt/old/wg-oci-runtime\"\n\
            \x20 Root = \"/run/wg-runc\"\n";
        let config = Config::new("update", Some(original));
        let change = config.install("wg", RUNTIME);
        assert!(change.existed && change.edit.changes());
        let text = config.text();
        assert_eq!(
            text,
            original
                .replace("[\"io.example.*\"]", "[\"io.example.*\", \"wg.*\"]")
                .replace("/opt/old/wg-oci-runtime", RUNTIME)
                .replace("true\n", "true\ncontainer_annotations = [\"wg.*\"]\n"),
        );
        assert!(!install(&config.path, "wg", Path::new(RUNTIME))
            .unwrap()
            .edit
            .changes());
    }

    #[test]
    fn someone_elses_handler_of_that_name_and_the_default_runtime_are_left_alone() {
        let config = Config::new("foreign", Some(V2_DEFAULT));
        for e in [
            install(&config.path, "runc", Path::new(RUNTIME)).unwrap_err(),
            uninstall(&config.path, "runc").unwrap_err(),
        ] {
            assert!(
                e.contains("runtime handler \"runc\" runs \"\", not wg-oci-runtime"),
                "{e}"
            );
        }
        let text = V2_DEFAULT.replace(
            "default_runtime_name = \"runc\"",
            "default_runtime_name = \"wg\"",
        );
        let config = Config::new("default", Some(&text));
        config.install("wg", RUNTIME);
        let e = uninstall(&config.path, "wg").unwrap_err();
        assert!(e.contains("is the default_runtime_name"), "{e}");
    }

    #[test]
    fn a_link_two_handlers_run_is_freed_with_the_last() {
        let config = Config::new("shared", Some(V2_DEFAULT));
        let link = "/usr/local/bin/wg-oci-runtime@vpn";
        config.install("wg-vpn", link);
        config.install("vpn.b", link);
        let doc: toml::Table = toml::from_str(&config.text()).unwrap();
        assert!(handler(&doc, 2, "vpn.b").is_some());
        assert!(config.text().contains(".runtimes.\"vpn.b\"]\n"));
        assert_eq!(config.uninstall("wg-vpn").freed_binary, None);
        assert_eq!(
            config.uninstall("vpn.b").freed_binary.as_deref(),
            Some(Path::new(link))
        );
        assert_eq!(config.text(), V2_DEFAULT);
    }
}
