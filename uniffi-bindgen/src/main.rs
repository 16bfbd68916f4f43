//! `cargo run -p uniffi-bindgen -- generate <libstarling.so> --language python ...`:
//! the uniffi generator pinned to the version libstarling is built with.

fn main() {
    uniffi::uniffi_bindgen_main()
}
