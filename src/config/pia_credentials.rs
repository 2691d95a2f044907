//! The PIA credentials file: TOML with `username`, `password` and optionally `dedicated_ip_token`, mode 0600.
//! No error ever quotes a value from it (toml's own messages can: "invalid type: integer `1234`").

use crate::provider::pia::credentials::{Credentials, Secret};
use crate::sys::private_file;
use serde::Deserialize;
use std::path::Path;

const MAX_CREDENTIALS_BYTES: u64 = 4 * 1024;
const FORMAT: &str = "expected username = \"...\", password = \"...\" and optionally \
                      dedicated_ip_token = \"...\"";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    username: String,
    password: String,
    dedicated_ip_token: Option<String>,
}

/// Reads the credentials file `path`: root's, mode 0600, at most 4 KiB.
pub fn load(path: &Path) -> Result<Credentials, String> {
    let text = private_file::read(path, MAX_CREDENTIALS_BYTES)
        .map_err(|e| format!("credentials {}: {e}", path.display()))?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Credentials, String> {
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => format!("credentials {}:{line}: {FORMAT}", path.display()),
            None => format!("credentials {}: {FORMAT}", path.display()),
        }
    })?;
    let bad = |what: &str| format!("credentials {}: {what}", path.display());
    if raw.username.is_empty()
        || raw.username.len() > 256
        || raw
            .username
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad("username must be 1-256 characters without spaces"));
    }
    if raw.password.is_empty() || raw.password.len() > 1024 {
        return Err(bad("password must be 1-1024 characters"));
    }
    let dedicated_ip_token = match raw.dedicated_ip_token {
        Some(t) if t.is_empty() || t.len() > 1024 || t.chars().any(char::is_control) => {
            return Err(bad("dedicated_ip_token must be 1-1024 characters"));
        }
        t => t.map(Secret::new),
    };
    Ok(Credentials {
        username: raw.username,
        password: Secret::new(raw.password),
        dedicated_ip_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Credentials, String> {
        super::parse(text, Path::new("/etc/wg-oci-hook/pia.cred"))
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
        let c = super::parse(&std::fs::read_to_string(path).unwrap(), path).unwrap();
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
}
