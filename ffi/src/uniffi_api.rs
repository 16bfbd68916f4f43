//! The uniffi exports: the API the generated Swift, Kotlin and Python bindings call.
