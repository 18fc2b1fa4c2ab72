//! The libpam functions `pam-bindings` 0.4.0 does not wrap: `pam_syslog`,
//! `pam_fail_delay`, `pam_putenv` and `pam_get_authtok`. Each wrapper is safe to call with
//! the handle PAM passed to the module entry point.

use std::ffi::{CStr, CString};

use libc::{c_char, c_int, c_uint};
use pam::constants::PamResultCode;
use pam::module::PamHandle;
use portcullis_core::protocol::Secret;

/// `PAM_AUTHTOK` from `<security/_pam_types.h>`.
const PAM_AUTHTOK: c_int = 6;

#[link(name = "pam")]
extern "C" {
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
    fn pam_fail_delay(pamh: *mut PamHandle, usec: c_uint) -> c_int;
    fn pam_putenv(pamh: *mut PamHandle, name_value: *const c_char) -> c_int;
    fn pam_get_authtok(
        pamh: *mut PamHandle,
        item: c_int,
        authtok: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
}

/// syslog priorities (`<syslog.h>`).
pub use libc::{LOG_ALERT, LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_WARNING};

/// A C string of `text`, with any NUL byte replaced (a message is never dropped for it).
fn c_text(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Log `message` through PAM (syslog, tagged with the service and module name).
pub fn syslog(pamh: &PamHandle, priority: c_int, message: &str) {
    let msg = c_text(message);
    // SAFETY: `pamh` is the live handle of the current call (a reference, so non-null);
    // the format is the literal "%s" and its one argument is a NUL-terminated C string
    // that outlives the call; pam_syslog does not keep either pointer.
    unsafe { pam_syslog(pamh, priority, c"%s".as_ptr(), msg.as_ptr()) }
}

/// Ask libpam to delay a failure report by about `usec` microseconds (pam_fail_delay).
pub fn fail_delay(pamh: &mut PamHandle, usec: u32) {
    // SAFETY: `pamh` is the live handle of the current call; the function takes no other
    // pointers and only records the delay in the handle.
    let _ = unsafe { pam_fail_delay(pamh, usec) };
}

/// Set `name=value` in the PAM environment (`pam_putenv`, which copies the string).
pub fn putenv(pamh: &mut PamHandle, name: &str, value: &str) -> Result<(), PamResultCode> {
    let entry = CString::new(format!("{name}={value}")).map_err(|_| PamResultCode::PAM_BUF_ERR)?;
    // SAFETY: `pamh` is the live handle of the current call; `entry` is a NUL-terminated
    // string valid for the call, and pam_putenv copies it before returning.
    let rc = unsafe { pam_putenv(pamh, entry.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PamResultCode::PAM_BUF_ERR)
    }
}

/// The password: PAM_AUTHTOK if an earlier module set it, else a "Password: " prompt whose
/// answer libpam stores as PAM_AUTHTOK for the modules after this one. Honours the
/// `use_first_pass` module argument (never prompt).
pub fn get_authtok(pamh: &mut PamHandle) -> Result<Secret, c_int> {
    let mut ptr: *const c_char = std::ptr::null();
    // SAFETY: `pamh` is the live handle of the current call; `ptr` is a valid out-pointer
    // on our stack; a null prompt asks libpam for its default prompt.
    let rc = unsafe { pam_get_authtok(pamh, PAM_AUTHTOK, &mut ptr, std::ptr::null()) };
    if rc != 0 {
        return Err(rc);
    }
    if ptr.is_null() {
        return Err(PamResultCode::PAM_AUTHTOK_ERR as c_int);
    }
    // SAFETY: on success libpam returns the PAM_AUTHTOK item: a NUL-terminated string owned
    // by the handle that stays valid until the item is changed; we copy it at once and do
    // not free it.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    Ok(Secret::new(String::from_utf8_lossy(bytes).into_owned()))
}
