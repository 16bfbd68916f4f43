//! The uniffi generator, pinned to the version libstarling is built with:
//!
//! ```text
//! cargo run -p uniffi-bindgen -- generate <libstarling.so> --language python \
//!     [--language kotlin --language swift] --out-dir <dir> [--config uniffi.toml] [--no-format]
//! ```
//!
//! Only library mode's `generate` (what scripts/gen-bindings.sh and maturin call).

use std::process::ExitCode;

use uniffi_bindgen::bindings::{generate, GenerateOptions, TargetLanguage};

const USAGE: &str =
    "usage: uniffi-bindgen generate <library> --language <python|kotlin|swift|ruby>... \
--out-dir <dir> [--config <uniffi.toml>] [--crate <name>] [--no-format] [--metadata-no-deps]";

fn parse(args: &[String]) -> Result<GenerateOptions, String> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("generate") {
        return Err("the only command is `generate`".to_owned());
    }
    let (mut languages, mut source, mut out_dir, mut config, mut crate_filter) =
        (Vec::new(), None, None, None, None);
    let (mut format, mut metadata_no_deps) = (true, false);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--language" | "-l" => languages.push(match value(arg)?.as_str() {
                "python" => TargetLanguage::Python,
                "kotlin" => TargetLanguage::Kotlin,
                "swift" => TargetLanguage::Swift,
                "ruby" => TargetLanguage::Ruby,
                other => return Err(format!("unknown language {other:?}")),
            }),
            "--out-dir" | "-o" => out_dir = Some(value(arg)?),
            "--config" | "-c" => config = Some(value(arg)?),
            "--crate" => crate_filter = Some(value(arg)?),
            "--no-format" => format = false,
            "--metadata-no-deps" => metadata_no_deps = true,
            // Library mode is the only mode here; accepted for older callers (maturin).
            "--library" => {}
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other if source.is_none() => source = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if languages.is_empty() {
        return Err("give at least one --language".to_owned());
    }
    Ok(GenerateOptions {
        languages,
        source: source.ok_or("the library path is missing")?.into(),
        out_dir: out_dir.ok_or("--out-dir is missing")?.into(),
        config_override: config.map(Into::into),
        format,
        crate_filter,
        metadata_no_deps,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("uniffi-bindgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match generate(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uniffi-bindgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
