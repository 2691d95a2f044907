//! Keeps ARCHITECTURE.md honest: imports point down the layers, and its module table lists exactly the module
//! files in the tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers of ARCHITECTURE.md, top first.
const LAYERS: &[(&str, u8)] = &[
    ("cli", 0),
    ("runtime", 0),
    ("hook", 1),
    ("config", 2),
    ("oci", 2),
    ("provider", 2),
    ("wg", 3),
    ("sys", 4),
];

/// The arrows within a layer that ARCHITECTURE.md names, with why.
const SIDEWAYS: &[(&str, &str)] = &[
    // The policy parser builds a PIA profile's settings, a type of the provider's.
    ("config", "provider"),
    // The installer writes the wrapper's bound-name prefix into engines' configuration.
    ("cli", "runtime"),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

#[test]
fn imports_point_down_the_layers() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let from = rel.split(['/', '.']).next().unwrap();
        let Some(from_layer) = layer(from) else {
            continue;
        };
        if rel.ends_with("/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Tests may reach anywhere.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            for part in line.split("crate::").skip(1) {
                let to: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let Some(to_layer) = layer(&to) else {
                    continue;
                };
                let fine = to == from
                    || to_layer > from_layer
                    || (to_layer == from_layer && SIDEWAYS.contains(&(from, to.as_str())));
                if !fine {
                    wrong.push(format!("src/{rel}:{}: {from} -> {to}", n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_module_table_lists_every_module_file() {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md"));
    let mut listed = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap();
        for name in cell.split('`').skip(1).step_by(2) {
            if name.ends_with(".rs") {
                listed.insert(name.to_owned());
            }
        }
    }
    let mut files = Vec::new();
    sources(&src(), &mut files);
    // Every file under a layer's folder but the tests and the mod.rs files that only declare modules.
    let tree: BTreeSet<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !f.ends_with("mod.rs") || text.contains("fn ") || text.contains("struct ")
        })
        .map(|f| {
            f.strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| f.contains('/') && !f.starts_with("bin/") && !f.ends_with("/tests.rs"))
        .collect();
    let missing: Vec<_> = tree.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&tree).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's module table lacks {missing:?} and lists {stale:?}, which the tree does not have"
    );
}
