//! Whether the caller controls the cgroup `overlimit-count` runs in. A
//! process stays in its caller's cgroup across `execve`, set-id or not; a
//! site with a cgroup delegated to it (a `systemd --user` instance owns its
//! subtree) could freeze or throttle the counter while it holds a lock, as a
//! SIGSTOP would, which the uid change otherwise prevents.

/// A cgroup directory on this process's path, in any hierarchy, owned by
/// `uid`: a cgroup delegated to the caller (a `systemd --user` instance),
/// which it could freeze or throttle. Read from /proc/self/cgroup and the
/// cgroup mounts of /proc/self/mountinfo.
pub fn owned_by(uid: u32) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // (mount point, is cgroup2, super options) of each cgroup mount at its root.
    let cgroup_mounts: Vec<(&str, bool, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (root, point, fstype) = (*f.get(3)?, *f.get(4)?, *r.first()?);
            let v2 = fstype == "cgroup2";
            (root == "/" && (v2 || fstype == "cgroup"))
                .then(|| (point, v2, *r.get(2).unwrap_or(&"")))
        })
        .collect();
    for line in groups.lines() {
        let mut f = line.splitn(3, ':');
        let (id, controllers, path) = (f.next()?, f.next()?, f.next()?);
        for (point, v2, options) in &cgroup_mounts {
            let matches = if id == "0" {
                *v2
            } else {
                !*v2 && controllers
                    .split(',')
                    .all(|c| options.split(',').any(|o| o == c))
            };
            if !matches {
                continue;
            }
            let top = std::path::Path::new(point);
            let mut dir = top.join(path.trim_start_matches('/'));
            while dir.starts_with(top) && dir != top {
                if std::fs::metadata(&dir).is_ok_and(|m| m.uid() == uid) {
                    return Some(dir);
                }
                if !dir.pop() {
                    break;
                }
            }
        }
    }
    None
}
