//! The C ABI (`starling_*`), conventions in docs/C-API.md.
