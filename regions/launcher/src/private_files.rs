//! Files and folders that hold secrets (the stack file with the admin
//! token, generated configs with token secrets, the TLS private key):
//! files are created `0600` and folders `0700` (`0711` as root: see
//! [`data_dir_mode`]), so other users of the machine cannot read them. A
//! data folder carries a marker naming it as ours, and only a folder with
//! the marker (or an empty one) is wiped.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The marker `meridian up` leaves in a data folder it created.
pub const DATA_DIR_MARKER: &str = ".meridian-data-dir";

/// Writes `contents` to `path`, readable and writable by the owner only
/// (an existing file is narrowed to `0600` before it is rewritten).
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    if path.exists() {
        std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_ref())?;
    file.sync_all()
}

/// Creates `dir` (and missing parents) with [`data_dir_mode`]; an
/// existing folder is left as it is (it may be the working directory).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(data_dir_mode())
        .create(dir)
}

/// Why a data folder was not wiped.
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    #[error(
        "{0} exists, is not empty and was not made by `meridian up` (no {DATA_DIR_MARKER}); \
         refusing to wipe it — choose another --data-dir or remove it yourself"
    )]
    NotOurs(String),
    #[error("cannot wipe {0}: {1}")]
    Io(String, std::io::Error),
}

/// The mode of the folders `meridian up` makes: `0700`, except when run
/// as root, where the launcher runs PostgreSQL as the `postgres` user,
/// which must pass through them to its own data directories (`0700`, its
/// own): `0711` — others may traverse, never list; every secret file in
/// them is `0600`.
pub fn data_dir_mode() -> u32 {
    if nix::unistd::Uid::effective().is_root() {
        0o711
    } else {
        0o700
    }
}

/// Empties a data folder `meridian up` made before (or an empty one) and
/// creates it afresh, private ([`data_dir_mode`]) and marked; refuses any
/// other folder.
pub fn reset_data_dir(dir: &Path) -> Result<(), WipeError> {
    let io = |e| WipeError::Io(dir.display().to_string(), e);
    if dir.exists() {
        let ours = dir.join(DATA_DIR_MARKER).is_file();
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !ours && !empty {
            return Err(WipeError::NotOurs(dir.display().to_string()));
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    create_dir(dir).map_err(io)?;
    std::fs::set_permissions(dir, Permissions::from_mode(data_dir_mode())).map_err(io)?;
    write(
        &dir.join(DATA_DIR_MARKER),
        "made by `meridian up`; wiped by its next run\n",
    )
    .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_foreign_folders_are_not_wiped() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("secret.toml");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        write(&file, "new").unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");

        let data = root.path().join("data");
        reset_data_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, data_dir_mode());
        std::fs::write(data.join("pg.log"), "x").unwrap();
        // Ours: wiped.
        reset_data_dir(&data).unwrap();
        assert!(!data.join("pg.log").exists());
        // Someone else's: kept, and an error naming it.
        let foreign = root.path().join("home");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("thesis.tex"), "years of work").unwrap();
        let refused = reset_data_dir(&foreign).unwrap_err();
        assert!(matches!(refused, WipeError::NotOurs(_)), "{refused}");
        assert!(foreign.join("thesis.tex").exists());
    }
}
