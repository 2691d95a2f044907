//! The OCI state the runtime writes to a hook's stdin.
//!
//! Parsed leniently into a minimal struct rather than oci-spec's type: runc and crun differ (crun says "created",
//! adds `root`, sends pid 0 at poststop; runc sends no pid at poststop). We key everything on the container id.

use crate::sys::regular_file::{self, CappedReadError};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

/// Runtimes send a few hundred bytes; anything near this is not a state document.
const MAX_STATE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

#[derive(Clone, Debug, Deserialize)]
pub struct ContainerState {
    pub id: String,
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

impl ContainerState {
    /// Reads the state JSON (bounded) and checks the container id, which names our files.
    pub fn read(input: impl Read) -> Result<Self, StateError> {
        let text = regular_file::read_capped(input, MAX_STATE_BYTES).map_err(|e| match e {
            CappedReadError::TooLarge(_) => StateError(format!("the OCI state on stdin is {e}")),
            CappedReadError::Io(e) => StateError(format!("reading the OCI state from stdin: {e}")),
        })?;
        // serde's derived visitor also takes a sequence for a struct: `["id", pid, "bundle"]` would pass.
        if text.iter().find(|b| !b" \t\r\n".contains(b)) != Some(&b'{') {
            return Err(StateError(
                "the OCI state on stdin is not a JSON object".into(),
            ));
        }
        let state: ContainerState = serde_json::from_slice(&text)
            .map_err(|e| StateError(format!("the OCI state on stdin is not valid: {e}")))?;
        validate_container_id(&state.id)?;
        // Relative (or missing), it would name a directory relative to wherever the hook runs.
        if state.bundle.as_os_str().is_empty() {
            return Err(StateError(format!(
                "the OCI state of container {} has no bundle",
                state.id
            )));
        }
        if !state.bundle.is_absolute() {
            return Err(StateError(format!(
                "the OCI state of container {}: bundle {:?} is not an absolute path",
                state.id,
                truncate(&state.bundle.to_string_lossy(), 256)
            )));
        }
        Ok(state)
    }

    /// The container's init pid, when the runtime sent a real one (crun sends 0 at poststop).
    pub fn live_pid(&self) -> Option<u32> {
        self.pid
            .filter(|&p| p > 0 && p <= i64::from(i32::MAX))
            .map(|p| p as u32)
    }
}

/// runc's rule for ids (`^[\w+-\.]+$`), bounded: the id becomes a file name under the state dir.
pub fn validate_container_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StateError(format!(
            "the OCI state has an invalid container id {:?}",
            truncate(id, 80)
        )))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runc_create_runtime_state() {
        let json = r#"{"ociVersion":"1.0.2","id":"abc123","status":"creating","pid":4242,
            "bundle":"/run/b","annotations":{"wg.enable":"true"}}"#;
        let s = ContainerState::read(json.as_bytes()).unwrap();
        assert_eq!(s.id, "abc123");
        assert_eq!(s.live_pid(), Some(4242));
        assert_eq!(s.annotations["wg.enable"], "true");
    }

    #[test]
    fn reads_crun_poststop_state_with_pid_zero_and_root() {
        let json = r#"{"ociVersion":"1.0.0","id":"c1","status":"stopped","pid":0,"root":"/x","bundle":"/b"}"#;
        let s = ContainerState::read(json.as_bytes()).unwrap();
        assert_eq!(s.live_pid(), None);
        assert!(s.annotations.is_empty());
    }

    #[test]
    fn reads_runc_poststop_state_without_pid() {
        let s =
            ContainerState::read(&br#"{"id":"c1","status":"stopped","bundle":"/b"}"#[..]).unwrap();
        assert_eq!(s.live_pid(), None);
    }

    #[test]
    fn refuses_ids_that_are_paths() {
        for id in ["../etc", "a/b", "", ".", "x\n"] {
            let json = serde_json::json!({"id": id, "bundle": "/b"}).to_string();
            assert!(ContainerState::read(json.as_bytes()).is_err(), "{id:?}");
        }
    }

    #[test]
    fn refuses_a_state_that_is_not_an_object() {
        // The derived visitor would read this array as id, pid, bundle.
        for json in [r#"["c1", 4242, "/b"]"#, " \n[\"c1\"]", "\"c1\"", "", "null"] {
            let e = ContainerState::read(json.as_bytes()).unwrap_err().0;
            assert_eq!(e, "the OCI state on stdin is not a JSON object", "{json:?}");
        }
        assert!(ContainerState::read(&b" \r\n\t{\"id\":\"c1\",\"bundle\":\"/b\"}"[..]).is_ok());
    }

    #[test]
    fn refuses_a_state_without_an_absolute_bundle() {
        for (json, expected) in [
            (
                r#"{"id":"c1","pid":4242}"#,
                "the OCI state of container c1 has no bundle",
            ),
            (
                r#"{"id":"c1","bundle":""}"#,
                "the OCI state of container c1 has no bundle",
            ),
            (
                r#"{"id":"c1","bundle":"run/b"}"#,
                "the OCI state of container c1: bundle \"run/b\" is not an absolute path",
            ),
            (
                r#"{"id":"c1","bundle":"./b\n"}"#,
                "the OCI state of container c1: bundle \"./b\\n\" is not an absolute path",
            ),
        ] {
            assert_eq!(
                ContainerState::read(json.as_bytes()).unwrap_err().0,
                expected
            );
        }
    }

    #[test]
    fn refuses_oversized_state() {
        let big = vec![b' '; (MAX_STATE_BYTES + 10) as usize];
        assert!(ContainerState::read(&big[..])
            .unwrap_err()
            .0
            .contains("1 MiB"));
    }
}
