//! The README's "Use it in your own crate" section, followed literally: a scratch crate with the
//! section's dependencies and `src/main.rs` is built and run. It uses this workspace's lock file
//! (nothing new to resolve or download) and a target directory of its own under `target/` (the
//! outer `cargo test` holds the workspace's while tests run), kept between runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first fenced block of `lang` after `heading` in the README.
fn block_after(readme: &str, heading: &str, lang: &str) -> String {
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no {heading:?}"))..];
    let fence = format!("```{lang}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{lang} block after {heading:?}"))
        + fence.len();
    let len = section[start..].find("```").expect("a closed block");
    section[start..start + len].to_owned()
}

#[test]
fn the_readme_own_crate_section_builds_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let heading = "## Use it in your own crate";
    let deps = block_after(&readme, heading, "toml").replace(
        "path/to/coercion/coercion",
        &root.join("coercion").display().to_string(),
    );
    let main_rs = block_after(&readme, heading, "rust,no_run");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("own-crate")
        .join(format!("greeter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"greeter\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             # Not a member of the workspace that contains this directory.\n[workspace]\n\n{deps}"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), main_rs).unwrap();
    // The workspace's resolved versions: nothing new to resolve or download.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["run", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", root.join("target").join("own-crate"))
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("plan \"greet everyone\"") && stdout.contains("Completed"),
        "{stdout}"
    );
    assert!(dir.join("greetings.db").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
