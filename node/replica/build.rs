//! Sets `CAASIOPE_COMMIT`, the commit this binary is built from (`caasiope_build_info`): the
//! environment's `CAASIOPE_COMMIT` if set (a build from a source archive), else `git rev-parse`
//! of the checkout, else `unknown`.

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-env-changed=CAASIOPE_COMMIT");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = root.join(".git");
    // Rebuilt when the checkout moves to another commit.
    let head = git.join("HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(branch) = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_owned()))
        {
            let branch = git.join(branch);
            if branch.exists() {
                println!("cargo:rerun-if-changed={}", branch.display());
            }
        }
        if git.join("packed-refs").exists() {
            println!("cargo:rerun-if-changed={}", git.join("packed-refs").display());
        }
    }
    let commit = std::env::var("CAASIOPE_COMMIT").ok().filter(|c| !c.is_empty()).unwrap_or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| "unknown".to_owned())
    });
    // A label value: nothing to escape in hex, but an override may be anything.
    let commit: String = commit.chars().filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c)).collect();
    println!("cargo:rustc-env=CAASIOPE_COMMIT={commit}");
}
