//! The deployment files in `deploy/`: the systemd unit passes `systemd-analyze verify` (every
//! key known, the command executable), and its sandbox stays tight
//! (`systemd-analyze security --offline`).

use std::process::Command;

/// The unit with its command pointing at the binary under test, as an instance
/// `caasiope@member.service` in a temporary directory.
fn unit_instance(dir: &std::path::Path) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("deploy/systemd/caasiope@.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/caasiope run --config"), "{text}");
    let text = text.replace("/usr/local/bin/caasiope", env!("CARGO_BIN_EXE_caasiope"));
    let path = dir.join("caasiope@member.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_instance(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/setup installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A misspelt key is only a warning to systemd: any output fails here.
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    let out =
        Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    // 0 is fully locked down, 10 unprotected; "OK" is below 2 (1.6 when written).
    assert!(exposure < 2.0, "exposure {exposure}:\n{text}");
}
