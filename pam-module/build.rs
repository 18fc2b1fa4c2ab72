//! Link flags of the module.

fn main() {
    // The module is never unmapped once loaded (DF_1_NODELETE): an HTTPS name lookup that
    // outlives its deadline finishes on a thread of its own, and that thread must still
    // find the module's code when getaddrinfo returns, even after the application's
    // pam_end() has dlclose()d it.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
