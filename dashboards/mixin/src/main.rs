//! `meridian-mixin [--check]`: writes the monitoring package generated from
//! `dashboards/slos.toml`, or with `--check` lists the files that are not
//! what it would write and exits 1.

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = meridian_mixin::repository_root();
    let check = std::env::args().any(|a| a == "--check");
    let result = meridian_mixin::config::Config::load(&meridian_mixin::config_path(&root))
        .and_then(|config| meridian_mixin::render(&config));
    let files = match result {
        Ok(files) => files,
        Err(error) => {
            eprintln!("meridian-mixin: {error}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        let stale = meridian_mixin::stale(&root, &files);
        if stale.is_empty() {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "meridian-mixin: out of date (run `cargo run -p meridian-mixin`):\n  {}",
            stale.join("\n  ")
        );
        return ExitCode::FAILURE;
    }
    match meridian_mixin::write(&root, &files) {
        Ok(()) => {
            println!("meridian-mixin: wrote {} files", files.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meridian-mixin: {error}");
            ExitCode::FAILURE
        }
    }
}
