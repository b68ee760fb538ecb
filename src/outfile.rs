//! Files pgreach writes (`-o` reports, `-w` captures): made under a
//! temporary name beside the destination with `O_EXCL` and mode 0600, then
//! renamed into place. A symlink planted at the path is replaced, never
//! followed; an interrupted run leaves the old file or the new one, never a
//! torn one; and the other users of the machine never read what the wire said.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Reports and captures hold user names, server messages and (in captures)
/// passwords: owner only.
pub const MODE: u32 = 0o600;
/// Temporary names tried before giving up (another run may hold one).
const TEMP_TRIES: u32 = 64;

/// Where a file being written goes when it is complete.
#[derive(Debug)]
pub struct Pending {
    temp: PathBuf,
    dest: PathBuf,
    published: bool,
}

impl Pending {
    /// The destination.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// Renames the file into place (once; later calls do nothing). A
    /// symlink at the destination is replaced, not followed.
    pub fn publish(&mut self) -> io::Result<()> {
        if self.published {
            return Ok(());
        }
        std::fs::rename(&self.temp, &self.dest).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot rename {} to {}: {e}", self.temp.display(), self.dest.display()))
        })?;
        self.published = true;
        Ok(())
    }
}

/// A file never published is removed: a failed run leaves no half report.
impl Drop for Pending {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// An output: a new file renamed into place when complete, or a stream
/// (standard output, a device, a pipe) written as it is.
pub enum Target {
    File(File, Pending),
    Stream(File),
}

/// Opens `dest` for writing. Paths under /dev (`/dev/stdout`, `/dev/fd/3`,
/// `/dev/null`) and existing pipes are streams, opened as they are without
/// truncation; anything else gets a new file beside it (see [`Pending`]).
pub fn create(dest: &Path) -> io::Result<Target> {
    let is_pipe = std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_fifo());
    if dest.starts_with("/dev") || is_pipe {
        return OpenOptions::new().append(true).open(dest).map(Target::Stream);
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name =
        dest.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "names a directory, not a file"))?;
    let mut last = None;
    for n in 0..TEMP_TRIES {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}-{n}.tmp", std::process::id()));
        let temp = dir.join(temp_name);
        // O_EXCL: a file or symlink already at the temporary name is never opened.
        match OpenOptions::new().write(true).create_new(true).mode(MODE).open(&temp) {
            Ok(file) => return Ok(Target::File(file, Pending { temp, dest: dest.to_owned(), published: false })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name free")))
}

/// Whether two paths name the same file (device and inode, through
/// symlinks and hard links). A path that does not exist names no file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether a file would be written where another is: the same file, or
/// the same name in the same directory (when neither exists yet).
pub fn same_destination(a: &Path, b: &Path) -> bool {
    let dir = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::canonicalize(parent).ok().map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    same_file(a, b) || (dir(a).is_some() && dir(a) == dir(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgreach-outfile-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.join("report.txt");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let Target::File(mut file, mut pending) = create(&link).unwrap() else { panic!("not a stream") };
        file.write_all(b"report").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "nothing visible before publishing");
        pending.publish().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, MODE);
        assert_eq!(std::fs::read(&link).unwrap(), b"report");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unpublished_file_leaves_nothing_behind() {
        let dir = scratch("unpublished");
        let dest = dir.join("out");
        std::fs::write(&dest, b"old").unwrap();
        drop(create(&dest).unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn same_file_sees_through_symlinks() {
        let dir = scratch("same");
        let a = dir.join("a");
        std::fs::write(&a, b"x").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(same_file(&a, &link));
        assert!(!same_file(&a, &dir.join("missing")));
        assert!(same_destination(&dir.join("new"), &dir.join("./new")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
