//! The PIA credentials file: TOML with `username`, `password` and optionally `dedicated_ip_token`, mode 0600.
//! No error ever quotes a value from it (toml's own messages can: "invalid type: integer `1234`").

use crate::config::file_error::FileError;
use crate::provider::pia::credentials::{Credentials, Secret};
use crate::sys::private_file;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

const MAX_CREDENTIALS_BYTES: u64 = 4 * 1024;
const FORMAT: &str = "expected username = \"...\", password = \"...\" and optionally \
                      dedicated_ip_token = \"...\"";

const KEYS: &[&str] = &["username", "password", "dedicated_ip_token"];

/// Reads the credentials file `path`: root's, mode 0600, at most 4 KiB.
pub fn load(path: &Path) -> Result<Credentials, FileError> {
    let text = private_file::read(path, MAX_CREDENTIALS_BYTES)
        .map_err(|message| FileError::whole(path, message))?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Credentials, FileError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let error = |line: Option<usize>, message: String| FileError {
        file: path.display().to_string(),
        line,
        message,
    };
    // Read as a table of spanned values first: toml's own messages can quote a value ("invalid type: integer
    // `1234`"), so only the place of a syntax error is kept, and each key is checked here by name.
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = toml::from_str(text)
        .map_err(|e| error(e.span().map(|s| line_of(s.start)), FORMAT.to_owned()))?;
    let mut found: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    for (key, value) in &table {
        let line = line_of(key.span().start);
        let Some(name) = KEYS.iter().find(|k| **k == key.get_ref()) else {
            return Err(error(
                Some(line),
                format!("unknown key {:?}; {FORMAT}", short(key.get_ref())),
            ));
        };
        let toml::Value::String(v) = value.get_ref() else {
            return Err(error(Some(line), format!("{name} must be a string")));
        };
        found.insert(name, (line, v.clone()));
    }
    let mut take = |key: &str| found.remove(key);
    let (Some(username), Some(password)) = (take("username"), take("password")) else {
        return Err(error(None, FORMAT.to_owned()));
    };
    let dedicated_ip_token = take("dedicated_ip_token");
    let (line, username) = username;
    if username.is_empty()
        || username.len() > 256
        || username
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(error(
            Some(line),
            "username must be 1-256 characters without spaces".into(),
        ));
    }
    let (line, password) = password;
    if password.is_empty() || password.len() > 1024 {
        return Err(error(
            Some(line),
            "password must be 1-1024 characters".into(),
        ));
    }
    let dedicated_ip_token = match dedicated_ip_token {
        Some((line, t)) if t.is_empty() || t.len() > 1024 || t.chars().any(char::is_control) => {
            return Err(error(
                Some(line),
                "dedicated_ip_token must be 1-1024 characters".into(),
            ));
        }
        t => t.map(|(_, t)| Secret::new(t)),
    };
    Ok(Credentials {
        username,
        password: Secret::new(password),
        dedicated_ip_token,
    })
}

/// A key as it may be shown: at most 40 characters, no control characters (`{:?}` escapes the rest).
fn short(key: &str) -> String {
    key.chars().filter(|c| !c.is_control()).take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Credentials, String> {
        super::parse(text, Path::new("/etc/wg-oci-hook/pia.cred")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_username_password_and_dip_token() {
        let c = parse("username = \"p1234567\"\npassword = \"hunter2\"\n").unwrap();
        assert_eq!(c.username, "p1234567");
        assert_eq!(c.password.expose(), "hunter2");
        assert!(c.dedicated_ip_token.is_none());
        let c = parse("username = \"p1\"\npassword = \"x\"\ndedicated_ip_token = \"DIPabc\"\n")
            .unwrap();
        assert_eq!(c.dedicated_ip_token.unwrap().expose(), "DIPabc");
        assert_eq!(format!("{:?}", c.password), "Secret(<redacted>)");
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/etc/pia-credentials.example"
        ));
        let c = super::parse(&std::fs::read_to_string(path).unwrap(), path)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.username, "p1234567");
        assert!(c.dedicated_ip_token.is_none());
    }

    #[test]
    fn errors_never_quote_values() {
        for (text, line) in [
            ("username = \"p1\"\npassword = 98765432\n", Some(2)),
            ("username = \"p1\"\npassword = \"s3cr3t\npass\"\n", None),
            ("username = \"p1\"\npasword = \"s3cr3t\"\n", Some(2)),
            ("username = \"p1\"\n", None),
        ] {
            let e = parse(text).unwrap_err();
            assert!(!e.contains("98765432") && !e.contains("s3cr3t"), "{e}");
            assert!(!e.contains('\n'), "{e}");
            if let Some(line) = line {
                assert!(e.contains(&format!("pia.cred:{line}: ")), "{text:?}: {e}");
            }
        }
        assert!(parse("username = \"\"\npassword = \"x\"\n")
            .unwrap_err()
            .contains("username"));
        assert!(parse("username = \"a b\"\npassword = \"x\"\n")
            .unwrap_err()
            .contains("username"));
        assert!(parse("username = \"a\"\npassword = \"\"\n")
            .unwrap_err()
            .contains("password"));
    }

    #[test]
    fn a_bad_key_is_named_with_its_line_and_no_value() {
        let e = parse("username = \"p1\"\n\npasword = \"s3cr3t\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/wg-oci-hook/pia.cred:3: unknown key \"pasword\"; expected"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = parse("username = \"p1\"\npassword = 98765432\n").unwrap_err();
        assert_eq!(e, "/etc/wg-oci-hook/pia.cred:2: password must be a string");
        let e = parse("username = \"p1 x\"\npassword = \"s3cr3t\"\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/wg-oci-hook/pia.cred:1: username must be 1-256 characters without spaces"
        );
        let e = parse("password = \"s3cr3t\"\n").unwrap_err();
        assert!(e.starts_with("/etc/wg-oci-hook/pia.cred: expected"), "{e}");
    }
}
