//! Who is calling, and who the privileged programs run as. The real uid is
//! the one thing a site cannot choose: a set-id program keeps it, whatever
//! the environment or arguments say.

use crate::error::{fail, Internal};
use std::path::Path;

/// The real uid of this process.
pub fn real_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The password file. It is read directly rather than through glibc's
/// getpwuid: the programs are linked statically, where glibc loads NSS
/// modules (systemd, sss, ldap) with dlopen, which can crash, and a set-id
/// program is better off not loading modules at all.
pub const PASSWD: &str = "/etc/passwd";

/// The login name of `uid` in /etc/passwd (the first line with that uid, as
/// getpwuid reads the file); `None` when it has none.
pub fn login(uid: u32) -> Result<Option<Vec<u8>>, Internal> {
    let text = std::fs::read(PASSWD).map_err(|e| fail("read", Path::new(PASSWD), e))?;
    Ok(login_in(&text, uid))
}

/// The login of `uid` in the text of a password file.
pub fn login_in(passwd: &[u8], uid: u32) -> Option<Vec<u8>> {
    let wanted = uid.to_string();
    passwd.split(|&b| b == b'\n').find_map(|line| {
        let mut f = line.split(|&b| b == b':');
        let name = f.next()?;
        let _password = f.next()?;
        let id = f.next()?;
        (id == wanted.as_bytes()
            && !name.is_empty()
            && !name.starts_with(b"+")
            && !name.starts_with(b"-"))
        .then(|| name.to_vec())
    })
}

/// The home directory of `name` in /etc/passwd (its sixth field).
pub fn home_of(name: &[u8]) -> Result<Option<Vec<u8>>, Internal> {
    let text = std::fs::read(PASSWD).map_err(|e| fail("read", Path::new(PASSWD), e))?;
    Ok(text.split(|&b| b == b'\n').find_map(|line| {
        let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        (f.len() >= 7 && f[0] == name).then(|| f[5].to_vec())
    }))
}

/// The group file, read directly for the same reason.
pub const GROUP: &str = "/etc/group";

/// The account the privileged programs run as, and its group.
pub const ACCOUNT: &str = "overlimit";

/// The uid of `name` in /etc/passwd.
pub fn uid_of(name: &[u8]) -> Result<Option<u32>, Internal> {
    id_of(PASSWD, name)
}

/// The gid of `name` in /etc/group.
pub fn gid_of(name: &[u8]) -> Result<Option<u32>, Internal> {
    id_of(GROUP, name)
}

fn id_of(file: &str, name: &[u8]) -> Result<Option<u32>, Internal> {
    let text = std::fs::read(file).map_err(|e| fail("read", Path::new(file), e))?;
    Ok(id_in(&text, name))
}

/// The third field of the first line naming `name` (passwd and group alike).
pub fn id_in(text: &[u8], name: &[u8]) -> Option<u32> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let mut f = line.split(|&b| b == b':');
        (f.next()? == name).then_some(())?;
        let _password = f.next()?;
        std::str::from_utf8(f.next()?).ok()?.parse().ok()
    })
}

/// The client a login is counted as unless the administrator maps it:
/// `LOGIN@localhost`, which no SMTP client shares by accident.
pub fn default_client(login: &[u8]) -> Vec<u8> {
    [login, b"@", super::LOCAL_DOMAIN.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_login_and_a_local_client() {
        assert_eq!(login(0).unwrap().as_deref(), Some(&b"root"[..]));
        assert_eq!(default_client(b"web1"), b"web1@localhost");
    }

    #[test]
    fn the_first_line_with_the_uid_names_it() {
        let text = b"root:x:0:0::/root:/bin/sh\n+nis:::\nweb1:x:1001:1001:Site:/srv/web1:/bin/sh\nalias:x:1001:1:::\n";
        assert_eq!(login_in(text, 1001).as_deref(), Some(&b"web1"[..]));
        assert_eq!(login_in(text, 100), None);
        assert_eq!(login(3_999_999_999).unwrap(), None);
        assert_eq!(id_in(text, b"web1"), Some(1001));
        assert_eq!(id_in(text, b"web"), None);
        assert_eq!(uid_of(b"root").unwrap(), Some(0));
        assert_eq!(gid_of(b"root").unwrap(), Some(0));
    }
}
