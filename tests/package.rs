//! The install paths that can be tried without changing the host: `make
//! install-files` and `make uninstall` into a DESTDIR, and the `.deb` built
//! from this build's programs and read back with `dpkg-deb`. Installing the
//! package itself (dpkg -i, the demo against it, removal) changes the host,
//! so it runs on CI's fresh machine: packaging/test-deb.sh from .ci/run.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOP: &str = env!("CARGO_MANIFEST_DIR");

/// Where this build's programs are (what `make install-files BUILD=` takes).
fn build_dir() -> PathBuf {
    Path::new(ADMIN).parent().unwrap().to_path_buf()
}

fn programs() -> Vec<String> {
    let makefile = std::fs::read_to_string(Path::new(TOP).join("Makefile")).unwrap();
    let line = makefile
        .lines()
        .find_map(|l| l.strip_prefix("PROGRAMS  = "))
        .expect("PROGRAMS in the Makefile");
    line.split_whitespace().map(String::from).collect()
}

/// `make -s TARGET VAR=VALUE...` in the source tree; its stdout, stderr, status.
fn make(args: &[String]) -> (bool, String) {
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(TOP)
        .args(args)
        .output()
        .expect("make");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn uninstall_removes_programs_and_man_pages_and_keeps_the_counters() {
    if !have("make") {
        return skip("no make");
    }
    let s = Sandbox::new();
    let dest = s.root.join("dest");
    let vars = |target: &str| {
        vec![
            target.to_string(),
            format!("DESTDIR={}", dest.display()),
            format!("BUILD={}", build_dir().display()),
            "QMAILDIR=/var/qmail".into(),
            "PREFIX=/usr/local".into(),
        ]
    };
    let (ok, text) = make(&vars("install-files"));
    assert!(ok, "{text}");
    let (ok, text) = make(&vars("install-man"));
    assert!(ok, "{text}");
    let bin = dest.join("var/qmail/bin");
    for p in programs() {
        assert!(bin.join(&p).is_file(), "{p} not installed: {text}");
    }
    let man = dest.join("usr/local/share/man/man8");
    assert!(man.join("overlimit.8").is_file());
    std::fs::write(dest.join("var/qmail/overlimit/alice@example.com"), "XX").unwrap();
    std::fs::write(dest.join("var/qmail/control/relaylimits"), ":10\n").unwrap();

    // With the queue front in place it refuses, and removes nothing.
    std::fs::write(bin.join("qmail-queue.orig"), "").unwrap();
    let (ok, text) = make(&vars("uninstall"));
    assert!(!ok, "{text}");
    assert!(text.contains("queue-front-off"), "{text}");
    assert!(bin.join("overlimit").is_file());
    std::fs::remove_file(bin.join("qmail-queue.orig")).unwrap();

    let (ok, text) = make(&vars("uninstall"));
    assert!(ok, "{text}");
    for p in programs() {
        assert!(!bin.join(&p).exists(), "{p} left: {text}");
    }
    assert!(
        std::fs::read_dir(&man).unwrap().next().is_none(),
        "man pages left"
    );
    for kept in [
        "var/qmail/overlimit/alice@example.com",
        "var/qmail/control/relaylimits",
        "var/qmail/control/overlimit-uncounted",
    ] {
        assert!(dest.join(kept).exists(), "{kept} removed");
    }
    assert!(
        text.contains("the counters") && text.contains("account overlimit"),
        "{text}"
    );
}

#[test]
fn the_deb_carries_every_program_man_page_example_and_unit() {
    if !have("dpkg-deb") || !have("dpkg") {
        return skip("no dpkg-deb");
    }
    let s = Sandbox::new();
    let out = s.root.join("deb");
    let built = Command::new("sh")
        .arg(Path::new(TOP).join("packaging/build-deb.sh"))
        .arg(build_dir())
        .arg(&out)
        .env("OVERLIMIT_DEB_COMPRESSION", "none")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stdout).into_owned();
    assert!(
        built.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(said.trim());
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let has = |path: &str, mode: &str| {
        listing.lines().any(|l| {
            l.starts_with(mode) && l.contains(" root/root ") && l.ends_with(&format!(" ./{path}"))
        })
    };
    for p in programs() {
        assert!(
            has(&format!("var/qmail/bin/{p}"), "-rwxr-xr-x"),
            "{p}:\n{listing}"
        );
    }
    for m in std::fs::read_dir(Path::new(TOP).join("man")).unwrap() {
        let name = m.unwrap().file_name().into_string().unwrap();
        // The section is the extension: 8 for programs, 7 for overviews.
        let section = name.rsplit('.').next().unwrap();
        assert!(
            has(
                &format!("usr/share/man/man{section}/{name}.gz"),
                "-rw-r--r--"
            ),
            "{name}"
        );
    }
    for e in std::fs::read_dir(Path::new(TOP).join("control-examples")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            has(
                &format!("usr/share/doc/overlimit/examples/{name}"),
                "-rw-r--r--"
            ),
            "{name}"
        );
    }
    for unit in [
        "overlimit-policy.service",
        "overlimit-sweep.service",
        "overlimit-sweep.timer",
    ] {
        assert!(
            has(&format!("lib/systemd/system/{unit}"), "-rw-r--r--"),
            "{unit}"
        );
    }
    assert!(has("usr/share/doc/overlimit/copyright", "-rw-r--r--"));
    // Nothing under the counter directory or control/: the package never
    // owns (so never removes) counters or the administrator's files.
    assert!(!listing.contains("./var/qmail/overlimit"), "{listing}");
    assert!(!listing.contains("./var/qmail/control"), "{listing}");
    // The postinst runs the very script `make install` runs.
    let unpacked = s.root.join("unpacked");
    let x = Command::new("dpkg-deb")
        .arg("-R")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(x.success());
    assert_eq!(
        std::fs::read(unpacked.join("usr/share/overlimit/setup.sh")).unwrap(),
        std::fs::read(Path::new(TOP).join("packaging/setup.sh")).unwrap()
    );
    let postinst = std::fs::read_to_string(unpacked.join("DEBIAN/postinst")).unwrap();
    assert!(
        postinst.contains("sh /usr/share/overlimit/setup.sh /var/qmail"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let syntax = Command::new("sh")
            .arg("-n")
            .arg(unpacked.join("DEBIAN").join(script))
            .status();
        assert!(syntax.unwrap().success(), "{script}: a syntax error");
    }
    let control = std::fs::read_to_string(unpacked.join("DEBIAN/control")).unwrap();
    assert!(
        control.contains(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
}
